"""YAML -> typed, validated config. Unknown keys and wrong types are errors that name them.

A config file holds sections (`model`, `prompts`, `loss`, `optim`, ...), each a dataclass.
Dotted overrides (`optim.base_lr=1e-4`) are parsed as YAML values and validated the same way.
"""

import dataclasses
import typing
from dataclasses import dataclass, field

import yaml

from .data.streams import DataConfig
from .eval import EvalConfig
from .model import CHECKPOINT_REGIONS
from .objective.loss import LossConfig
from .objective.prompts import PromptConfig
from .train.optim import OptimConfig


class ConfigError(ValueError):
    pass


@dataclass
class ModelConfig:
    size: str = "tiny"
    image_size: int = 1024
    drop_path_rate: float = 0.1
    # Regions recomputed in backward instead of keeping their activations: any of hiera,
    # memory_attention (the memory-heavy, FLOP-heavy blocks), heads, memory_encoder (each pass
    # of the SAM heads / memory encoder: launch-bound, cheap to recompute in FLOPs, costly in launches).
    activation_checkpointing: list = field(default_factory=list)
    init_checkpoint: str = ""  # a Meta-format .pt to start from ("" = random init)


@dataclass
class TrainConfig:
    out_dir: str = "runs/train"  # config.yaml, metrics.jsonl, checkpoints/, wandb/
    strategy: str = "ddp"  # ddp | deepspeed | fsdp
    deepspeed_config: str = "ds_configs/zero2.json"  # ZeRO stage and communication settings
    precision: str = "bf16"  # bf16 (autocast; bf16 params under FSDP/DeepSpeed) | fp32
    grad_accum_steps: int = 1  # global batch = batch_size x grad_accum_steps x world size
    grad_clip: float = 0.1  # max total grad norm (0 = no clipping)
    max_nonfinite_steps: int = 10  # stop after this many skipped (NaN/inf) steps in a row
    ema_decay: float = 0.0  # EMA of the weights (0 = off), e.g. 0.9999
    compile: bool = False  # torch.compile regions: Hiera blocks, memory-attention layers, SAM heads, memory encoder, loss
    compile_backend: str = "inductor"  # inductor (generates kernels) | aot_eager (traces only: for debugging)
    fsdp_reshard_after_forward: bool = True
    seed: int = 0  # weights init, dropout / drop-path, prompt simulation
    steps_per_epoch: int = 1000  # the data loader reseeds its shard draws every epoch
    log_every: int = 10
    peak_tflops: float = 0.0  # per device, for MFU (0 = from the built-in table; none on CPU)
    preempt_grace_s: float = 300.0  # after SIGUSR1/SIGTERM, force exit if the save has not finished


@dataclass
class CheckpointConfig:
    every: int = 1000  # optimizer steps between checkpoints (0 = only on preemption and at the end)
    keep: int = 3  # newest complete checkpoints kept
    dir: str = ""  # default: <train.out_dir>/checkpoints


@dataclass
class WandbConfig:
    mode: str = "offline"  # online | offline | disabled
    project: str = "sam2_scale"
    entity: str = ""
    name: str = ""  # default: the name of train.out_dir


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _type_name(tp):
    return getattr(tp, "__name__", str(tp))


def _convert(value, tp, where):
    """Check `value` against the annotation `tp`; returns the value (ints widened to floats)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if tp is float:
        if isinstance(value, str):
            # PyYAML reads 1e-4 (no dot) as a string; a float field takes it as the number it is.
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int or tp is bool or tp is str:
        if type(value) is not tp:
            raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__})")
        return value
    if tp in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if args and args[-1] is not Ellipsis:
            items = [_convert(v, args[0] if len(args) == 1 else args[i], f"{where}[{i}]") for i, v in enumerate(value)]
        else:
            items = list(value)
        return tuple(items) if (tp is tuple or origin is tuple) else items
    raise ConfigError(f"{where}: unsupported field type {tp}")


def _build(cls, data, where):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(fields)}")
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}" if where else name) for name, value in data.items()}
    return cls(**kwargs)


def _set_dotted(data, dotted, value):
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = value


# String options with a fixed set of values: (section, key) -> allowed values.
CHOICES = {
    ("train", "strategy"): ("ddp", "deepspeed", "fsdp"),
    ("train", "precision"): ("bf16", "fp32"),
    ("wandb", "mode"): ("online", "offline", "disabled"),
    ("optim", "schedule"): ("cosine", "constant", "rsqrt"),
    ("model", "size"): ("tiny", "small", "base_plus", "large"),
    ("train", "compile_backend"): ("inductor", "aot_eager", "eager"),
}


def _check_choices(cfg):
    for (section, key), allowed in CHOICES.items():
        value = getattr(getattr(cfg, section, None), key, None)
        if value is not None and value not in allowed:
            raise ConfigError(f"{section}.{key}: {value!r} is not one of {', '.join(allowed)}")
    regions = getattr(getattr(cfg, "model", None), "activation_checkpointing", [])
    unknown = [r for r in regions if r not in CHECKPOINT_REGIONS]
    if unknown:
        raise ConfigError(f"model.activation_checkpointing: {unknown} not among {', '.join(CHECKPOINT_REGIONS)}")


def load_config(path=None, overrides=(), schema=Config):
    """Load YAML `path` (or defaults), apply `key.sub=value` overrides, validate."""
    data = {}
    source = path or "<defaults>"
    if path:
        with open(path) as f:
            try:
                data = yaml.safe_load(f) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(raw))
    try:
        cfg = _build(schema, data, "")
        _check_choices(cfg)
        return cfg
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
