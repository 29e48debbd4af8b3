"""Shard sample -> training clip: pick frames and objects, decode only those, augment."""

import json
from dataclasses import dataclass

import numpy as np
import simplejpeg

from . import rle as rle_utils
from . import schema
from .sampling import SkipSample, sample_image_objects, sample_video_clip


@dataclass
class ClipConfig:
    num_frames: int = 8  # 1 for image datasets
    max_num_objects: int = 3
    reverse_time_prob: float = 0.0


def decode_jpeg(data, target_size):
    """RGB uint8. libjpeg-turbo decodes at a reduced DCT scale (1/2, 1/4, 1/8) when the image is
    still at least `target_size` on both sides at that scale: fewer pixels to decode and resize."""
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=target_size, min_width=target_size)
    except ValueError as exc:
        raise SkipSample(f"undecodable JPEG: {exc}") from exc


def _masks(rles, height, width):
    out = np.zeros((len(rles), height, width), bool)
    for i, rle in enumerate(rles):
        if rle is not None:
            out[i] = rle_utils.decode(rle)
    return out


def video_clip(sample, cfg, augment, rng, resolution):
    meta = json.loads(sample[schema.META_EXT])
    window, objects = sample_video_clip(meta, cfg.num_frames, cfg.max_num_objects, cfg.reverse_time_prob, rng)
    h, w = meta["height"], meta["width"]
    frames, masks = [], np.zeros((len(window), len(objects), h, w), bool)
    for t, row in enumerate(window):
        index = meta["frame_indices"][row]
        key = schema.frame_ext(index)
        if key not in sample:
            raise SkipSample(f"{meta['video_id']}: frame {index} missing from the sample")
        frames.append(decode_jpeg(sample[key], resolution))
        masks[t] = _masks([meta["masks"][row][o] for o in objects], h, w)
    frames_t, masks_t = augment(frames, masks, rng)
    return {
        "frames": frames_t,
        "masks": masks_t,
        "source": meta["video_id"],
        "object_ids": [meta["object_ids"][o] for o in objects],
        "frame_indices": [meta["frame_indices"][r] for r in window],
        "orig_size": (h, w),
    }


def image_clip(sample, cfg, augment, rng, resolution):
    meta = json.loads(sample[schema.META_EXT])
    chosen = sample_image_objects(meta, cfg.max_num_objects, rng)
    h, w = meta["image"]["height"], meta["image"]["width"]
    frame = decode_jpeg(sample[schema.IMAGE_EXT], resolution)
    masks = _masks([meta["annotations"][i]["segmentation"] for i in chosen], h, w)[None]
    frames_t, masks_t = augment([frame], masks, rng)
    return {
        "frames": frames_t,
        "masks": masks_t,
        "source": meta["image"].get("file_name", sample["__key__"]),
        "object_ids": [int(meta["annotations"][i].get("id", i)) for i in chosen],
        "frame_indices": [0],
        "orig_size": (h, w),
    }
