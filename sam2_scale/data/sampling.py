"""Which frames and objects of a sample make a training clip, as SA-V / SA-1B training picks them."""

from . import rle as rle_utils


class SkipSample(Exception):
    """The sample cannot give a clip (too short, nothing visible): skipped and counted."""


def _visible(rle):
    return rle is not None and rle_utils.area(rle) > 0


def sample_video_clip(meta, num_frames, max_num_objects, reverse_time_prob, rng, max_tries=1000):
    """A contiguous window of `num_frames` stored frames (reversed with `reverse_time_prob`) whose
    first frame shows at least one object, and up to `max_num_objects` of the objects visible
    there, drawn without replacement. Returns (row positions, object positions)."""
    rows = len(meta["frame_indices"])
    if rows < num_frames:
        raise SkipSample(f"{meta['video_id']}: {rows} annotated frames < {num_frames}")
    for _ in range(max_tries):
        start = int(rng.integers(0, rows - num_frames + 1))
        window = list(range(start, start + num_frames))
        if rng.random() < reverse_time_prob:
            window.reverse()
        visible = [o for o, rle in enumerate(meta["masks"][window[0]]) if _visible(rle)]
        if visible:
            chosen = rng.choice(visible, size=min(len(visible), max_num_objects), replace=False)
            return window, [int(o) for o in chosen]
    raise SkipSample(f"{meta['video_id']}: no window starts with a visible object")


def sample_image_objects(meta, max_num_objects, rng):
    """Up to `max_num_objects` annotations (with area > 0) of an SA-1B image, without replacement."""
    candidates = [i for i, ann in enumerate(meta["annotations"]) if ann.get("area", 1) > 0]
    if not candidates:
        raise SkipSample(f"{meta.get('image', {}).get('file_name', '?')}: no annotation with area > 0")
    chosen = rng.choice(candidates, size=min(len(candidates), max_num_objects), replace=False)
    return [int(i) for i in chosen]
