"""`make demo`: the pipeline as far as it exists, end to end on CPU, on built-in synthetic data.

  raw SA-V / SA-1B / DAVIS-style data (synthetic) -> WebDataset shards (parallel) -> verify
  -> streaming, augmented, mixed image/video batches -> a tiny SAM 2.1 trained with the SAM 2.1
  objective (simulated prompts, correction clicks, multi-step loss) -> IoU on held-out videos
  before and after -> a checkpoint in Meta's format, reloaded strictly.

The distributed trainer (DeepSpeed / FSDP), SLURM launchers and J&F evaluation replace the
single-process loop and the IoU check here as they land.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sam2_scale.config import load_config
from sam2_scale.data.mixing import MixedLoader
from sam2_scale.data.streams import DataConfig, DatasetConfig, clip_pipeline
from sam2_scale.data.transforms import normalize_frames
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


@torch.no_grad()
def heldout_iou(model, shards, resolution):
    """Mean IoU of first-frame-mask propagation on the held-out videos (all frames, all objects)."""
    model.eval()
    cfg = DataConfig(resolution=resolution, num_workers=0, shuffle_buffer=1, resampled=False)
    cfg.augment.enabled = False
    dataset = DatasetConfig(
        "heldout", str(shards / "heldout/shard-*.tar"), "video", batch_size=1, num_frames=8, max_num_objects=3
    )
    ious = []
    for (clip,) in clip_pipeline(dataset, cfg):
        frames, masks = normalize_frames(clip["frames"]), clip["masks"]  # (T, 3, S, S), (T, O, S, S)
        num_objects = masks.shape[1]
        output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        for t in range(frames.shape[0]):
            _, feats, pos, sizes = model._prepare_backbone_features(model.forward_image(frames[t : t + 1]))
            feats = [x.expand(-1, num_objects, -1) for x in feats]
            pos = [x.expand(-1, num_objects, -1) for x in pos]
            out = model.track_step(
                t, t == 0, feats, pos, sizes, None, masks[0][:, None] if t == 0 else None, output_dict, frames.shape[0]
            )
            output_dict["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = out
            if t > 0:
                pred = out["pred_masks_high_res"][:, 0] > 0
                inter = (pred & masks[t]).flatten(1).sum(1).float()
                union = (pred | masks[t]).flatten(1).sum(1).float()
                ious += (inter / union.clamp_min(1)).tolist()
    model.train()
    return float(np.mean(ious))


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
    iou_before = heldout_iou(model, shards, args.resolution)

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

    iou_after = heldout_iou(model, shards, args.resolution)
    log(f"held-out IoU (first-frame mask, propagated): before {iou_before:.3f} -> after {iou_after:.3f}")
    ckpt = save_checkpoint(model, out / "sam2.1_hiera_tiny.pt")
    reloaded = load_checkpoint(build_sam2("tiny", image_size=args.resolution), ckpt)
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    log(f"checkpoint {ckpt} (Meta format), reloaded strictly: {'identical' if same else 'DIFFERENT'}")
    log(f"done in {time.time() - start:.0f} s; loss history in {out / 'history.json'}")
    if not same:
        raise SystemExit("the reloaded checkpoint differs")


if __name__ == "__main__":
    main()
