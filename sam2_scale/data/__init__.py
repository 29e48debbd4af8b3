"""Input pipeline: WebDataset shards to augmented, mixed image/video `Batch`es."""

from .batch import Batch

__all__ = ["Batch"]
