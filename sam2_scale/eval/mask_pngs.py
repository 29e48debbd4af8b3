"""Predicted masks as PNGs in the layout the datasets' own scorers read: one palettised PNG per
frame (`DIR/<video>/<frame>.png`, pixel value = object id; DAVIS, MOSE) or one binary PNG per
object and frame (`DIR/<video>/<object id:03d>/<frame>.png`; SA-V). Writes are atomic."""

from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import atomic_path
from ..prep.davis import davis_palette


def _save(path, array, palette):
    img = Image.fromarray(array)
    img.putpalette(palette)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def write_frame_masks(out_dir, video, position, masks, per_object, palette=None):
    """Write bool masks (objects, H, W) of `video`'s frame at `position`."""
    folder = Path(out_dir) / video.name
    name = f"{video.frame_names[position]}.png"
    palette = palette or video.palette or davis_palette()
    if per_object:
        for oid, mask in zip(video.object_ids, masks):
            _save(folder / f"{oid:03d}" / name, mask.astype(np.uint8), palette)
        return
    labels = np.zeros(masks.shape[1:], np.uint8)
    # Lower ids win where masks overlap, as the released VOS tool writes them.
    for oid, mask in reversed(list(zip(video.object_ids, masks))):
        labels[mask] = oid
    _save(folder / name, labels, palette)
