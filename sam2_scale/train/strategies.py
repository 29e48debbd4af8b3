"""The parallelism strategies by name: `train.strategy` -> the Engine that implements it.

Each engine lives in its own module and imports only `engine.py`; this factory is the one place
that knows them all, so the loop picks a strategy without naming one. Engines are imported when
picked: DeepSpeed is heavy to import.
"""

from ..config.schema import STRATEGIES
from .engine import prepare_model


def engine_class(strategy):
    if strategy == "ddp":
        from .ddp import DDPEngine

        return DDPEngine
    if strategy == "deepspeed":
        from .deepspeed_engine import DeepSpeedEngine

        return DeepSpeedEngine
    if strategy == "fsdp":
        from .fsdp import FSDPEngine

        return FSDPEngine
    raise ValueError(f"unknown train.strategy {strategy!r} ({', '.join(STRATEGIES)})")


def build_engine(model, cfg, dist_info):
    """Wrap `model` (a SAM2Base on its device, weights initialised) for `cfg.train.strategy`."""
    prepare_model(model, cfg)
    return engine_class(cfg.train.strategy)(model, cfg, dist_info)
