"""The one strict YAML-to-dataclass loader of the training side: runs, degradations and clip selection.

Each config is a tree of frozen dataclasses. The same rules hold for every file, so a typo in a 300k-iteration
config fails in the first second instead of silently falling back to a default:

- unknown keys are errors that name the key, the keys known at that place and the file;
- ``bool`` takes only ``true``/``false``; ``int`` only integers (not ``true``, not ``2.0``); ``float`` takes
  integers and floats, and strings that spell a number (YAML 1.1 reads ``1e-4``, without a dot, as a string);
  ``str`` only strings; an enum (``StrEnum``) one of its values; ``None`` only where the field is optional;
- a list where a field holds a fixed-size tuple must have that many items; a single value where a list of any
  length is expected is a one-item list (``paths: clip.mp4``);
- :data:`Weights` fields (weighted choices, per-scorer numbers) are written as a mapping ``{name: number}``;
- each dataclass checks its values in ``__post_init__`` and raises :class:`ConfigError`; the loader adds the
  source (file name, ``--set``) to every message.

``--set a.b=value`` overrides are parsed with ``yaml.safe_load`` (never ``eval``) and checked against the
dataclass tree before they are applied.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "Weights", "apply_overrides", "from_data", "load_yaml_config", "read_yaml", "to_data"]

Weights = tuple[tuple[str, float], ...]
"""Named numbers (weighted choices, per-scorer thresholds), written in YAML as a mapping ``{name: number}``."""

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A config that cannot be used. The message names the source (file or ``--set``), the key and the value."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.message = message
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)

    def with_source(self, source: str) -> ConfigError:
        """The same error with ``source`` named (kept when one is already named)."""
        return self if self.source else ConfigError(self.message, source=source)


# ---------------------------------------------------------------------------------------------------------------
# data -> dataclass


def from_data[T](cls: type[T], data: Any, *, source: str = "<dict>") -> T:  # noqa: ANN401
    """Build dataclass ``cls`` from plain (YAML) data with the rules above; errors name ``source``."""
    try:
        return _build(cls, data, prefix="")
    except ConfigError as e:
        raise e.with_source(source) from None


def _build(cls: type, data: Any, *, prefix: str) -> Any:  # noqa: ANN401
    if not isinstance(data, Mapping):
        where = f"key {prefix[:-1]!r}" if prefix else "the top level"
        raise ConfigError(f"{where} must be a mapping of {cls.__name__} fields, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for k in data:
        if k not in names:
            known = ", ".join(prefix + n for n in names)
            raise ConfigError(f"unknown key {prefix + str(k)!r} (known keys here: {known})")
    kwargs = {k: _convert(hints[k], v, prefix + k) for k, v in data.items()}
    missing = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing required key {prefix + missing[0]!r}")
    return cls(**kwargs)


def _show(value: Any) -> str:  # noqa: ANN401
    return f"{value!r} ({type(value).__name__})"


def _convert(tp: Any, value: Any, key: str) -> Any:  # noqa: ANN401
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"key {key!r} must be {expected}, got {_show(value)}")

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, prefix=key + ".")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        allowed = [m.value for m in tp]
        if value not in allowed:
            raise fail(f"one of {', '.join(map(str, allowed))}")
        return tp(value)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise fail("set (not null)")
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        if not math.isfinite(value):
            raise fail("a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if tp == Weights:
        if isinstance(value, Sequence) and not isinstance(value, str) and not value:
            return ()
        if not isinstance(value, Mapping):
            raise fail("a mapping {name: number}")
        return tuple((str(k), _convert(float, v, f"{key}.{k}")) for k, v in value.items())
    if origin is tuple:
        args = typing.get_args(tp)
        variable = len(args) == 2 and args[1] is Ellipsis
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
            if variable and value is not None and not isinstance(value, Mapping):
                value = [value]  # a single item where a list is expected
            else:
                raise fail("a list")
        if variable:
            return tuple(_convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise fail(f"a list of {len(args)} items")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        kt, vt = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise fail("a mapping")
        return {_convert(kt, k, key): _convert(vt, v, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"configio: unsupported annotation {tp!r} for {key!r}")  # a bug in a config class


# ---------------------------------------------------------------------------------------------------------------
# dataclass -> data


def to_data(obj: Any) -> dict[str, Any]:  # noqa: ANN401
    """Plain YAML-safe data (enums as values, tuples as lists, :data:`Weights` as mappings) that
    :func:`from_data` reads back to an equal object."""
    return _plain(obj, type(obj))


def _plain(value: Any, tp: Any) -> Any:  # noqa: ANN401
    if dataclasses.is_dataclass(value):
        hints = typing.get_type_hints(type(value))
        return {f.name: _plain(getattr(value, f.name), hints[f.name]) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, enum.Enum):
        return value.value
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next((a for a in typing.get_args(tp) if a is not type(None)), Any)
    if tp == Weights:
        return {k: float(w) for k, w in value}
    if isinstance(value, (tuple, list)):
        args = typing.get_args(tp)
        inner = args[0] if len(args) == 2 and args[1] is Ellipsis else Any
        return [_plain(v, inner) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, Any) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------------------------------------------
# files and overrides


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML file's top-level mapping (an empty file is ``{}``); :class:`ConfigError` when missing or invalid."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {str(p)!r}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{str(p)!r} is not valid YAML: {e}") from None
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"the top level must be a mapping, got {type(data).__name__}", source=str(p))
    return dict(data)


def apply_overrides(cls: type, data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` with ``a.b=value`` overrides applied; keys are checked against dataclass ``cls``."""
    out: dict[str, Any] = _copy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"expected KEY=VALUE (e.g. train.lr_g=1e-4), got {item!r}", source="--set")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        _check_key_path(cls, parts, item)
        node = out
        for p in parts[:-1]:
            child = node.get(p)
            if not isinstance(child, dict):
                child = {}
                node[p] = child
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{item!r}: the value is not valid YAML: {e}", source="--set") from None
    return out


def _check_key_path(cls: Any, parts: list[str], item: str) -> None:  # noqa: ANN401
    for i, p in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            if cls == Weights or typing.get_origin(cls) is dict:  # a partial mapping would drop the other entries
                raise ConfigError(f"{item!r}: set the whole mapping, e.g. {'.'.join(parts[:i])}={{a: 1, b: 2}}",
                                  source="--set")
            raise ConfigError(f"{item!r}: {'.'.join(parts[:i])!r} has no sub-keys", source="--set")
        hints = typing.get_type_hints(cls)
        if p not in hints:
            known = ", ".join(".".join([*parts[:i], n]) for n in hints)
            raise ConfigError(f"{item!r}: unknown key {'.'.join(parts[: i + 1])!r} (known: {known})", source="--set")
        cls = hints[p]
        if typing.get_origin(cls) in (typing.Union, types.UnionType):
            cls = next(a for a in typing.get_args(cls) if a is not type(None))


def _copy(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in d.items()}


def load_yaml_config[T](cls: type[T], path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> T:
    """Read ``path``, apply ``--set`` overrides and build ``cls``; every error is a :class:`ConfigError`."""
    data = read_yaml(path)
    source = str(path) + (" (with --set overrides)" if overrides else "")
    return from_data(cls, apply_overrides(cls, data, overrides), source=source)
