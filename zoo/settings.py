"""Typed settings: dataclasses read from plain mappings (YAML), with errors that name the key.

Recipes and every training task's ``task_args`` are declared as dataclasses; :func:`parse` checks a
mapping against one: unknown keys (with the closest known ones), missing required keys, and each
value against its field's type hint and constraints (:func:`setting`). One implementation serves
every setting of the zoo, so a recipe key and a task argument fail the same way.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``Any``, ``Literal[...]``,
``X | None``, unions of those, ``list[T]``, ``tuple[T, ...]``, ``dict[str, Any]`` (a free-form
mapping read by someone else), and nested dataclasses (sections).
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union

from zoo.errors import InputError
from zoo.registry import did_you_mean

T = TypeVar("T")


class SettingsError(InputError):
    """A mapping does not fit its settings dataclass; the message names the key."""


def setting(default: Any = dataclasses.MISSING, *, minimum: float | None = None, positive: bool = False,
            length: int | None = None, help: str = "") -> Any:
    """A dataclass field with constraints: ``minimum`` (inclusive), ``positive`` (> 0), a list's ``length``.

    Mutable defaults (lists, dicts) are copied for each instance.
    """
    metadata = {"minimum": minimum, "positive": positive, "length": length, "help": help}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def describe(tp: Any, meta: dict[str, Any] | None = None) -> str:
    """What a value of type ``tp`` must be, in words (for error messages)."""
    meta = meta or {}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int or tp is float:
        word = "an integer" if tp is int else "a number"
        if meta.get("positive"):
            return f"{word} > 0"
        return word + (f" >= {meta['minimum']}" if meta.get("minimum") is not None else "")
    if tp is str:
        return "a string"
    if tp is Any:
        return "a value"
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a, meta) for a in args)
    if origin in (list, tuple):
        count = meta.get("length") or "any number of"
        return f"a list of {count} values, each {describe(args[0], {k: v for k, v in meta.items() if k != 'length'})}"
    if origin is dict or tp is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def check(tp: Any, value: Any, path: str, meta: dict[str, Any] | None = None) -> Any:
    """``value`` checked against ``tp`` (and the field's constraints), normalised; raises SettingsError."""
    meta = meta or {}
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def fail() -> SettingsError:
        return SettingsError(f"{path}: expected {describe(tp, meta)}, got {value!r}")

    if dataclasses.is_dataclass(tp):
        return parse(tp, value, path, meta.get("noun", "key"))
    if tp is Any:
        return value
    if tp is type(None):
        if value is not None:
            raise fail()
        return None
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        specific: SettingsError | None = None
        for option in options:
            try:
                return check(option, value, path, meta)
            except SettingsError as err:
                if len(options) == 1:  # "X or null": X's own message says more (e.g. "quote it in YAML")
                    specific = err
        raise specific or fail()
    if tp is bool:
        if not isinstance(value, bool):
            raise fail()
        return value
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # YAML reads 512_32 as the integer 51232 and 1.0 as a float
            raise SettingsError(f"{path}: expected a string, got the number {value!r}; quote it in YAML")
        if not isinstance(value, str):
            raise fail()
        return value
    if tp is int or tp is float:
        if tp is float and isinstance(value, str):
            # YAML 1.1 reads "6e-5" (no dot) as a string: accept any string Python reads as a float.
            try:
                value = float(value)
            except ValueError:
                raise fail() from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (tp is int and not isinstance(value, int)):
            raise fail()
        number = tp(value)
        if (meta.get("positive") and not number > 0) or (meta.get("minimum") is not None and number < meta["minimum"]):
            raise fail()
        return number
    if origin is Literal:
        if value not in args:
            hint = did_you_mean(str(value), [str(a) for a in args])
            raise SettingsError(f"{path}: expected {describe(tp)}, got {value!r}.{hint}".rstrip("."))
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)) or (meta.get("length") is not None and len(value) != meta["length"]):
            raise fail()
        items = [check(args[0], v, f"{path}[{i}]", {k: w for k, w in meta.items() if k != "length"})
                 for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise fail()
        return dict(value)
    raise TypeError(f"{path}: settings of type {tp!r} are not supported")


def unknown_key(key: str, known: list[str], path: str, noun: str = "key") -> SettingsError:
    where = f"{path}.{key}" if path else str(key)
    return SettingsError(f"unknown {noun} {where!r}.{did_you_mean(str(key), known)} Allowed keys: {', '.join(known)}")


def parse(cls: type[T], value: Any, path: str = "", noun: str = "key") -> T:
    """An instance of the dataclass ``cls`` from the mapping ``value`` (``None`` = empty), checked.

    ``noun`` names what the keys are in messages (e.g. ``"recipe key"``).
    """
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise SettingsError(f"{path or cls.__name__}: expected a mapping, got {value!r}")
    hints = _hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in value:
        if key not in known:
            raise unknown_key(key, known, path, noun)
    out = {}
    for f in dataclasses.fields(cls):
        where = f"{path}.{f.name}" if path else f.name
        if f.name in value:
            out[f.name] = check(hints[f.name], value[f.name], where, dict(f.metadata))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SettingsError(f"{where}: required key is missing")
    try:
        return cls(**out)
    except (TypeError, ValueError) as err:  # the dataclass's own checks (__post_init__) of several keys
        raise SettingsError(f"{path or cls.__name__}: {err}") from None


def field_type(cls: type, path: list[str], text: str, noun: str = "key") -> tuple[Any, dict[str, Any]] | None:
    """Type hint and constraints of the key at ``path`` inside ``cls`` (None inside a free-form mapping)."""
    tp: Any = cls
    meta: dict[str, Any] = {}
    for i, key in enumerate(path):
        if typing.get_origin(tp) in (Union, types.UnionType):
            sections = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
            tp = sections[0] if sections else tp
        if typing.get_origin(tp) is dict or tp is Any:
            return None
        if not dataclasses.is_dataclass(tp):
            raise SettingsError(f"override {text!r}: {'.'.join(path[:i])} is not a mapping")
        fields = {f.name: f for f in dataclasses.fields(tp)}
        if key not in fields:
            raise SettingsError(f"override {text!r}: {unknown_key(key, list(fields), '.'.join(path[:i]), noun)}")
        tp, meta = _hints(tp)[key], dict(fields[key].metadata)
    return tp, meta


def takes_str(tp: Any) -> bool:
    """Whether a string is a valid value of ``tp``."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        return any(takes_str(a) for a in typing.get_args(tp))
    return tp is str or (typing.get_origin(tp) is Literal and any(isinstance(a, str) for a in typing.get_args(tp)))


def as_dict(settings: Any) -> Any:
    """A settings dataclass as plain dicts and lists (tuples become lists), e.g. to write YAML."""
    if dataclasses.is_dataclass(settings):
        return {f.name: as_dict(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    if isinstance(settings, (list, tuple)):
        return [as_dict(v) for v in settings]
    if isinstance(settings, dict):
        return {k: as_dict(v) for k, v in settings.items()}
    return settings


def parse_pretrained(value: bool | str | None) -> bool | str | None:
    """A ``--pretrained`` value from the command line: ``true``/``false`` (any case) become booleans,
    every other string (a weight source name, a path, ``hf-hub:...``) and None stay as they are."""
    if isinstance(value, str):
        return {"true": True, "false": False}.get(value.lower(), value)
    return value
