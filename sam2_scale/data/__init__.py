"""Input pipeline: the Batch type the objective consumes (streaming pipeline: see issue docs)."""

from .batch import Batch

__all__ = ["Batch"]
