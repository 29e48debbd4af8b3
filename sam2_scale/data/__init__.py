"""Input pipeline: WebDataset shards to augmented, mixed image/video `Batch`es (`batch.py`).

This package's own import is light on purpose: data preparation shares `schema` and `rle` with
the reader and must not load torch.
"""
