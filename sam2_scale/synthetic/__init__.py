"""Synthetic data for tests, the demo and benchmarks (not needed to train on real data):
scenes with exact masks (scenes.py), written in the raw release formats of SA-1B, SA-V and
DAVIS (raw_formats.py) for data_prep to read like the real datasets."""

from .raw_formats import ANNOTATION_STRIDE, dataset_seed, sav_annotation, write_mp4, write_synthetic_dataset
from .scenes import EASY, HARD, STYLES, iter_video, make_scene, render_image, render_video

__all__ = [
    "ANNOTATION_STRIDE",
    "EASY",
    "HARD",
    "STYLES",
    "dataset_seed",
    "iter_video",
    "make_scene",
    "render_image",
    "render_video",
    "sav_annotation",
    "write_mp4",
    "write_synthetic_dataset",
]
