"""YAML -> typed, validated config. Unknown keys and wrong types are errors that name them.

A config file holds sections (`model`, `prompts`, `loss`, `optim`, ...), each a dataclass.
Dotted overrides (`optim.base_lr=1e-4`) are parsed as YAML values and validated the same way.
"""

import dataclasses
import typing
from dataclasses import dataclass, field

import yaml

from .data.streams import DataConfig
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
    activation_checkpointing: bool = False
    init_checkpoint: str = ""  # a Meta-format .pt to start from ("" = random init)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)


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
        return _build(schema, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
