"""Training recipes: declarative YAML files in ``zoo/recipes/`` (schema in its README.md).

:func:`resolve_recipe` loads one by name, applies ``key=value`` overrides (dotted keys, values
read as YAML) and validates every key and value, so that a typo fails with a one-line error
naming the key, before any model is built or any data is read.
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from zoo.data.synthetic import SYNTHETIC_SETS
from zoo.engine.schedules import OPTIMIZERS, REQUIRED, SCHEDULER_COMMON, SCHEDULER_PARAMS
from zoo.errors import InputError

#: environment variable naming another recipes folder (the CLI's ``--recipes-dir`` wins over it)
RECIPES_DIR_ENV = "ZOO_RECIPES_DIR"


class RecipeError(InputError):
    """A recipe is missing, unreadable, or has an unknown key or a bad value."""


def default_recipes_dir() -> Path:
    """``$ZOO_RECIPES_DIR``, else the recipes shipped inside the package (``zoo/recipes``)."""
    if os.environ.get(RECIPES_DIR_ENV):
        return Path(os.environ[RECIPES_DIR_ENV])
    return Path(os.fspath(importlib.resources.files("zoo") / "recipes"))


# --------------------------------------------------------------------------- value types


class _Type:
    """A value check: ``check(value, path)`` returns the (normalised) value or raises RecipeError."""

    what = "a value"

    def check(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def fail(self, value: Any, path: str) -> RecipeError:
        return RecipeError(f"{path}: expected {self.what}, got {value!r}")


class _Any(_Type):
    def check(self, value: Any, path: str) -> Any:
        return value


class _Str(_Type):
    what = "a string"

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # YAML reads 512_32 as the integer 51232 and 1e3 as a string, 1.0 as a float
            raise RecipeError(f"{path}: expected a string, got the number {value!r}; quote it in YAML")
        if not isinstance(value, str):
            raise self.fail(value, path)
        return value


class _Bool(_Type):
    what = "true or false"

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, bool):
            raise self.fail(value, path)
        return value


class _Int(_Type):
    def __init__(self, minimum: int | None = None) -> None:
        self.minimum = minimum
        self.what = "an integer" + (f" >= {minimum}" if minimum is not None else "")

    def check(self, value: Any, path: str) -> Any:
        if isinstance(value, bool) or not isinstance(value, int) or (self.minimum is not None and value < self.minimum):
            raise self.fail(value, path)
        return value


class _Float(_Type):
    def __init__(self, minimum: float | None = None, positive: bool = False) -> None:
        self.minimum, self.positive = minimum, positive
        self.what = "a number" + (" > 0" if positive else f" >= {minimum}" if minimum is not None else "")

    def check(self, value: Any, path: str) -> Any:
        # YAML 1.1 reads "6e-5" (no dot) as a string: accept any string Python reads as a float.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise self.fail(value, path) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(value, path)
        value = float(value)
        if (self.positive and not value > 0) or (self.minimum is not None and value < self.minimum):
            raise self.fail(value, path)
        return value


class _Choice(_Type):
    def __init__(self, *options: str) -> None:
        self.options = options
        self.what = "one of " + ", ".join(options)

    def check(self, value: Any, path: str) -> Any:
        if value not in self.options:
            close = difflib.get_close_matches(str(value), self.options, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise RecipeError(f"{path}: expected {self.what}, got {value!r}{hint}")
        return value


class _Optional(_Type):
    def __init__(self, inner: _Type) -> None:
        self.inner = inner
        self.what = f"{inner.what} or null"

    def check(self, value: Any, path: str) -> Any:
        return None if value is None else self.inner.check(value, path)


class _Either(_Type):
    def __init__(self, *options: _Type) -> None:
        self.options = options
        self.what = " or ".join(o.what for o in options)

    def check(self, value: Any, path: str) -> Any:
        for option in self.options:
            try:
                return option.check(value, path)
            except RecipeError:
                pass
        raise self.fail(value, path)


class _List(_Type):
    def __init__(self, item: _Type, length: int | None = None) -> None:
        self.item, self.length = item, length
        self.what = f"a list of {length or 'any number of'} values, each {item.what}"

    def check(self, value: Any, path: str) -> Any:
        if not isinstance(value, list) or (self.length is not None and len(value) != self.length):
            raise self.fail(value, path)
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]


class _FreeDict(_Type):
    """A mapping whose keys the engine does not interpret (read by the task or the model builder)."""

    what = "a mapping"

    def check(self, value: Any, path: str) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(value, path)
        return value


class _Section(_Type):
    """A mapping with a fixed set of keys, each ``(type, default)``; ``REQUIRED`` marks no default."""

    what = "a mapping"

    def __init__(self, fields: dict[str, tuple[_Type, Any]], nullable: bool = False) -> None:
        self.fields, self.nullable = fields, nullable

    def check(self, value: Any, path: str) -> Any:
        if value is None and self.nullable:
            return None
        if not isinstance(value, dict):
            raise self.fail(value, path)
        for key in value:
            if key not in self.fields:
                raise unknown_key(key, self.fields, path)
        out = {}
        for key, (kind, default) in self.fields.items():
            where = f"{path}.{key}" if path else key
            if key not in value:
                if default is REQUIRED:
                    raise RecipeError(f"{where}: required key is missing")
                out[key] = copy.deepcopy(default)
                if default is not None:
                    out[key] = kind.check(out[key], where)
            else:
                out[key] = kind.check(value[key], where)
        return out


def unknown_key(key: str, known: Iterable[str], path: str) -> RecipeError:
    where = f"{path}.{key}" if path else key
    close = difflib.get_close_matches(str(key), list(known), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return RecipeError(f"unknown recipe key {where!r}.{hint} Known keys here: {', '.join(known)}")


# --------------------------------------------------------------------------- the schema

_SCHEDULER_KEYS = {**SCHEDULER_COMMON, **{k: None for params in SCHEDULER_PARAMS.values() for k in params}}
_SCHEDULER_TYPES: dict[str, _Type] = {
    "name": _Choice(*SCHEDULER_PARAMS), "per": _Choice("step", "epoch"),
    "warmup_steps": _Int(0), "warmup_epochs": _Int(0), "warmup_start_factor": _Float(0.0),
    "start_factor": _Float(0.0), "end_factor": _Float(0.0), "total_iters": _Optional(_Int(1)),
    "eta_min": _Float(0.0), "gamma": _Float(positive=True), "step_size": _Int(1),
    "milestones": _List(_Int(0)),
}

SCHEMA = _Section({
    "name": (_Str(), REQUIRED),
    "description": (_Str(), ""),
    "follows": (_Str(), ""),
    "task": (_Str(), REQUIRED),
    "imports": (_List(_Str()), []),
    "model": (_Section({
        "name": (_Str(), REQUIRED),
        "variant": (_Optional(_Str()), None),
        "pretrained": (_Either(_Bool(), _Str()), False),
        "args": (_FreeDict(), {}),
    }), REQUIRED),
    "data": (_Section({
        "subdir": (_Optional(_Str()), None),
        "args": (_FreeDict(), {}),
        "synthetic": (_Optional(_Choice(*SYNTHETIC_SETS.names())), None),
    }), {}),
    "batch_size": (_Int(1), REQUIRED),
    "epochs": (_Int(1), REQUIRED),
    "max_steps_per_epoch": (_Optional(_Int(1)), None),
    "optimizer": (_Section({
        "name": (_Choice(*OPTIMIZERS), REQUIRED),
        "lr": (_Float(positive=True), REQUIRED),
        "weight_decay": (_Float(0.0), 0.0),
        "momentum": (_Float(0.0), 0.0),
        "nesterov": (_Bool(), False),
        "dampening": (_Float(0.0), 0.0),
        "betas": (_Optional(_List(_Float(0.0), length=2)), None),
        "eps": (_Optional(_Float(positive=True)), None),
    }), REQUIRED),
    "scheduler": (_Section({k: (_SCHEDULER_TYPES[k], None if k not in SCHEDULER_COMMON else v)
                            for k, v in _SCHEDULER_KEYS.items()}), {"name": "none"}),
    "precision": (_Choice("fp32", "bf16", "fp16"), "fp32"),
    "grad_accum_steps": (_Int(1), 1),
    "clip_grad_norm": (_Optional(_Float(positive=True)), None),
    "checkpoint_every": (_Optional(_Int(1)), 1000),
    "keep_checkpoints": (_Int(1), 2),
    "log_every": (_Int(1), 10),
    "seed": (_Int(0), 0),
    "num_workers": (_Int(0), 0),
    "find_unused_parameters": (_Bool(), False),
    "task_args": (_FreeDict(), {}),
    "eval": (_Section({
        "table": (_Str(), REQUIRED),
        "every_epochs": (_Int(1), 1),
        "args": (_FreeDict(), {}),
    }, nullable=True), None),
})


def _check_scheduler(spec: dict[str, Any]) -> dict[str, Any]:
    """Keep the keys the chosen scheduler takes; reject the others' parameters; fill its defaults."""
    name = spec["name"]
    params = SCHEDULER_PARAMS[name]
    out = {}
    for key, value in spec.items():
        if key in SCHEDULER_COMMON:
            out[key] = value
        elif key in params:
            out[key] = params[key] if value is None else value
            if out[key] is REQUIRED:
                raise RecipeError(f"scheduler.{key}: required by scheduler {name!r}")
        elif value is not None:
            raise RecipeError(f"scheduler.{key} is not a parameter of scheduler {name!r} "
                              f"(its parameters: {', '.join(params) or 'none'})")
    return out


def validate(recipe: Any, source: str = "recipe") -> dict[str, Any]:
    """Check every key and value of a recipe; return it with defaults filled in."""
    if not isinstance(recipe, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping, got {type(recipe).__name__}")
    try:
        out = SCHEMA.check(recipe, "")
        out["scheduler"] = _check_scheduler(out["scheduler"])
    except RecipeError as err:
        raise RecipeError(f"{source}: {err}") from None
    if out["optimizer"]["name"] != "sgd" and (out["optimizer"]["momentum"] or out["optimizer"]["nesterov"]):
        raise RecipeError(f"{source}: optimizer.momentum/nesterov apply to sgd only, not {out['optimizer']['name']}")
    synthetic, subdir = out["data"]["synthetic"], out["data"]["subdir"]
    if synthetic and SYNTHETIC_SETS.get(synthetic).subdir != subdir:
        raise RecipeError(f"{source}: data.synthetic: {synthetic!r} writes {SYNTHETIC_SETS.get(synthetic).subdir}/, "
                          f"but data.subdir is {subdir!r}")
    return out


# --------------------------------------------------------------------------- files and overrides


def available(recipes_dir: Path | None = None) -> dict[str, Path]:
    """Recipe name -> file, for every ``*.yaml``/``*.yml`` in the folder."""
    folder = Path(recipes_dir) if recipes_dir else default_recipes_dir()
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in (".yaml", ".yml")}


def load_recipe(name: str, recipes_dir: Path | None = None) -> tuple[dict[str, Any], Path]:
    """The raw (unvalidated) recipe ``name`` and its file; unknown names list close matches."""
    folder = Path(recipes_dir) if recipes_dir else default_recipes_dir()
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():  # a path is accepted too
        recipes = {path.stem: path}
        name = path.stem
    else:
        recipes = available(folder)
    if name not in recipes:
        close = difflib.get_close_matches(name, list(recipes), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        known = ", ".join(recipes) or f"none: {folder} holds no *.yaml"
        raise RecipeError(f"unknown recipe {name!r}.{hint} Known recipes: {known}")
    try:
        raw = yaml.safe_load(recipes[name].read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{recipes[name]}: not valid YAML ({err})") from None
    if isinstance(raw, dict):
        raw.setdefault("name", name)
        if raw["name"] != name:
            raise RecipeError(f"{recipes[name]}: 'name: {raw['name']}' differs from the file name {name!r}")
    return raw, recipes[name]


def _schema_at(path: list[str], text: str) -> _Type | None:
    """The type of the key at ``path``, or None inside a free-form mapping; raises on unknown keys."""
    kind: _Type = SCHEMA
    for i, key in enumerate(path):
        if isinstance(kind, (_FreeDict, _Any)):
            return None
        if not isinstance(kind, _Section):
            raise RecipeError(f"override {text!r}: {'.'.join(path[:i])} is not a mapping")
        if key not in kind.fields:
            raise RecipeError(f"override {text!r}: {unknown_key(key, kind.fields, '.'.join(path[:i]))}")
        kind = kind.fields[key][0]
    return kind


def _takes_str(kind: _Type) -> bool:
    if isinstance(kind, _Optional):
        return _takes_str(kind.inner)
    if isinstance(kind, _Either):
        return any(_takes_str(option) for option in kind.options)
    return isinstance(kind, (_Str, _Choice))


def apply_overrides(recipe: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (dotted keys; values parsed as YAML: ``eval=null``, ``lr=1e-4``)."""
    recipe = copy.deepcopy(recipe)
    for text in overrides:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"override {text!r}: expected key=value (e.g. optimizer.lr=1e-4)")
        path = key.strip().split(".")
        if any(not part for part in path):
            raise RecipeError(f"override {text!r}: empty component in key {key!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise RecipeError(f"override {text!r}: value is not valid YAML ({err})") from None
        kind = _schema_at(path, text)
        if kind is not None and not isinstance(kind, _Section):
            where = f"override {text!r}: {key}"
            try:
                value = kind.check(value, where)
            except RecipeError:
                if isinstance(value, str) or not raw.strip() or not _takes_str(kind):
                    raise
                # A string field given something YAML reads otherwise (model.variant=512_32 -> 51232)
                value = kind.check(raw.strip(), where)
        node = recipe
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = value
    return recipe


def resolve_recipe(name: str, overrides: Iterable[str] = (), recipes_dir: Path | None = None) -> dict[str, Any]:
    """Load, override and validate a recipe: the dict the engine trains from."""
    raw, path = load_recipe(name, recipes_dir)
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping, got {type(raw).__name__}")
    return validate(apply_overrides(raw, overrides), source=str(path))


def dump_recipe(recipe: dict[str, Any]) -> str:
    return yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None, width=100)


def recipe_table(recipes_dir: Path | None = None) -> str:
    """The ``--list`` table: name, task, model, global batch x epochs, description (or the error)."""
    rows = [("recipe", "task", "model", "batch x epochs", "description")]
    for name, path in available(recipes_dir).items():
        try:
            r = validate(load_recipe(name, recipes_dir)[0], str(path))
            model = r["model"]["name"] + (f".{r['model']['variant']}" if r["model"]["variant"] else "")
            rows.append((name, r["task"], model, f"{r['batch_size']} x {r['epochs']}", r["description"]))
        except RecipeError as err:
            rows.append((name, "?", "?", "?", f"INVALID: {err}"))
    if len(rows) == 1:
        return f"no recipes in {Path(recipes_dir) if recipes_dir else default_recipes_dir()}"
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths)) + "  " + row[4] for row in rows)
