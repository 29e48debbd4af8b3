"""Semi-supervised video object segmentation on held-out video shards, scored with J&F as DAVIS does.

Per video, one clip (`num_frames` consecutive annotated frames, up to `max_num_objects` objects
visible on its first frame, drawn from the video's key, so the same clip on every run, rank and
sharding): frame 0 gets each object's ground-truth mask as the prompt, `track_step` propagates
through the rest, and frames 1..T-1 are scored per object.
Objects are tracked independently (no non-overlap constraint), as SA-V's per-object evaluation
does. Masks are scored at `resolution` (square, as the input pipeline resizes them).

J is region IoU; F is the boundary F-measure of DAVIS (`f_measure` in davis2017-evaluation):
one-pixel boundary maps, matched within a disk of ceil(bound_th * image diagonal) pixels. Each
object's scores are averaged over its frames, then over all objects of all clips.

The process that calls `evaluate_vos` reads every shard, whatever its rank, and runs no
collective: the trainer evaluates on one rank while the others wait.
"""

import contextlib
import math
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import webdataset as wds

from .data.clips import ClipConfig, video_clip
from .data.streams import SkipCounter, expand_shards
from .data.transforms import AugmentConfig, ClipAugment, normalize_frames


@dataclass
class EvalConfig:
    shards: str = ""  # glob/brace pattern of held-out video shards ("" = evaluation off)
    every: int = 0  # trainer: evaluate every N optimizer steps (0 = only at the end)
    num_frames: int = 8  # frames per clip evaluated
    max_num_objects: int = 3
    max_videos: int = 0  # 0 = all
    resolution: int = 0  # scoring resolution; 0 = the model's image_size


def _batched(mask):
    mask = torch.as_tensor(mask, dtype=torch.bool)
    return mask if mask.ndim == 3 else mask[None]


def _per_mask(scores, like):
    return scores if torch.as_tensor(like).ndim == 3 else scores[0]


def jaccard(pred, gt):
    """Region similarity J of bool masks (H, W) or (N, H, W); an empty GT predicted empty scores 1."""
    pred_b, gt_b = _batched(pred), _batched(gt)
    inter = (pred_b & gt_b).flatten(1).sum(1)
    union = (pred_b | gt_b).flatten(1).sum(1)
    return _per_mask(torch.where(union > 0, inter / union.clamp_min(1), 1.0), pred)


def boundary_map(masks):
    """DAVIS `seg2bmap` of bool (N, H, W): a pixel is on the boundary when it differs from its east,
    south or south-east neighbour. The last row compares east only and the last column south only,
    so the right and bottom image borders are not boundaries."""
    padded = F.pad(masks, (0, 1, 0, 1))
    east, south, south_east = padded[:, :-1, 1:], padded[:, 1:, :-1], padded[:, 1:, 1:]
    boundary = (masks ^ east) | (masks ^ south) | (masks ^ south_east)
    boundary[:, -1, :] = masks[:, -1, :] ^ east[:, -1, :]
    boundary[:, :, -1] = masks[:, :, -1] ^ south[:, :, -1]
    boundary[:, -1, -1] = False
    return boundary


def _dilate(boundary, radius):
    """Binary dilation of (N, H, W) by skimage's `disk(radius)`, the structuring element DAVIS uses.

    The disk is a stack of rows: row dy reaches isqrt(radius² - dy²) pixels either side. Rows are
    widened one pixel at a time and each is OR-ed in once at its width, O(radius) passes in all
    (a 2-D convolution takes minutes per clip at 1024² on a CPU)."""
    height, width = boundary.shape[-2:]
    widened = F.pad(boundary, (radius, radius, radius, radius))
    dilated = torch.zeros_like(boundary)
    for half_width in range(radius + 1):
        if half_width:
            widened = widened | F.pad(widened[..., 1:], (0, 1)) | F.pad(widened[..., :-1], (1, 0))
        for dy in range(-radius, radius + 1):
            if math.isqrt(radius**2 - dy**2) == half_width:
                dilated |= widened[:, radius + dy : radius + dy + height, radius : radius + width]
    return dilated


def boundary_f(pred, gt, bound_th=0.008):
    """Boundary F-measure of bool masks (H, W) or (N, H, W). bound_th < 1 is a fraction of the image
    diagonal (rounded up to whole pixels, as DAVIS does); bound_th >= 1 is a distance in pixels.
    An empty boundary has precision (prediction) or recall (GT) 1, so two empty masks score 1."""
    pred_b, gt_b = _batched(pred), _batched(gt)
    height, width = pred_b.shape[-2:]
    radius = int(bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(height, width)))
    pred_boundary, gt_boundary = boundary_map(pred_b), boundary_map(gt_b)
    pred_matched = (pred_boundary & _dilate(gt_boundary, radius)).flatten(1).sum(1)
    gt_matched = (gt_boundary & _dilate(pred_boundary, radius)).flatten(1).sum(1)
    num_pred, num_gt = pred_boundary.flatten(1).sum(1), gt_boundary.flatten(1).sum(1)
    precision = torch.where(num_pred > 0, pred_matched / num_pred.clamp_min(1), 1.0)
    recall = torch.where(num_gt > 0, gt_matched / num_gt.clamp_min(1), 1.0)
    f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0.0)
    return _per_mask(f, pred)


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
        out = model.track_step(t, t == 0, feats, pos, sizes, None, prompt, output_dict, num_frames)
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
def evaluate_vos(model, cfg: EvalConfig, device="cpu", autocast_dtype=None) -> dict:
    """J, F and J&F (in [0, 1]) of first-frame-mask propagation by `model` (a bare SAM2Base) on the
    held-out video shards `cfg.shards`; also the numbers of videos and objects scored."""
    if cfg.num_frames < 2:
        raise ValueError(f"num_frames must be at least 2 (frame 0 is the prompt), got {cfg.num_frames}")
    device = torch.device(device)
    autocast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else contextlib.nullcontext()
    skipped = SkipCounter()
    clips = _clips(expand_shards(cfg.shards), cfg, cfg.resolution or model.image_size, skipped)

    modes = {module: module.training for module in model.modules()}
    model.eval()
    j_sum = f_sum = 0.0
    num_objects = num_videos = 0
    try:
        for clip in clips:
            pred = _predict_clip(model, clip, device, autocast)[1:].flatten(0, 1)
            gt = clip["masks"][1:].to(device).flatten(0, 1)
            objects = clip["masks"].shape[1]
            j_sum += jaccard(pred, gt).view(-1, objects).mean(0).sum().item()
            f_sum += boundary_f(pred, gt).view(-1, objects).mean(0).sum().item()
            num_objects, num_videos = num_objects + objects, num_videos + 1
            if num_videos == cfg.max_videos:
                break
    finally:
        for module, training in modes.items():
            module.train(training)

    if num_objects == 0:
        raise RuntimeError(
            f"no clip of {cfg.num_frames} frames could be evaluated from {cfg.shards!r} ({skipped.count} samples skipped: "
            "too few annotated frames, nothing visible on a clip's first frame, or unreadable)"
        )
    if skipped.count:
        warnings.warn(f"evaluation skipped {skipped.count} samples of {cfg.shards!r} that could not give a clip", stacklevel=2)
    j_mean, f_mean = j_sum / num_objects, f_sum / num_objects
    return {"J": j_mean, "F": f_mean, "J&F": (j_mean + f_mean) / 2, "num_videos": num_videos, "num_objects": num_objects}
