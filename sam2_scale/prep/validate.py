"""Checks of raw inputs shared by the dataset readers: JPEG bodies and JSON field types.

Each raises `SampleError` naming the file (or tar member) and what is wrong, so a bad input is
skipped and recorded instead of crashing the run (and every rerun) on the same file.
"""

import math

import simplejpeg

from .shards import SampleError


def jpeg_size(data, where):
    """(height, width) of a JPEG whose whole body decodes.

    The header alone says nothing of the entropy-coded data after it: a truncated or damaged
    body would go into the shard and fail only at training. Decoding at the smallest DCT scale
    still parses every coded byte (libjpeg-turbo reports the same damage as at full scale) while
    skipping most of the inverse DCT and colour conversion; see BENCHMARKS.md for the cost."""
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        simplejpeg.decode_jpeg(data, min_height=1, min_width=1)
    except (ValueError, RuntimeError) as exc:
        raise SampleError(f"{where}: unreadable JPEG: {exc}") from exc
    return height, width


def describe(value):
    """A short, readable rendering of a bad value for an error message."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_int(value):
    """`value` as an int if it is one (an integral float counts), else None."""
    if is_int(value):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def require_list(value, where, name):
    if not isinstance(value, list):
        raise SampleError(f"{where}: '{name}' must be a list, got {describe(value)}")
    return value


def require_dict(value, where, name):
    if not isinstance(value, dict):
        raise SampleError(f"{where}: '{name}' must be an object, got {describe(value)}")
    return value


def require_optional_number(meta, key, where):
    """Absent and null are fine (the field is optional); anything else must be a number."""
    value = meta.get(key)
    if value is not None and not is_number(value):
        raise SampleError(f"{where}: '{key}' must be a number, got {describe(value)}")
