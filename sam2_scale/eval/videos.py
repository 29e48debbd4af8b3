"""Whole videos with ground truth, for full-video evaluation: from a DAVIS-style folder or from
held-out shards, behind one small interface (`EvalVideo`).

Folder layouts (found under `--data DIR`, with or without DAVIS's `480p` level):
    DAVIS 2017 / MOSE     JPEGImages[/480p]/<video>/<NNNNN>.jpg  Annotations[/480p]/<video>/<NNNNN>.png
                          (palettised PNGs: pixel value = object id, 0 = background)
    SA-V val / test       JPEGImages_24fps/<video>/<NNNNN>.jpg   Annotations_6fps/<video>/<object id>/<NNNNN>.png
                          (one binary PNG per object and annotated frame)
Every JPEG is a frame of the video; frames with a PNG are the annotated frames, which are scored.
A shard's video sample holds its annotated frames only: they are the whole video there.
"""

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from ..data import rle as rle_utils
from ..data import schema
from ..data.streams import SkipCounter, expand_shards
from ..prep.davis import frame_number, read_png  # raises SampleError, a ValueError

FRAME_FOLDERS = ("JPEGImages/480p", "JPEGImages_24fps", "JPEGImages")
MASK_FOLDERS = ("Annotations/480p", "Annotations_6fps", "Annotations")


@dataclass
class EvalVideo:
    name: str
    frame_names: list  # every frame, in order: file stems ("00000") or source frame indices
    height: int
    width: int
    object_ids: list  # ids of the objects annotated anywhere in the video
    annotated: list  # positions in frame_names that have ground truth, ascending
    read_frame: Callable = field(repr=False)  # position -> RGB PIL image at the video's size
    read_masks: Callable = field(repr=False)  # annotated position -> bool (objects, H, W)
    palette: list = None  # the annotations' PNG palette, when they have one

    @property
    def num_frames(self):
        return len(self.frame_names)


class BadVideo(ValueError):
    """A video of the evaluation set that cannot be read (named in the message)."""


# ------------------------------------------------------------------ folders


def _find(root, candidates, what):
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(f"{root}: no {what} folder (looked for {', '.join(candidates)})")


def _read_jpeg(path):
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError) as exc:
        raise BadVideo(f"{path}: unreadable frame: {exc}") from exc


def folder_videos(root, video_list=None):
    """EvalVideos of a DAVIS-style folder, sorted by name (or in the order of `video_list`, a
    text file of video names such as DAVIS's ImageSets/2017/val.txt or SA-V's sav_val.txt)."""
    root = Path(root)
    frames_root = _find(root, FRAME_FOLDERS, "frames")
    masks_root = _find(root, MASK_FOLDERS, "annotations")
    if video_list:
        names = [line.strip() for line in Path(video_list).read_text().splitlines() if line.strip()]
        missing = [n for n in names if not (frames_root / n).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"{video_list}: {len(missing)} videos have no frame folder in {frames_root}, e.g. {missing[0]}"
            )
    else:
        names = sorted(p.name for p in frames_root.iterdir() if p.is_dir() and (masks_root / p.name).is_dir())
    if not names:
        raise FileNotFoundError(f"{frames_root}: no video folder with annotations in {masks_root}")
    return [_folder_video(frames_root / n, masks_root / n) for n in names]


def _folder_video(frames_dir, masks_dir):
    frames = sorted(
        (n, p) for p in frames_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg") and (n := frame_number(p)) is not None
    )
    if not frames:
        raise BadVideo(f"{frames_dir}: no numbered JPEG frames")
    stems = [p.stem for _, p in frames]
    position = {p.stem: i for i, (_, p) in enumerate(frames)}
    if not masks_dir.is_dir():
        raise BadVideo(f"{masks_dir}: no annotation folder for this video")
    object_dirs = sorted((int(p.name), p) for p in masks_dir.iterdir() if p.is_dir() and p.name.isdigit())
    with Image.open(frames[0][1]) as first:
        width, height = first.size

    if object_dirs:  # SA-V: one binary PNG per object
        pngs = {oid: {p.stem: p for p in d.glob("*.png")} for oid, d in object_dirs}
        annotated = sorted({position[s] for files in pngs.values() for s in files if s in position})
        object_ids = [oid for oid, _ in object_dirs]
        palette = None

        def read_masks(i):
            out = np.zeros((len(object_ids), height, width), bool)
            for k, oid in enumerate(object_ids):
                path = pngs[oid].get(stems[i])
                if path is not None:  # no PNG on an annotated frame: the object is not visible
                    out[k] = _checked(read_png(path)[0], path, height, width) > 0
            return out

    else:  # DAVIS / MOSE: one palettised PNG per annotated frame
        pngs = {p.stem: p for p in masks_dir.glob("*.png") if p.stem in position}
        annotated = sorted(position[s] for s in pngs)
        ids, palette = set(), None
        for s in pngs:  # small PNGs; the object ids of the whole video are needed up front
            labels, palette = read_png(pngs[s])
            ids.update(int(v) for v in np.unique(_checked(labels, pngs[s], height, width)) if v)
        object_ids = sorted(ids)

        def read_masks(i):
            path = pngs[stems[i]]
            labels = _checked(read_png(path)[0], path, height, width)
            return labels[None] == np.array(object_ids, dtype=labels.dtype)[:, None, None]

    if not annotated:
        raise BadVideo(f"{masks_dir}: no PNG matches a frame of {frames_dir}")
    return EvalVideo(
        name=frames_dir.name,
        frame_names=stems,
        height=height,
        width=width,
        object_ids=object_ids,
        annotated=annotated,
        read_frame=lambda i: _read_jpeg(frames[i][1]),
        read_masks=read_masks,
        palette=palette,
    )


def _checked(labels, path, height, width):
    if labels.ndim != 2:
        raise BadVideo(f"{path}: expected a single-channel (palettised or binary) PNG, got shape {labels.shape}")
    if labels.shape != (height, width):
        raise BadVideo(f"{path}: mask is {labels.shape[1]}x{labels.shape[0]}, the video's frames are {width}x{height}")
    return labels


# ------------------------------------------------------------------ shards


def shard_videos(pattern, skipped: SkipCounter):
    """EvalVideos of the video samples of held-out shards, in shard order (image samples and
    unreadable samples are counted on `skipped`)."""
    for sample in wds.tarfile_to_samples(handler=skipped)({"url": url} for url in expand_shards(pattern)):
        try:
            yield _shard_video(sample)
        except (BadVideo, KeyError, ValueError) as exc:
            skipped(exc)


def _shard_video(sample):
    meta = json.loads(sample[schema.META_EXT])
    if meta.get("schema") != schema.VIDEO_SCHEMA:
        raise BadVideo(f"{sample.get('__key__')}: not a video sample")
    h, w, indices = meta["height"], meta["width"], meta["frame_indices"]
    missing = [i for i in indices if schema.frame_ext(i) not in sample]
    if missing:
        raise BadVideo(f"{meta['video_id']}: frame {missing[0]} missing from the sample")

    def read_frame(i):
        try:
            with Image.open(io.BytesIO(sample[schema.frame_ext(indices[i])])) as img:
                return img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise BadVideo(f"{meta['video_id']}: frame {indices[i]} is not a readable JPEG: {exc}") from exc

    def read_masks(i):
        out = np.zeros((len(meta["object_ids"]), h, w), bool)
        for k, rle in enumerate(meta["masks"][i]):
            if rle is not None:  # not annotated on this frame: scored as not visible
                out[k] = rle_utils.decode(rle)
        return out

    return EvalVideo(
        name=meta["video_id"],
        frame_names=[f"{i:05d}" for i in indices],
        height=h,
        width=w,
        object_ids=list(meta["object_ids"]),
        annotated=list(range(len(indices))),
        read_frame=read_frame,
        read_masks=read_masks,
    )
