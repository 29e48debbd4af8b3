"""YAML -> typed, validated config. Unknown keys, wrong types and values that cannot work are
errors that name the key.

A config file holds sections (`model`, `prompts`, `loss`, `optim`, ...), each a dataclass.
Dotted overrides (`optim.base_lr=1e-4`) are parsed as YAML values and validated the same way.
`validate` refuses, before any work, values that would fail late with an unrelated error or never
produce a clip (a zero accumulation or log interval, a dataset of unknown kind, ...).
"""

import dataclasses
import os
import typing
from dataclasses import dataclass, field

import yaml

from .data.streams import DataConfig
from .eval import EvalConfig
from .model import CHECKPOINT_REGIONS
from .model.attention import ATTENTION_BACKENDS
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
    # Scaled-dot-product attention kernels in order of preference (flash, efficient, cudnn,
    # math); [] leaves the choice to PyTorch. benchmarks/gpu_throughput.py times them.
    attention_backends: list = field(default_factory=list)
    init_checkpoint: str = ""  # a Meta-format .pt to start from ("" = random init)


@dataclass
class TrainConfig:
    out_dir: str = "runs/train"  # config.yaml, metrics.jsonl, checkpoints/, wandb/
    strategy: str = "ddp"  # ddp | deepspeed | fsdp
    deepspeed_config: str = "ds_configs/zero2.json"  # ZeRO stage and communication settings
    precision: str = "bf16"  # bf16 (autocast; bf16 params under FSDP/DeepSpeed) | fp32
    grad_accum_steps: int = 1  # global batch = batch_size x grad_accum_steps x world size
    # Resuming on another world size recomputes grad_accum_steps to keep the global batch and
    # refuses when it cannot; true trains on with the configured grad_accum_steps instead.
    allow_global_batch_change: bool = False
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
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if tp in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis and len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)} ({value!r})")
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


def _list_index(node, key, dotted):
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"override {dotted}: {key!r} is not an index of a list of {len(node)} item(s)")
    return int(key)


def _set_dotted(data, dotted, value):
    """`a.b.c=v`; a number picks a list item (`data.datasets.0.num_frames=8`)."""
    keys = dotted.split(".")
    node = data
    for key, following in zip(keys[:-1], keys[1:]):
        if isinstance(node, list):
            node = node[_list_index(node, key, dotted)]
        elif following.isdigit() and not isinstance(node.get(key), list):
            raise ConfigError(f"override {dotted}: the config file lists no {key} to pick item {following} from")
        else:
            node = node.setdefault(key, {})
        if not isinstance(node, dict | list):
            raise ConfigError(f"override {dotted}: {key} is not a section or a list")
    if isinstance(node, list):
        node[_list_index(node, keys[-1], dotted)] = value
    else:
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
    for key, allowed in (("activation_checkpointing", CHECKPOINT_REGIONS), ("attention_backends", ATTENTION_BACKENDS)):
        unknown = [r for r in getattr(getattr(cfg, "model", None), key, []) if r not in allowed]
        if unknown:
            raise ConfigError(f"model.{key}: {unknown} not among {', '.join(allowed)}")


def _require(ok, key, problem):
    if not ok:
        raise ConfigError(f"{key}: {problem}")


def _at_least(value, minimum, key, note=""):
    _require(value >= minimum, key, f"must be >= {minimum}, got {value!r}{note}")


def _validate_train(cfg):
    t, c, o = cfg.train, cfg.checkpoint, cfg.optim
    _at_least(t.grad_accum_steps, 1, "train.grad_accum_steps")
    _at_least(t.log_every, 1, "train.log_every")
    _at_least(t.steps_per_epoch, 1, "train.steps_per_epoch")
    _at_least(t.max_nonfinite_steps, 1, "train.max_nonfinite_steps")
    _require(t.preempt_grace_s > 0, "train.preempt_grace_s", f"must be > 0 seconds, got {t.preempt_grace_s!r}")
    _at_least(t.grad_clip, 0, "train.grad_clip", " (0 = no clipping)")
    _require(0 <= t.ema_decay < 1, "train.ema_decay", f"must be in [0, 1) (0 = off), got {t.ema_decay!r}")
    _at_least(c.every, 0, "checkpoint.every", " (0 = only on preemption and at the end)")
    _at_least(c.keep, 0, "checkpoint.keep", " (0 = keep all)")
    _at_least(o.total_steps, 1, "optim.total_steps")
    _require(
        0 <= o.warmup_steps <= o.total_steps,
        "optim.warmup_steps",
        f"must be between 0 and optim.total_steps ({o.total_steps}), got {o.warmup_steps}",
    )
    if t.strategy == "deepspeed":
        # Relative paths are opened from the working directory, as the engine does.
        _require(
            os.path.isfile(t.deepspeed_config),
            "train.deepspeed_config",
            f"{t.deepspeed_config!r} is not a file (from {os.getcwd()}); ds_configs/ holds zero1/2/3.json",
        )


def _validate_data(cfg):
    d = cfg.data
    _require(d.resolution > 0, "data.resolution", f"must be > 0, got {d.resolution}")
    _require(
        cfg.model.image_size == d.resolution,
        "model.image_size",
        f"{cfg.model.image_size} differs from data.resolution {d.resolution}: the loader makes clips of "
        "data.resolution pixels and the model's position embeddings are built for model.image_size; set both",
    )
    _require(d.resolution % 32 == 0, "data.resolution", f"must be a multiple of 32 (the model's stride), got {d.resolution}")
    _at_least(d.num_workers, 0, "data.num_workers")
    _at_least(d.shuffle_buffer, 0, "data.shuffle_buffer")
    _at_least(d.max_skipped_in_a_row, 1, "data.max_skipped_in_a_row")
    names = [ds.name for ds in d.datasets]
    for i, ds in enumerate(d.datasets):
        key = f"data.datasets[{i}]"
        _require(ds.name and names.count(ds.name) == 1, f"{key}.name", f"must be a unique, non-empty name, got {ds.name!r}")
        key = f"{key} ({ds.name})"
        _require(bool(ds.shards), f"{key}.shards", "is empty; give a glob or brace pattern of shard tars")
        _require(ds.kind in ("video", "image"), f"{key}.kind", f"{ds.kind!r} is not one of video, image")
        _at_least(ds.batch_size, 1, f"{key}.batch_size")
        _at_least(ds.num_frames, 1, f"{key}.num_frames")
        _require(
            ds.kind == "video" or ds.num_frames == 1,
            f"{key}.num_frames",
            f"an image dataset gives 1-frame clips, got {ds.num_frames}",
        )
        _at_least(ds.max_num_objects, 1, f"{key}.max_num_objects")
        _at_least(ds.weight, 0, f"{key}.weight")
        _require(0 <= ds.reverse_time_prob <= 1, f"{key}.reverse_time_prob", f"must be in [0, 1], got {ds.reverse_time_prob}")
    if d.datasets:
        _require(sum(ds.weight for ds in d.datasets) > 0, "data.datasets[].weight", "all weights are 0: no dataset is ever drawn")


def validate(cfg):
    """Refuse values that cannot work; the error names the key and what is wrong."""
    _validate_train(cfg)
    _validate_data(cfg)
    _at_least(cfg.eval.every, 0, "eval.every", " (0 = only at the end)")
    _at_least(cfg.eval.protocol_every, 0, "eval.protocol_every", " (0 = only at the end)")
    _at_least(cfg.eval.protocol_max_videos, 0, "eval.protocol_max_videos", " (0 = all)")
    if cfg.eval.protocol != "none":
        _require(
            bool(cfg.eval.protocol_data or cfg.eval.shards),
            "eval.protocol_data",
            f"eval.protocol={cfg.eval.protocol} needs held-out videos: a DAVIS-style folder here, or eval.shards",
        )


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
    try:
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r}: expected key.sub=value")
            key, raw = item.split("=", 1)
            _set_dotted(data, key.strip(), yaml.safe_load(raw))
        cfg = _build(schema, data, "")
        _check_choices(cfg)
        if schema is Config:
            validate(cfg)
        return cfg
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
