"""DAVIS-style video datasets -> video samples (MOSE, DAVIS, YouTube-VOS, SA-V val/test).

Layout: frames `<frames>/<video>/<NNNNN>.jpg`; masks either one palettised PNG per annotated
frame, `<masks>/<video>/<NNNNN>.png` (palette index = object id, 0 = background), or one binary
PNG per object, `<masks>/<video>/<object id>/<NNNNN>.png` (SA-V val/test; a missing PNG on an
annotated frame means the object is not visible). Frames with masks are the annotated frames.
JPEG frames are stored as they are, without re-encoding, unless `max_side` asks for a smaller
long side (then frames are resized and re-encoded, and masks resized with them).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sam2_scale.data import rle as rle_utils
from sam2_scale.data import schema

from .resize import fitted_size, resize_jpeg, resize_mask
from .shards import SampleError, Source
from .validate import jpeg_size


def find_davis_items(frames_dir, masks_dir):
    """Sorted (frames folder, masks folder) per video present in both."""
    frames_dir, masks_dir = Path(frames_dir), Path(masks_dir)
    if not frames_dir.is_dir():
        raise FileNotFoundError(f"frames folder {frames_dir} does not exist")
    items = []
    for video in sorted(p for p in frames_dir.iterdir() if p.is_dir()):
        items.append((str(video), str(masks_dir / video.name)))
    return items


def frame_number(path):
    """The frame number of a `NNNNN.jpg` / `NNNNN.png` file, or None for other names."""
    try:
        return int(path.stem)
    except ValueError:
        return None


def read_png(path):
    """(labels, palette or None) of a mask PNG; SampleError naming the file if it is unreadable."""
    try:
        with Image.open(path) as img:
            img.load()
            return np.array(img), img.getpalette()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SampleError(f"{path}: unreadable mask PNG: {exc}") from exc


def _jpeg_size(path):
    try:
        data = Path(path).read_bytes()
    except OSError as exc:  # e.g. a dangling link in a frame folder
        raise SampleError(f"{path}: unreadable frame: {exc}") from exc
    return (data, *jpeg_size(data, path))


def davis_palette() -> list[int]:
    """DAVIS's (PASCAL VOC) palette, flat [r, g, b] * 256: index 0 black, 1 dark red, 2 green, ..."""
    palette = []
    for index in range(256):
        r = g = b = 0
        bits = index
        for shift in range(7, -1, -1):
            r |= (bits & 1) << shift
            g |= ((bits >> 1) & 1) << shift
            b |= ((bits >> 2) & 1) << shift
            bits >>= 3
        palette += [r, g, b]
    return palette


@dataclass(frozen=True)
class DavisSource(Source):
    ann_every: int = 1  # keep every n-th annotated frame
    max_side: int = 0  # scale frames (and masks) down to this long side; 0 = keep
    quality: int = 90  # JPEG quality of resized frames
    unit: str = "videos"

    def producers(self, item):
        frames_dir, masks_dir = item
        yield Path(frames_dir).name, lambda add: self._build(Path(frames_dir), Path(masks_dir), add)

    def _annotations(self, masks_dir):
        """({frame number: {object id: bool mask}}, object ids)."""
        if not masks_dir.is_dir():
            raise SampleError(f"{masks_dir}: no mask folder for this video")
        per_object = sorted(p for p in masks_dir.iterdir() if p.is_dir())
        annotations = {}
        if per_object:
            ids = []
            for folder in per_object:
                try:
                    object_id = int(folder.name)
                except ValueError:
                    raise SampleError(f"{folder}: object folders must be named by their integer id") from None
                ids.append(object_id)
                for png in folder.glob("*.png"):
                    n = frame_number(png)
                    if n is not None:
                        annotations.setdefault(n, {})[object_id] = read_png(png)[0] > 0
            return annotations, sorted(ids)
        ids = set()
        for png in masks_dir.glob("*.png"):
            n = frame_number(png)
            if n is None:
                continue
            labels, _ = read_png(png)
            if labels.ndim != 2:
                raise SampleError(f"{png}: expected a palettised (single-channel) PNG, got shape {labels.shape}")
            present = [int(v) for v in np.unique(labels) if v != 0]
            ids.update(present)
            annotations[n] = {v: labels == v for v in present}
        return annotations, sorted(ids)

    def _build(self, frames_dir, masks_dir, add):
        frames = {frame_number(p): p for p in frames_dir.glob("*.jpg") if frame_number(p) is not None}
        annotations, ids = self._annotations(masks_dir)
        annotated = sorted(n for n in annotations if n in frames)[:: self.ann_every]
        if not annotated:
            raise SampleError(f"{frames_dir}: no frame has a mask in {masks_dir}")
        if not ids:
            raise SampleError(f"{masks_dir}: no object in any mask")
        height = width = None
        masks = []
        for n in annotated:
            data, h, w = _jpeg_size(frames[n])
            if height is None:
                height, width = h, w
                stored = fitted_size(height, width, self.max_side)
            if (h, w) != (height, width):
                raise SampleError(f"{frames[n]}: frame size {(h, w)} differs from the video's {(height, width)}")
            row = []
            for object_id in ids:
                mask = annotations[n].get(object_id)
                if mask is None:
                    row.append(rle_utils.empty(*stored))
                    continue
                if mask.shape != (height, width):
                    raise SampleError(f"{masks_dir}: mask of frame {n} is {mask.shape}, frame is {(height, width)}")
                row.append(rle_utils.encode(resize_mask(mask, *stored)))
            masks.append(row)
            if stored != (height, width):
                data = resize_jpeg(data, *stored, self.quality, frames[n])
            add(schema.frame_ext(n), data)
        meta = schema.video_meta("davis", frames_dir.name, *stored, None, annotated, ids, masks, original_size=(height, width))
        add(schema.META_EXT, schema.encode_meta(meta))
        return schema.sample_key(frames_dir.name), len(annotated)
