"""The trainer's quick J&F proxy on held-out video shards: one clip per video, not the published
protocols (those are `full_video.py`). Fast enough to run every few hundred steps.

Per video, one clip (`num_frames` consecutive annotated frames, up to `max_num_objects` objects
visible on its first frame, drawn from the video's key, so the same clip on every run, rank and
sharding): frame 0 gets each object's ground-truth mask as the prompt, `track_step` propagates
through the rest, and frames 1..T-1 are scored per object.
Objects are tracked independently (no non-overlap constraint). Masks are scored at `resolution`
(square, as the input pipeline resizes them). Scores are in [0, 1].

J and F are those of DAVIS (`jf.py`). Each object's scores are averaged over its frames, then over
all objects of all clips.

The process that calls `evaluate_vos` reads every shard, whatever its rank, and runs no
collective: the trainer evaluates on one rank while the others wait.
"""

import contextlib
import warnings
import zlib

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import webdataset as wds

from ..config.schema import AugmentConfig, EvalConfig
from ..data.clips import ClipConfig, video_clip
from ..data.streams import SkipCounter, expand_shards
from ..data.transforms import ClipAugment, normalize_frames
from .jf import boundary_f, jaccard


def _propagate(model, frames, first_masks):
    """Mask logits (T, O, S, S) at the model's resolution: GT masks on frame 0, tracked after."""
    num_frames, num_objects = frames.shape[0], first_masks.shape[0]
    output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    logits = []
    for t in range(num_frames):
        _, feats, pos, sizes = model._prepare_backbone_features(model.forward_image(frames[t : t + 1]))
        feats = [x.expand(-1, num_objects, -1) for x in feats]
        pos = [x.expand(-1, num_objects, -1) for x in pos]
        prompt = first_masks[:, None] if t == 0 else None
        out = model.track_step(
            t,
            is_init_cond_frame=t == 0,
            current_vision_feats=feats,
            current_vision_pos_embeds=pos,
            feat_sizes=sizes,
            point_inputs=None,
            mask_inputs=prompt,
            output_dict=output_dict,
            num_frames=num_frames,
        )
        output_dict["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = out
        logits.append(out["pred_masks_high_res"][:, 0].float())
    return torch.stack(logits)


def _predict_clip(model, clip, device, autocast):
    """Predicted bool masks (T, O, R, R) of a clip at its resolution R."""
    frames = normalize_frames(clip["frames"].to(device))
    gt = clip["masks"].to(device)
    size, resolution = model.image_size, gt.shape[-1]
    first_masks = gt[0]
    if resolution != size:
        # Model-resolution inputs as Meta's video predictor makes them from full-size frames and masks.
        frames = _resize(frames, size, antialias=True)
        first_masks = _resize(first_masks[None].float(), size, antialias=True)[0] >= 0.5
    with autocast:
        logits = _propagate(model, frames, first_masks)
    if resolution != size:
        logits = _resize(logits, resolution)  # logits, not masks, are upsampled: Meta's predictor does
    return logits > 0


def _resize(x, size, antialias=False):
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)


def _clips(urls, cfg, resolution, skipped):
    """One clip per video of the shards, in shard order, at `resolution` without augmentation.
    Unreadable samples, and videos that cannot give a clip, are counted on `skipped`.

    Not `clip_pipeline`: that splits shards over ranks and seeds clips by stream position."""
    clip_cfg = ClipConfig(cfg.num_frames, cfg.max_num_objects)
    resize_only = ClipAugment(resolution, AugmentConfig(enabled=False))
    for sample in wds.tarfile_to_samples(handler=skipped)({"url": url} for url in urls):
        rng = np.random.default_rng(zlib.crc32(sample["__key__"].encode()))
        try:
            yield video_clip(sample, clip_cfg, resize_only, rng, resolution)
        except Exception as exc:  # SkipSample (too short, nothing visible) or malformed metadata
            skipped(exc)


@torch.no_grad()
def evaluate_vos(model, cfg: EvalConfig, device="cpu", autocast_dtype=None, split=False) -> dict:
    """J, F and J&F (in [0, 1]) of first-frame-mask propagation by `model` (a bare SAM2Base) on the
    held-out video shards `cfg.shards`; also the numbers of videos and objects scored.
    split: the ranks of the initialised process group share the clips (every rank calls this,
    reads every clip and scores every world-size-th one) and all get the scores."""
    if cfg.num_frames < 2:
        raise ValueError(f"num_frames must be at least 2 (frame 0 is the prompt), got {cfg.num_frames}")
    device = torch.device(device)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    skipped = SkipCounter()
    clips = _clips(expand_shards(cfg.shards), cfg, cfg.resolution or model.image_size, skipped)

    rank, world = (dist.get_rank(), dist.get_world_size()) if split and dist.is_initialized() else (0, 1)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    j_sum = f_sum = 0.0
    num_objects = num_videos = 0
    try:
        for index, clip in enumerate(clips):
            if cfg.max_videos and index == cfg.max_videos:
                break
            if index % world != rank:
                continue
            pred = _predict_clip(model, clip, device, autocast)[1:].flatten(0, 1)
            gt = clip["masks"][1:].to(device).flatten(0, 1)
            objects = clip["masks"].shape[1]
            j_sum += jaccard(pred, gt).view(-1, objects).mean(0).sum().item()
            f_sum += boundary_f(pred, gt).view(-1, objects).mean(0).sum().item()
            num_objects, num_videos = num_objects + objects, num_videos + 1
    finally:
        for module, training in modes.items():
            module.train(training)
    if world > 1:
        totals = torch.tensor([j_sum, f_sum, num_objects, num_videos], dtype=torch.float64, device=device)
        dist.all_reduce(totals)  # (every rank read every sample: its skip count is the whole count)
        j_sum, f_sum = totals[0].item(), totals[1].item()
        num_objects, num_videos = int(totals[2].item()), int(totals[3].item())

    if num_objects == 0:
        raise RuntimeError(
            f"no clip of {cfg.num_frames} frames could be evaluated from {cfg.shards!r} ({skipped.count} samples skipped: "
            "too few annotated frames, nothing visible on a clip's first frame, or unreadable)"
        )
    if skipped.count:
        warnings.warn(f"evaluation skipped {skipped.count} samples of {cfg.shards!r} that could not give a clip", stacklevel=2)
    j_mean, f_mean = j_sum / num_objects, f_sum / num_objects
    return {"J": j_mean, "F": f_mean, "J&F": (j_mean + f_mean) / 2, "num_videos": num_videos, "num_objects": num_objects}
