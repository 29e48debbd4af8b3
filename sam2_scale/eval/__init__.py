"""Evaluation: J&F of semi-supervised video object segmentation (`python -m sam2_scale.eval`)."""

from .jf import boundary_f, boundary_map, jaccard
from .vos import EvalConfig, evaluate_vos

__all__ = ["EvalConfig", "boundary_f", "boundary_map", "evaluate_vos", "jaccard"]
