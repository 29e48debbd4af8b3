"""J&F of a SAM 2.1 checkpoint: full videos scored with the standard protocols, or the trainer's
quick clip proxy.

    python -m sam2_scale.eval sam2.1_hiera_base_plus.pt --size base_plus --protocol sav \
        --data /data/sav_val --videos /data/sav_val/sav_val.txt
    python -m sam2_scale.eval sam2.1_hiera_base_plus.pt --size base_plus --protocol davis \
        --data /data/DAVIS --videos /data/DAVIS/ImageSets/2017/val.txt
    torchrun --nproc_per_node 8 -m sam2_scale.eval runs/exp/train --data /data/MOSE/valid --protocol mose --write-masks preds/
    python -m sam2_scale.eval runs/demo/train --shards "runs/demo/shards/heldout/shard-*.tar" --protocol clip

Protocols (see sam2_scale/eval/protocol.py):
  sav    SA-V val/test: every frame tracked, first and last annotated frames not scored, objects
         may overlap (per-object PNGs), objects scored from their first appearance
  davis  DAVIS 2017 val: as sav, with one object per pixel (palette PNGs)
  mose   MOSE val: as davis, only the first frame not scored
  clip   the trainer's proxy: one clip of --num-frames per video, not comparable with papers

Inputs: --data, a DAVIS-style folder (JPEGImages[/480p|_24fps] + Annotations[/480p|_6fps],
palette PNGs or SA-V's per-object PNG folders), or --shards, held-out video shards.
CHECKPOINT is a Meta-format .pt (give --size and --image-size), or a training checkpoint, run or
checkpoints/ folder (size and resolution come from its config). Under torchrun, videos are split
across ranks and the scores gathered: the numbers are those of one process.
"""

import argparse
import csv
import io
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from .. import atomic
from ..checkpoints.layout import find_checkpoint
from ..checkpoints.safe_load import UnsafeCheckpointError
from ..checkpoints.weights import consolidated_state_dict
from ..config.schema import EvalConfig
from ..data.streams import SkipCounter
from ..model import CheckpointFileError, CheckpointMismatchError, build_sam2, load_checkpoint
from .clip_proxy import evaluate_vos
from .full_video import evaluate_videos, per_video
from .videos import folder_videos, shard_videos


def load_model(checkpoint, size, image_size, ema, device):
    path = Path(checkpoint)
    if path.is_dir():
        state, config = consolidated_state_dict(find_checkpoint(path), ema=ema)
        model = build_sam2(config["model"]["size"], image_size=config["model"]["image_size"])
        model.load_state_dict(state)
    else:
        model = load_checkpoint(build_sam2(size, image_size=image_size), path)
    return model.to(device)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m sam2_scale.eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="a Meta-format .pt, or a training checkpoint / run folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="a DAVIS-style folder (DAVIS 2017, MOSE, SA-V val/test layouts)")
    source.add_argument("--shards", help="held-out video shards, a glob or brace pattern")
    parser.add_argument(
        "--protocol", choices=["sav", "davis", "mose", "clip"], default="sav", help="scoring protocol (default sav)"
    )
    parser.add_argument("--videos", help="text file of video names to evaluate (e.g. ImageSets/2017/val.txt); default all")
    parser.add_argument("--size", default="base_plus", help="model size of a .pt checkpoint (default base_plus)")
    parser.add_argument("--image-size", type=int, default=1024, help="model resolution of a .pt checkpoint (default 1024)")
    parser.add_argument("--ema", action="store_true", help="the EMA weights of a training checkpoint")
    parser.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="bf16 autocast or fp32 (default: bf16 on GPU)",
    )
    parser.add_argument("--write-masks", metavar="DIR", help="also write the predicted masks as PNGs in the protocol's layout")
    parser.add_argument("--max-videos", type=int, default=0, help="stop after this many videos (default: all)")
    parser.add_argument("--json", help="write overall, per-video and per-object scores to this JSON file")
    parser.add_argument("--csv", help="write per-object scores (video, object, J, F, J&F) to this CSV file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--num-frames", type=int, default=8, help="clip protocol: frames per clip (default 8)")
    parser.add_argument("--max-objects", type=int, default=3, help="clip protocol: objects per clip (default 3)")
    args = parser.parse_args(argv)
    if args.protocol == "clip" and not args.shards:
        parser.error("--protocol clip reads --shards")
    if not Path(args.checkpoint).exists():
        parser.error(f"checkpoint {args.checkpoint}: no such file or folder")
    return args


def _init_distributed():
    """Device of this process; joins the torchrun group when there is one."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return device


def scores_csv(scores):
    """The overall score, then one row per (video, object), as SA-V's benchmark writes them."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["video", "object_id", "J&F", "J", "F"])
    writer.writerow(["Global score", "", *(f"{scores[k]:.3f}" for k in ("J&F", "J", "F"))])
    for row in scores["objects"]:
        writer.writerow([row["video"], row["object_id"], *(f"{row[k]:.3f}" for k in ("J&F", "J", "F"))])
    return out.getvalue()


def main(argv=None):
    args = parse_args(argv)
    device = _init_distributed()
    torch.set_flush_denormal(True)  # denormal activations slow x86 CPUs ~10x; no effect on GPUs
    bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda")
    dtype = torch.bfloat16 if bf16 else None
    try:
        model = load_model(args.checkpoint, args.size, args.image_size, args.ema, device)
    except (FileNotFoundError, CheckpointFileError, CheckpointMismatchError, UnsafeCheckpointError) as exc:
        sys.exit(f"[eval] error: {exc}")  # the message names the file and what is wrong with it
    rank = dist.get_rank() if dist.is_initialized() else 0
    try:
        if args.protocol == "clip":
            cfg = EvalConfig(
                shards=args.shards, num_frames=args.num_frames, max_num_objects=args.max_objects, max_videos=args.max_videos
            )
            scores = evaluate_vos(model, cfg, device=device, autocast_dtype=dtype)
            print(f"clip J&F {scores['J&F']:.4f}  J {scores['J']:.4f}  F {scores['F']:.4f}  ({scores['num_videos']} videos)")
        else:
            skipped = SkipCounter()
            videos = folder_videos(args.data, args.videos) if args.data else shard_videos(args.shards, skipped)
            scores = evaluate_videos(
                model, videos, args.protocol, device, dtype, args.write_masks, args.max_videos, progress=not args.no_progress
            )
            scores["per_video"] = per_video(scores["objects"])
            # Samples of the shards that are no video or cannot be read (every rank reads them all).
            scores["skipped"] += [f"{n} x {reason}" for reason, n in skipped.reasons.items()]
            if rank == 0:
                print(
                    f"{args.protocol}: J&F {scores['J&F']:.1f}  J {scores['J']:.1f}  F {scores['F']:.1f}  "
                    f"({scores['num_videos']} videos, {scores['num_objects']} objects, {scores['frames_per_s']:.1f} frames/s, "
                    f"{len(scores['skipped'])} skipped)"
                )
                if scores["num_objects"] == 0:
                    print("no frame was scored: the ground truth covers only unscored frames (e.g. MOSE val's first frame);")
                    print("the --write-masks PNGs are what the dataset's evaluation server scores")
                if args.csv:
                    atomic.write_text(args.csv, scores_csv(scores))
        if args.json and rank == 0:
            atomic.write_json(args.json, {"protocol": args.protocol, "checkpoint": str(args.checkpoint), **scores})
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
