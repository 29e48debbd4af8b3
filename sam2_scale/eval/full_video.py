"""Full-video evaluation: every frame and every object of each video tracked by `VideoPredictor`,
scored with a standard protocol (`protocol.py`), videos split across ranks and the scores
gathered, so that N processes give the numbers of one.

`evaluate_videos` runs collectives when torch.distributed is initialised with more than one
rank: every rank must call it with the same videos.
"""

import time
import warnings

import torch.distributed as dist
from tqdm import tqdm

from .mask_pngs import write_frame_masks
from .predictor import VideoPredictor
from .protocol import PROTOCOLS, object_scores, score_frame, summarize
from .videos import BadVideo


def _rank_and_world(split):
    if split and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def evaluate_video(predictor, video, protocol, write_masks=None):
    """Rows {"video", "object_id", "J", "F", "J&F"} of one video, and its number of frames."""
    frames = []
    for position, logits, gt in predictor.predict(video):
        pred = logits > 0
        if write_masks:
            write_frame_masks(write_masks, video, position, pred.cpu().numpy(), per_object=not protocol.non_overlap)
        if gt is not None:
            frames.append(score_frame(pred, gt))
    rows = []
    for k, (j, f) in sorted(object_scores(frames, protocol).items()):
        rows.append({"video": video.name, "object_id": video.object_ids[k], "J": j, "F": f, "J&F": (j + f) / 2})
    return rows


def evaluate_videos(
    model, videos, protocol="sav", device="cpu", autocast_dtype=None, write_masks=None, max_videos=0, progress=True, split=True
):
    """Scores of `model` (a SAM2Base) on `videos` (EvalVideos, a list or an iterator) under a
    protocol name of PROTOCOLS. Returns {"J", "F", "J&F" (x 100), "num_videos", "num_objects",
    "frames_per_s", "skipped", "objects": [rows]} on every rank. split=False: this process scores
    every video and runs no collective."""
    protocol = PROTOCOLS[protocol]
    rank, world = _rank_and_world(split)
    predictor = VideoPredictor(model.to(device), non_overlap=protocol.non_overlap, autocast_dtype=autocast_dtype)
    total = min(len(videos), max_videos or len(videos)) if hasattr(videos, "__len__") else (max_videos or None)
    bar = tqdm(total=total, unit="videos", disable=not progress or rank != 0, desc=f"eval ({protocol.name}, {world} ranks)")
    rows, skipped, num_frames, started = [], [], 0, time.perf_counter()
    for index, video in enumerate(videos):
        if max_videos and index >= max_videos:
            break
        if index % world == rank:
            try:
                rows.append((index, evaluate_video(predictor, video, protocol, write_masks)))
                num_frames += video.num_frames
            except (BadVideo, ValueError) as exc:  # an unreadable frame, mask or RLE: counted, not fatal
                skipped.append(f"{video.name}: {exc}")
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - started

    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, (rows, skipped, num_frames, seconds))
        rows = [r for part in gathered for r in part[0]]
        skipped = [s for part in gathered for s in part[1]]
        num_frames = sum(part[2] for part in gathered)
        seconds = max(part[3] for part in gathered)
    objects = [row for _, video_rows in sorted(rows, key=lambda r: r[0]) for row in video_rows]
    if skipped:
        warnings.warn(f"evaluation skipped {len(skipped)} unreadable videos, e.g. {skipped[0]}", stacklevel=2)
    return {
        **summarize(objects),
        "num_videos": len(rows),
        "frames_per_s": num_frames / seconds if seconds > 0 else 0.0,
        "skipped": skipped,
        "objects": objects,
    }


def per_video(objects):
    """{video: {"J", "F", "J&F", "num_objects"}} from the per-object rows."""
    by_video = {}
    for row in objects:
        by_video.setdefault(row["video"], []).append(row)
    return {name: summarize(rows) for name, rows in by_video.items()}
