"""COCO run-length encoding (pycocotools), as stored in SA-1B / SA-V annotations and shards."""

import numpy as np
from pycocotools import mask as mask_utils

# Characters of COCO's compressed counts string: 6 bits each, offset by 48 ('0'..'o').
_FIRST_CHAR, _LAST_CHAR = 48, 48 + 63
_MAX_CHARS_PER_RUN = 12  # 60 bits: far above any real run length, below int64 overflow


class RLEError(ValueError):
    pass


def encode(mask):
    """bool/uint8 (H, W) -> {"size": [H, W], "counts": str}."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def empty(height, width):
    return encode(np.zeros((height, width), np.uint8))


def _is_int(value):
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _string_runs(counts):
    """Run lengths of a compressed counts string: pycocotools' rleFrString, vectorised.

    Each run is a little-endian group of 5-bit digits (bit 0x20: another digit follows, bit 0x10
    of the last digit: negative); from the fourth run on, runs are deltas to the run two back."""
    try:
        chars = np.frombuffer(counts.encode("ascii"), np.uint8).astype(np.int64)
    except UnicodeEncodeError:
        raise RLEError("RLE counts hold non-ASCII characters") from None
    if chars.size == 0:
        return chars
    if chars.min() < _FIRST_CHAR or chars.max() > _LAST_CHAR:
        raise RLEError("RLE counts hold characters outside the COCO alphabet")
    digits = chars - _FIRST_CHAR
    continues = (digits & 0x20) != 0
    if continues[-1]:
        raise RLEError("RLE counts end inside a run")
    ends = np.flatnonzero(~continues)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _MAX_CHARS_PER_RUN:
        raise RLEError("RLE counts hold a run too long to be real")
    position = np.arange(chars.size) - np.repeat(starts, lengths)
    values = np.add.reduceat((digits & 0x1F) << (5 * position), starts)
    negative = (digits[ends] & 0x10) != 0
    values[negative] |= np.left_shift(-1, 5 * lengths[negative])
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])  # run m (m > 2) = value m + run m-2; runs 0..2 are absolute
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def run_lengths(counts):
    """The run lengths (int64) of compressed (str) or uncompressed (list) COCO counts."""
    if isinstance(counts, str):
        return _string_runs(counts)
    if isinstance(counts, list):
        if not all(_is_int(c) for c in counts):
            raise RLEError("RLE counts list holds something other than integers")
        return np.asarray(counts, np.int64).reshape(-1)
    raise RLEError(f"RLE counts must be a string or a list, not {type(counts).__name__}")


def _check_runs(counts, height, width):
    """Decoding counts whose runs do not add up to the mask would read or leave uninitialised memory."""
    runs = run_lengths(counts)
    if runs.size and runs.min() < 0:
        raise RLEError("RLE counts hold a negative run")
    if int(runs.sum()) != height * width:
        raise RLEError(f"RLE counts cover {int(runs.sum())} pixels, the mask has {height}x{width} = {height * width}")


def check(rle, height, width, where):
    """Raise RLEError unless `rle` is a well-formed RLE of an (height, width) mask: structure, size,
    and counts decoded down to run lengths that cover exactly height x width pixels."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise RLEError(f"{where}: not an RLE dict ({type(rle).__name__})")
    size = rle["size"]
    if not isinstance(size, list | tuple) or len(size) != 2 or not all(_is_int(s) for s in size):
        raise RLEError(f"{where}: RLE size must be [height, width] integers, got {size!r:.60}")
    if list(size) != [height, width]:
        raise RLEError(f"{where}: RLE size {list(size)} != frame size {[height, width]}")
    try:
        _check_runs(rle["counts"], height, width)
    except RLEError as exc:
        raise RLEError(f"{where}: {exc}") from None


def decode(rle):
    """{"size", "counts"} -> bool (H, W). Raises RLEError on malformed counts (pycocotools would
    return uninitialised memory for counts that cover too few pixels)."""
    try:
        height, width = (int(s) for s in rle["size"])
        counts = rle["counts"]
        _check_runs(counts, height, width)
        obj = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        if isinstance(counts, list):
            obj = mask_utils.frPyObjects(obj, height, width)
        return mask_utils.decode(obj).astype(bool)
    except RLEError:
        raise
    except Exception as exc:  # pycocotools raises bare exceptions on bad counts
        raise RLEError(f"undecodable RLE: {exc}") from exc


def area(rle):
    counts = rle["counts"]
    obj = {"size": list(rle["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return int(mask_utils.area(obj))
