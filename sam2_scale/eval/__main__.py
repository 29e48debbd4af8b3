"""J&F of a SAM 2.1 checkpoint on held-out video shards (first-frame mask given, the rest propagated).

    python -m sam2_scale.eval sam2.1_hiera_tiny.pt --size tiny --shards "data/shards/heldout/shard-*.tar"
    python -m sam2_scale.eval runs/demo/train --shards "runs/demo/shards/heldout/shard-*.tar" --ema

CHECKPOINT is a Meta-format .pt (give --size and --image-size), or a training checkpoint, run or
checkpoints/ folder (size and resolution come from its config).
"""

import argparse
from pathlib import Path

import torch

from ..model import build_sam2, load_checkpoint
from ..prep.shards import write_json_atomic
from .vos import EvalConfig, evaluate_vos


def load_model(checkpoint, size, image_size, ema, device):
    path = Path(checkpoint)
    if path.is_dir():
        from ..train.export import consolidated_state_dict, find_checkpoint

        state, config = consolidated_state_dict(find_checkpoint(path), ema=ema)
        model = build_sam2(config["model"]["size"], image_size=config["model"]["image_size"])
        model.load_state_dict(state)
    else:
        model = load_checkpoint(build_sam2(size, image_size=image_size), path)
    return model.to(device)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sam2_scale.eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="a Meta-format .pt, or a training checkpoint / run folder")
    parser.add_argument("--shards", required=True, help="held-out video shards, a glob or brace pattern")
    parser.add_argument("--size", default="base_plus", help="model size of a .pt checkpoint (default base_plus)")
    parser.add_argument("--image-size", type=int, default=1024, help="model resolution of a .pt checkpoint (default 1024)")
    parser.add_argument("--ema", action="store_true", help="the EMA weights of a training checkpoint")
    parser.add_argument("--num-frames", type=int, default=8, help="frames per evaluated clip (default 8)")
    parser.add_argument("--max-objects", type=int, default=3, help="objects per clip (default 3)")
    parser.add_argument("--max-videos", type=int, default=0, help="stop after this many videos (default: all)")
    parser.add_argument("--bf16", action="store_true", help="run the model under bf16 autocast")
    parser.add_argument("--json", help="also write the scores to this JSON file")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_flush_denormal(True)  # denormal activations slow x86 CPUs ~10x; no effect on GPUs
    model = load_model(args.checkpoint, args.size, args.image_size, args.ema, device)
    cfg = EvalConfig(shards=args.shards, num_frames=args.num_frames, max_num_objects=args.max_objects, max_videos=args.max_videos)
    scores = evaluate_vos(model, cfg, device=device, autocast_dtype=torch.bfloat16 if args.bf16 else None)
    print(
        f"J&F {scores['J&F']:.4f}  J {scores['J']:.4f}  F {scores['F']:.4f}  "
        f"({scores['num_videos']} videos, {scores['num_objects']} objects)"
    )
    if args.json:
        write_json_atomic(args.json, scores)


if __name__ == "__main__":
    main()
