"""SA-V videos (mp4 + <video>_manual.json [+ _auto.json]) -> video samples, one per video.

One sample per whole video keeps every window of consecutive annotated frames available to
the sampler; the reader decodes only the JPEGs of the frames it picks.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from sam2_scale.data import rle as rle_utils
from sam2_scale.data import schema

from .shards import SampleError, Source
from .validate import as_int, describe, require_optional_number
from .video import VideoDecodeError, iter_kept_frames

# Object ids of auto masklets are offset so they never collide with manual ones.
AUTO_ID_OFFSET = 1_000_000


def find_sav_items(videos_dir, annotations_dir=None):
    """Sorted (video path, manual json or None, auto json or None) for every *.mp4 below."""
    videos_dir = Path(videos_dir)
    annotations_dir = Path(annotations_dir or videos_dir)
    manual = {p.name[: -len("_manual.json")]: p for p in annotations_dir.rglob("*_manual.json")}
    auto = {p.name[: -len("_auto.json")]: p for p in annotations_dir.rglob("*_auto.json")}
    items = []
    for video in sorted(videos_dir.rglob("*.mp4"), key=lambda p: p.name):
        stem = video.stem
        items.append((str(video), str(manual[stem]) if stem in manual else None, str(auto[stem]) if stem in auto else None))
    return items


def load_masklets(path, video_id):
    """(rows, object_ids, meta) of an SA-V annotation file, validated for shape and field types."""
    try:
        meta = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise SampleError(f"{path}: malformed annotation JSON: {exc}") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("masklet"), list):
        raise SampleError(f"{path}: no 'masklet' list")
    rows = meta["masklet"]
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise SampleError(f"{path}: masklet row {i} must be a list of RLEs, got {describe(row)}")
    ids = _masklet_ids(meta, rows, path)
    for i, row in enumerate(rows):
        if len(row) != len(ids):
            raise SampleError(f"{path}: masklet row {i} has {len(row)} objects, expected {len(ids)}")
    # Read later for the fps; a wrong type would crash every run on this file.
    for key in ("video_duration", "video_frame_count"):
        require_optional_number(meta, key, path)
    return rows, ids, meta


def _masklet_ids(meta, rows, path):
    """The object ids: 'masklet_id' when given (integers), else 0..K-1 from the first row."""
    ids = meta.get("masklet_id")
    if ids is None or ids == []:
        return list(range(len(rows[0]) if rows else 0))
    if not isinstance(ids, list) or any(as_int(i) is None for i in ids):
        raise SampleError(f"{path}: 'masklet_id' must be a list of integers, got {describe(ids)}")
    return [as_int(i) for i in ids]


@dataclass(frozen=True)
class SavSource(Source):
    ann_every: int = 4  # annotations at 6 fps on 24 fps video: frames 0, 4, 8, ...
    quality: int = 90
    include_auto: bool = False
    unit: str = "videos"

    def producers(self, item):
        video, manual, auto = item
        yield Path(video).stem, lambda add: self._build(video, manual, auto, add)

    def _build(self, video, manual, auto, add):
        video_id = Path(video).stem
        if manual is None:
            raise SampleError(f"{video}: no annotation file {video_id}_manual.json")
        rows, ids, meta = load_masklets(manual, video_id)
        types = ["manual"] * len(ids)
        if self.include_auto and auto is not None:
            auto_rows, auto_ids, _ = load_masklets(auto, video_id)
            if len(auto_rows) != len(rows):
                raise SampleError(f"{auto}: {len(auto_rows)} annotated frames, manual file has {len(rows)}")
            rows = [m + a for m, a in zip(rows, auto_rows)]
            ids = ids + [AUTO_ID_OFFSET + i for i in auto_ids]
            types += ["auto"] * len(auto_ids)
        if not rows:
            raise SampleError(f"{manual}: no annotated frames")

        indices, height, width = [], None, None
        try:
            for frame in iter_kept_frames(
                video, every=self.ann_every, quality=self.quality, last_index=(len(rows) - 1) * self.ann_every
            ):
                height, width = frame.height, frame.width
                add(schema.frame_ext(frame.index), frame.jpeg)
                indices.append(frame.index)
        except VideoDecodeError as exc:
            raise SampleError(str(exc)) from exc
        if len(indices) != len(rows):
            raise SampleError(
                f"{video}: {len(indices)} frames at every {self.ann_every} decoded, annotation has {len(rows)}"
                f" (video frames: {meta.get('video_frame_count')})"
            )
        masks = []
        for f, row in enumerate(rows):
            for o, rle in enumerate(row):
                if rle is not None:
                    try:
                        rle_utils.check(rle, height, width, f"{manual}: frame {indices[f]} object {ids[o]}")
                    except rle_utils.RLEError as exc:
                        raise SampleError(str(exc)) from exc
            masks.append(row)
        extra = {k: meta[k] for k in ("video_environment", "video_split", "video_duration", "video_frame_count") if k in meta}
        extra["object_types"] = types
        meta_out = schema.video_meta("sav", video_id, height, width, _fps_of(meta), indices, ids, masks, extra)
        add(schema.META_EXT, schema.encode_meta(meta_out))
        return schema.sample_key(video_id), len(indices)


def _fps_of(meta):
    duration, count = meta.get("video_duration"), meta.get("video_frame_count")
    if duration and count and duration > 0 and count > 0:
        fps = float(count) / float(duration)
        return round(fps, 3) if math.isfinite(fps) else None
    return None
