"""Evaluation: J&F of semi-supervised video object segmentation (`python -m sam2_scale.eval`):
full videos under the published protocols, and the trainer's quick clip proxy."""

from .clip_proxy import evaluate_vos
from .full_video import evaluate_videos
from .jf import boundary_f, boundary_map, jaccard
from .predictor import VideoPredictor
from .videos import EvalVideo, folder_videos, shard_videos

__all__ = [
    "EvalVideo",
    "VideoPredictor",
    "boundary_f",
    "boundary_map",
    "evaluate_videos",
    "evaluate_vos",
    "folder_videos",
    "jaccard",
    "shard_videos",
]
