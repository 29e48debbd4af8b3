"""SAM 2.1 (state-dict compatible with Meta's released sam2.1_hiera_*.pt)."""

from .checkpoint_io import CheckpointFileError, CheckpointMismatchError, load_checkpoint, save_checkpoint
from .sam2 import SAM2Base
from .sizes import (
    CHECKPOINT_REGIONS,
    NUM_PARAMETERS,
    SIZES,
    TOP_LEVEL_MODULES,
    build_sam2,
    repeated_blocks,
    set_activation_checkpointing,
    top_level_module,
)

__all__ = [
    "SAM2Base",
    "build_sam2",
    "set_activation_checkpointing",
    "CHECKPOINT_REGIONS",
    "load_checkpoint",
    "save_checkpoint",
    "CheckpointFileError",
    "CheckpointMismatchError",
    "SIZES",
    "NUM_PARAMETERS",
    "TOP_LEVEL_MODULES",
    "repeated_blocks",
    "top_level_module",
]
