"""COCO run-length encoding (pycocotools), as stored in SA-1B / SA-V annotations and shards."""

import numpy as np
from pycocotools import mask as mask_utils


class RLEError(ValueError):
    pass


def encode(mask):
    """bool/uint8 (H, W) -> {"size": [H, W], "counts": str}."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def empty(height, width):
    return encode(np.zeros((height, width), np.uint8))


def check(rle, height, width, where):
    """Raise RLEError unless `rle` is a well-formed RLE of an (height, width) mask."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise RLEError(f"{where}: not an RLE dict ({type(rle).__name__})")
    size = rle["size"]
    if list(size) != [height, width]:
        raise RLEError(f"{where}: RLE size {list(size)} != frame size {[height, width]}")
    counts = rle["counts"]
    if not isinstance(counts, str | list):
        raise RLEError(f"{where}: RLE counts must be a string or a list")


def decode(rle):
    """{"size", "counts"} -> bool (H, W). Raises RLEError on malformed counts."""
    counts = rle["counts"]
    obj = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    if isinstance(counts, list):
        obj = mask_utils.frPyObjects(obj, *obj["size"])
    try:
        return mask_utils.decode(obj).astype(bool)
    except Exception as exc:  # pycocotools raises bare exceptions on bad counts
        raise RLEError(f"undecodable RLE: {exc}") from exc


def area(rle):
    counts = rle["counts"]
    obj = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return int(mask_utils.area(obj))
