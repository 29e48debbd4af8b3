"""The SAM 2.1 training objective: prompt simulation, clip unroll, multi-step loss."""

from .loss import LossConfig, MultiStepLoss
from .prompts import PromptConfig, sample_scenario
from .unroll import unroll_clip

__all__ = ["LossConfig", "MultiStepLoss", "PromptConfig", "sample_scenario", "unroll_clip"]
