"""The SAM 2.1 training objective: prompt simulation, clip unroll, multi-step loss."""

from .loss import MultiStepLoss
from .prompts import sample_scenario
from .unroll import unroll_clip

__all__ = ["MultiStepLoss", "sample_scenario", "unroll_clip"]
