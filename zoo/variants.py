"""Checks of builder arguments and of a weights folder's ``config.json`` against a model's cards, before building.

A ``config.json`` (from ``python -m zoo convert``/``export``, a training run or the Hub) names the
variant its weights were made with, and :func:`zoo.create_model` builds that variant before the
strict load compares the weights' shapes. A hostile or careless file could otherwise ask for a
head of millions of dimensions and exhaust memory before any shape is compared. So a config is
checked first:

* its structure: a JSON object; ``variant`` an object; ``variant_tag`` one of the cards' tags;
  ``preprocessing`` an object;
* every ``variant`` key is an argument of the architecture's builder, of the annotated type;
* every integer (and every integer of a size list) lies between 0 (1 where no card or default
  uses 0) and the largest value that the builder's default or any card's variant uses, position
  by position: no variant beyond the largest the cards know; floats are finite and, for builder
  arguments, within [0, 1] or the cards' own range;
* the ``preprocessing`` record has the keys and types of the architecture's record, its sizes
  bounded the same way (an image size of 100000 would make every transform allocate gigabytes).

Arguments passed explicitly by the caller (keyword arguments of ``create_model``, a recipe's
``model.args``) are checked for keys and types only: their size is the caller's choice.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Sequence
from typing import Any, Callable, Iterable, Mapping

from zoo.errors import CheckpointError, InputError, UnknownNameError
from zoo.models.cards import ModelInfo
from zoo.registry import did_you_mean

__all__ = ["builder_parameters", "check_builder_args", "check_config"]

_NUMBER = (int, float)


def _signature_hints(fn: Callable) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    params = {n: p for n, p in inspect.signature(fn).parameters.items()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    try:
        hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
    except Exception:  # noqa: BLE001 - an annotation that cannot be resolved: types are then not checked
        hints = {}
    if inspect.isclass(fn):
        hints.pop("return", None)  # __init__ returns None; the builder returns the class itself
    return params, hints


def builder_parameters(info: ModelInfo) -> tuple[dict[str, inspect.Parameter], dict[str, Any]]:
    """The builder's named parameters and their type hints.

    A builder that only forwards ``**kwargs`` to the class it returns (``def cvft_vgg(**kwargs) -> CVFT``)
    takes that class's constructor arguments.
    """
    params, hints = _signature_hints(info.builder)
    forwards = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(info.builder).parameters.values())
    returned = hints.get("return")
    if forwards and inspect.isclass(returned) and returned is not type(None):
        more, more_hints = _signature_hints(returned)
        params = {**more, **params}
        hints = {**more_hints, **hints}
    hints.pop("return", None)
    return params, hints


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a type hint (int, float, bool, str, None, unions, sequences; others pass)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, _NUMBER) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return all(_fits(v, args[0]) for v in value) if args else True
    return True


def _known_values(key: str, default: Any, records: list[Mapping[str, Any]]) -> list[Any]:
    values = [r[key] for r in records if key in r]
    if default is not inspect.Parameter.empty and default is not None:
        values.append(default)
    return values


def _check_range(where: str, value: Any, known: list[Any], unit_floats: bool) -> None:
    """Integers (also inside size lists) within [0 or 1, largest known]; floats finite (and in [0, 1] or the known range)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            at_i = [k[i] for k in known if isinstance(k, (list, tuple)) and len(k) > i]
            _check_range(f"{where}[{i}]", item, at_i or [k for k in known if isinstance(k, _NUMBER)], unit_floats)
        return
    numbers = [k for k in known if isinstance(k, _NUMBER) and not isinstance(k, bool)]
    if isinstance(value, float) or any(isinstance(k, float) for k in numbers):
        if not math.isfinite(value):
            raise InputError(f"{where}={value} is not a finite number")
        if unit_floats:
            low, high = min([0.0, *numbers]), max([1.0, *numbers])
            if not low <= value <= high:
                raise InputError(f"{where}={value} is outside [{low:g}, {high:g}]")
        return
    if isinstance(value, int) and numbers:
        low, high = min(1, *numbers), max(numbers)
        if not low <= value <= high:
            raise InputError(f"{where}={value} is outside [{low}, {high}], the range of the model's cards "
                             f"(known values: {', '.join(map(str, sorted(set(numbers))))}); a value you trust "
                             "can be passed explicitly (a create_model keyword argument)")


def check_builder_args(info: ModelInfo, args: Mapping[str, Any], where: str, bounded: bool = True) -> dict[str, Any]:
    """``args`` checked against the builder of ``info``: known keys, annotated types and (``bounded``) ranges.

    Raises:
        InputError: naming ``where``, the key and what it accepts.
    """
    if not isinstance(args, Mapping):
        raise InputError(f"{where}: expected an object of builder arguments, got {type(args).__name__}")
    params, hints = builder_parameters(info)
    cards = [dict(card.args) for card in info.variants.values()]
    for key, value in args.items():
        if key not in params:
            raise InputError(f"{where}: {info.name} has no argument {key!r}.{did_you_mean(str(key), params, 0.6)} "
                             f"Its arguments: {', '.join(params) or 'none'}")
        hint = hints.get(key, inspect.Parameter.empty)
        if not _fits(value, hint):
            raise InputError(f"{where}.{key}={value!r} is a {type(value).__name__}; {info.name} expects {_type_name(hint)}")
        if bounded:
            _check_range(f"{where}.{key}", value, _known_values(key, params[key].default, cards), unit_floats=True)
    return dict(args)


def _check_preprocessing(info: ModelInfo, record: Any, where: str) -> None:
    if not isinstance(record, Mapping):
        raise InputError(f"{where}: expected an object, got {type(record).__name__}")
    params, hints = _signature_hints(info.transforms)
    records = [info.preprocessing_record(tag) for tag in info.variants]
    for key, value in record.items():
        if key not in params:
            raise InputError(f"{where}: {info.name}'s preprocessing has no field {key!r}. "
                             f"Its fields: {', '.join(params)}")
        hint = hints.get(key, inspect.Parameter.empty)
        if not _fits(value, hint):
            raise InputError(f"{where}.{key}={value!r} is a {type(value).__name__}; expected {_type_name(hint)}")
        _check_range(f"{where}.{key}", value, _known_values(key, params[key].default, records), unit_floats=False)


def check_config(info: ModelInfo, config: Any, source: str, asked: Iterable[str] = ()) -> dict[str, Any]:
    """A weights folder's ``config.json`` checked against ``info``'s cards before anything is built.

    Args:
        info: the architecture the weights are loaded into.
        config: the parsed ``config.json``.
        source: where it came from (a path or ``hf-hub:`` id), named in every error.
        asked: builder arguments the caller passes explicitly: they replace the config's, which
            are then not checked.

    Raises:
        CheckpointError: the config is not an object, or names another architecture.
        UnknownNameError: ``variant_tag`` is not one of the cards' (the message lists them).
        InputError: a ``variant`` or ``preprocessing`` entry of the wrong key, type or range.
    """
    where = f"{source} (config.json)"
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{where}: expected a JSON object, got {type(config).__name__}")
    arch = config.get("architecture")
    if arch is not None and arch != info.name:
        raise CheckpointError(f"{where} holds weights of {arch!r}, not {info.name}")
    tag = config.get("variant_tag")
    if tag is not None:
        if not isinstance(tag, str):
            raise InputError(f"{where}: variant_tag must be a string, got {type(tag).__name__}")
        try:
            info.variant(tag)
        except UnknownNameError as err:
            raise UnknownNameError(f"{where}: variant_tag {tag!r} is not a variant of the cards: {err}") from None
    variant = config.get("variant")
    if variant is not None:
        if not isinstance(variant, Mapping):
            raise InputError(f"{where}: variant: expected an object of builder arguments, got {type(variant).__name__}")
        skip = set(asked)
        check_builder_args(info, {k: v for k, v in variant.items() if k not in skip}, f"{where}: variant")
    if config.get("preprocessing") is not None:
        _check_preprocessing(info, config["preprocessing"], f"{where}: preprocessing")
    return dict(config)
