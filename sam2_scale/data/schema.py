"""The shard sample schema, defined once for the writer (`sam2_scale.prep`) and the reader.

A shard is a plain tar of WebDataset samples: files `<key>.<ext>` grouped by key (keys hold no
dots). Two kinds of samples:

video sample (SA-V, DAVIS-style):
    <key>.json           VideoMeta as JSON (below)
    <key>.<NNNNN>.jpg    one JPEG per stored frame; NNNNN = the frame's index in the source video
image sample (SA-1B):
    <key>.jpg            the image, JPEG
    <key>.json           ImageMeta as JSON: SA-1B's own annotation format (image + annotations,
                         COCO RLE segmentations), plus the "schema" field; "image" holds the
                         stored height/width and the source's original_height/original_width

VideoMeta:
    schema        "sam2_scale.video/1"
    source        "sav" | "davis"
    video_id      str
    height, width int, of the stored frames (= every RLE's "size")
    original_height, original_width
                  int, of the source video (larger when prep scaled the frames down)
    fps           float or null, of the source video
    frame_indices [int], the source index of each stored frame, ascending
    object_ids    [int], one per object (SA-V masklet id, DAVIS palette index)
    masks         [[RLE or null]] per stored frame, per object; an RLE is
                  {"size": [h, w], "counts": str} (COCO compressed); null = not annotated,
                  an empty RLE = annotated and not visible
    extra         {} source metadata kept as-is (e.g. SA-V video_environment)
"""

import json

VIDEO_SCHEMA = "sam2_scale.video/1"
IMAGE_SCHEMA = "sam2_scale.image/1"
META_EXT = "json"
IMAGE_EXT = "jpg"


def frame_ext(frame_index):
    return f"{frame_index:05d}.jpg"


def frame_index_of(ext):
    """The source frame index of a `NNNNN.jpg` extension, or None for other files."""
    stem, _, suffix = ext.partition(".")
    return int(stem) if suffix == "jpg" and stem.isdigit() else None


def video_meta(source, video_id, height, width, fps, frame_indices, object_ids, masks, extra=None, original_size=None):
    original_height, original_width = original_size or (height, width)
    return {
        "schema": VIDEO_SCHEMA,
        "source": source,
        "video_id": video_id,
        "height": int(height),
        "width": int(width),
        "original_height": int(original_height),
        "original_width": int(original_width),
        "fps": fps,
        "frame_indices": [int(i) for i in frame_indices],
        "object_ids": [int(i) for i in object_ids],
        "masks": masks,
        "extra": extra or {},
    }


def encode_meta(meta):
    return json.dumps(meta, separators=(",", ":")).encode()


def sample_key(name):
    """A WebDataset key from a source name: no dots (they split key from extension)."""
    return name.replace(".", "_")
