"""Resizing at prep time: frames and their masks together, to a maximum long side.

Training runs at 1024²: storing larger frames only costs shard bytes and decode time. Images
are scaled with bilinear filtering, masks with nearest neighbour (a mask stays binary and keeps
its edges where the image's are).
"""

import io

import numpy as np
import simplejpeg
from PIL import Image

from sam2_scale.data import rle as rle_utils

from .shards import SampleError


def fitted_size(height, width, max_side):
    """(height, width) scaled so the long side is at most `max_side` (0: no limit)."""
    if not max_side or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_jpeg(data, height, width, quality, where):
    """JPEG bytes of the JPEG `data` resized to (height, width)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.draft("RGB", (width, height))  # let libjpeg decode at a reduced DCT scale
            rgb = np.asarray(img.convert("RGB").resize((width, height), Image.BILINEAR))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise SampleError(f"{where}: unreadable JPEG: {exc}") from exc
    return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=quality, colorspace="RGB")


def _nearest_indices(size, new_size):
    """Source index of each output pixel: the pixel under its centre, with the centres summed
    step by step as Pillow's NEAREST does (so the result equals `Image.resize` exactly)."""
    step = size / new_size
    centres = np.cumsum(np.r_[step / 2, np.full(new_size - 1, step)])
    return np.minimum(centres.astype(np.int64), size - 1)


def resize_mask(mask, height, width):
    """A (H, W) bool/uint8 mask resized to (height, width) by nearest neighbour, as uint8 in
    Fortran order (what COCO RLE encoding reads). A gather of whole columns then of rows: the
    masks pycocotools decodes are Fortran-ordered, so no full-size copy is made."""
    rows = _nearest_indices(mask.shape[0], height)
    cols = _nearest_indices(mask.shape[1], width)
    columns_first = mask.T[cols]  # (width, H): whole source columns, contiguous in Fortran order
    return np.asfortranarray(columns_first[:, rows].T, dtype=np.uint8)


def resize_rle(rle, height, width, where):
    """A COCO RLE resized to (height, width); an empty mask stays empty without decoding."""
    try:
        if not rle_utils.run_lengths(rle["counts"])[1::2].any():  # odd runs are the foreground
            return rle_utils.empty(height, width)
        mask = rle_utils.decode(rle)
    except rle_utils.RLEError as exc:
        raise SampleError(f"{where}: {exc}") from exc
    return rle_utils.encode(resize_mask(mask, height, width))
