"""sam2_scale: pretraining SAM 2.1 at cluster scale."""

__version__ = "0.1.0"
