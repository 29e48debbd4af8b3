"""YAML -> typed config: a file of sections (schema.py), then dotted overrides
(`optim.base_lr=1e-4`, `data.datasets.0.num_frames=8`) parsed as YAML values; unknown keys, wrong
types and values outside a `Literal`'s choices are errors that name the key. `dump` writes a
config back as YAML with each field's comment from schema.py beside it.
"""

import dataclasses
import functools
import inspect
import io
import tokenize
import typing

import yaml

from .rules import ConfigError, validate
from .schema import Config


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
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, choices))}")
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


def load_config(path=None, overrides=()):
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
        cfg = _build(Config, data, "")
        validate(cfg)
        return cfg
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


@functools.cache
def field_docs(cls):
    """{field name: its comment in the schema}: the comment on the field's line, else the comment
    lines just above it."""
    lines, _ = inspect.getsourcelines(cls)
    comments = {
        tok.start[0]: tok.string.lstrip("#").strip()
        for tok in tokenize.generate_tokens(io.StringIO("".join(lines)).readline)
        if tok.type == tokenize.COMMENT
    }
    names = {f.name for f in dataclasses.fields(cls)}
    docs = {}
    for number, line in enumerate(lines, 1):
        name = line.strip().split(":", 1)[0]
        if name not in names or name in docs:
            continue
        above = number - 1
        while above in comments and lines[above - 1].lstrip().startswith("#"):
            above -= 1
        docs[name] = comments.get(number) or " ".join(comments[n] for n in range(above + 1, number))
    return docs


def _flow(value):
    text = yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True, width=10**6)
    return text.strip().removesuffix("...").strip()


def _dump_fields(obj, indent, out, first_lead=None):
    docs = field_docs(type(obj))
    for i, f in enumerate(dataclasses.fields(obj)):
        value, lead = getattr(obj, f.name), " " * indent
        if i == 0 and first_lead is not None:
            lead = first_lead
        comment = f"  # {docs[f.name]}" if docs.get(f.name) else ""
        if indent == 0 and out:
            out.append("")
        if dataclasses.is_dataclass(value):
            out.append(f"{lead}{f.name}:{comment}")
            _dump_fields(value, indent + 2, out)
        elif value and isinstance(value, list) and dataclasses.is_dataclass(value[0]):
            out.append(f"{lead}{f.name}:{comment}")
            for item in value:
                _dump_fields(item, indent + 4, out, first_lead=" " * (indent + 2) + "- ")
        else:
            out.append(f"{lead}{f.name}: {_flow(value)}{comment}")


def dump(cfg):
    """`cfg` as YAML with each field's comment from schema.py beside it; loads back to an equal config."""
    out = []
    _dump_fields(cfg, 0, out)
    return "\n".join(out) + "\n"
