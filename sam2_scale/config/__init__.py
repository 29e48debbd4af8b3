"""The training config: its sections (schema.py), loading YAML and overrides (loading.py) and
the rules between fields (rules.py)."""

from .loading import dump, load_config
from .rules import ConfigError, validate
from .schema import (
    AugmentConfig,
    CheckpointConfig,
    Config,
    DataConfig,
    DatasetConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    PromptConfig,
    TrainConfig,
    WandbConfig,
)

__all__ = [
    "AugmentConfig",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DatasetConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "PromptConfig",
    "TrainConfig",
    "WandbConfig",
    "dump",
    "load_config",
    "validate",
]
