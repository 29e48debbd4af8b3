"""`make demo`: the pipeline as far as it exists, end to end on CPU, on built-in synthetic data.

  raw SA-V / SA-1B / DAVIS-style data (synthetic) -> WebDataset shards (parallel) -> verify
  -> streaming, augmented, mixed image/video batches -> a tiny SAM 2.1 trained with the SAM 2.1
  objective (simulated prompts, correction clicks, multi-step loss) -> J&F on held-out videos
  before and after -> a checkpoint in Meta's format, reloaded strictly.

The distributed trainer (DeepSpeed / FSDP) and SLURM launchers replace the single-process loop
here as they land.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from sam2_scale.config import load_config
from sam2_scale.data.mixing import MixedLoader
from sam2_scale.data.streams import DataConfig, DatasetConfig
from sam2_scale.evaluation import EvalConfig, evaluate_vos
from sam2_scale.model import build_sam2, load_checkpoint, save_checkpoint
from sam2_scale.objective import MultiStepLoss, unroll_clip
from sam2_scale.prep.davis import DavisSource, find_davis_items
from sam2_scale.prep.sa1b import Sa1bSource, find_sa1b_items
from sam2_scale.prep.sav import SavSource, find_sav_items
from sam2_scale.prep.shards import plan_shards, run_shards, write_manifest
from sam2_scale.prep.synthetic import write_synthetic_dataset
from sam2_scale.prep.verify import verify_shards
from sam2_scale.train.optim import LRScheduler, build_optimizer


def log(message):
    print(f"[demo] {message}", flush=True)


def make_shards(raw, shards, workers):
    jobs = {  # output folder: (kind, source, inputs, inputs per shard)
        "sav": ("sav", SavSource(), find_sav_items(raw / "sav/videos", raw / "sav/annotations"), 2),
        "sa1b": ("sa1b", Sa1bSource(), find_sa1b_items(raw / "sa1b"), 8),
        "heldout": ("davis", DavisSource(), find_davis_items(raw / "davis/JPEGImages", raw / "davis/Annotations"), 8),
    }
    for name, (kind, source, items, per_shard) in jobs.items():
        plans = plan_shards(items, per_shard)
        run_shards(plans, shards / name, source, workers=workers, progress=False)
        manifest = write_manifest(shards / name, plans, kind, {})
        report, problems = verify_shards(shards / name, progress=False)
        if problems:
            raise SystemExit(f"shards in {shards / name} failed verification: {problems[:3]}")
        log(
            f"shards/{name}: {manifest['samples']} samples, {manifest['frames']} frames, "
            f"{manifest['num_shards']} shards, verified"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sam2_scale.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps (default 40)")
    parser.add_argument("--resolution", type=int, default=128, help="model input size, a multiple of 32 (default 128)")
    parser.add_argument("--workers", type=int, default=2, help="data-prep processes (default 2)")
    args = parser.parse_args(argv)
    start = time.time()
    out = Path(args.out)
    raw, shards = out / "raw", out / "shards"

    info = write_synthetic_dataset(raw, num_videos=4, num_images=8, num_heldout=2, num_frames=48, size=(256, 192), seed=0)
    log(
        f"raw synthetic data in {raw}: {len(info['sav_videos'])} SA-V videos, {len(info['sa1b_images'])} SA-1B images, "
        f"{len(info['heldout_videos'])} held-out videos"
    )
    make_shards(raw, shards, args.workers)

    cfg = load_config(
        None,
        [
            "model.size=tiny",
            f"model.image_size={args.resolution}",
            "model.drop_path_rate=0.0",
            "optim.base_lr=1.0e-4",
            "optim.vision_lr=1.0e-4",
            "optim.layer_decay=1.0",
            "optim.weight_decay=0.0",
            f"optim.total_steps={args.steps}",
            "optim.warmup_steps=2",
        ],
    )
    cfg.data = DataConfig(
        datasets=[
            DatasetConfig("sa1b", str(shards / "sa1b/shard-*.tar"), "image", batch_size=2, num_frames=1, max_num_objects=3),
            DatasetConfig("sav", str(shards / "sav/shard-*.tar"), "video", batch_size=1, num_frames=4, max_num_objects=2),
        ],
        resolution=args.resolution,
        num_workers=0,
        shuffle_buffer=4,
        seed=0,
    )
    torch.manual_seed(0)
    model = build_sam2(cfg.model.size, image_size=cfg.model.image_size, drop_path_rate=cfg.model.drop_path_rate).train()
    log(f"tiny SAM 2.1 ({sum(p.numel() for p in model.parameters()):,} parameters) at {args.resolution}px")
    eval_cfg = EvalConfig(shards=str(shards / "heldout/shard-*.tar"), num_frames=8, max_num_objects=3)
    before = evaluate_vos(model, eval_cfg)

    optimizer = build_optimizer(model, cfg.optim)
    scheduler = LRScheduler(optimizer, cfg.optim)
    loss_fn = MultiStepLoss(cfg.loss)
    prompt_rng = torch.Generator().manual_seed(42)
    history = []
    for step, batch in enumerate(MixedLoader(cfg.data, steps_per_epoch=args.steps)):
        outputs, _ = unroll_clip(model, batch, prompt_rng, cfg.prompts)
        losses = loss_fn(outputs, batch.masks)
        optimizer.zero_grad(set_to_none=True)
        if losses["core_loss"].requires_grad:  # a clip whose every frame was mask-prompted has nothing to learn
            losses["core_loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()
        scheduler.step()
        values = {k: float(torch.as_tensor(v).detach()) for k, v in losses.items()}
        history.append({"step": step, "dataset": batch.metadata["dataset"], **values})
        if step % 5 == 0 or step == args.steps - 1:
            log(
                f"step {step:3d} {batch.metadata['dataset']:5s} loss {values['core_loss']:7.3f} "
                f"(mask {values['loss_mask']:.3f} dice {values['loss_dice']:.3f} "
                f"iou {values['loss_iou']:.3f} class {values['loss_class']:.3f})"
            )
    (out / "history.json").write_text(json.dumps(history, indent=1))

    after = evaluate_vos(model, eval_cfg)
    log(
        f"held-out J&F before {before['J&F']:.3f} -> after {after['J&F']:.3f} (J {before['J']:.3f} -> {after['J']:.3f}, "
        f"F {before['F']:.3f} -> {after['F']:.3f}; first-frame mask propagated, {after['num_videos']} videos, "
        f"{after['num_objects']} objects)"
    )
    ckpt = save_checkpoint(model, out / "sam2.1_hiera_tiny.pt")
    reloaded = load_checkpoint(build_sam2("tiny", image_size=args.resolution), ckpt)
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    log(f"checkpoint {ckpt} (Meta format), reloaded strictly: {'identical' if same else 'DIFFERENT'}")
    log(f"done in {time.time() - start:.0f} s; loss history in {out / 'history.json'}")
    if not same:
        raise SystemExit("the reloaded checkpoint differs")


if __name__ == "__main__":
    main()
