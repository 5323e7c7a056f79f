"""Training recipes: declarative YAML files in ``zoo/recipes/`` (schema in its README.md).

:func:`resolve_recipe` loads one by name, applies ``key=value`` overrides (dotted keys, values
read as YAML) and validates every key and value, so that a typo fails with a one-line error
naming the key, before any model is built or any data is read.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml

from zoo.data.synthetic import SYNTHETIC_SETS
from zoo.engine.schedules import OPTIMIZERS, REQUIRED, SCHEDULER_COMMON, SCHEDULER_PARAMS
from zoo.errors import InputError
from zoo.registry import did_you_mean
from zoo.settings import SettingsError, as_dict, check, field_type, parse, setting, takes_str

#: environment variable naming another recipes folder (the CLI's ``--recipes-dir`` wins over it)
RECIPES_DIR_ENV = "ZOO_RECIPES_DIR"


class RecipeError(InputError):
    """A recipe is missing, unreadable, or has an unknown key or a bad value."""


def default_recipes_dir() -> Path:
    """``$ZOO_RECIPES_DIR``, else the recipes shipped inside the package (``zoo/recipes``)."""
    if os.environ.get(RECIPES_DIR_ENV):
        return Path(os.environ[RECIPES_DIR_ENV])
    return Path(os.fspath(importlib.resources.files("zoo") / "recipes"))


# --------------------------------------------------------------------------- the schema

SchedulerName = Literal.__getitem__(tuple(SCHEDULER_PARAMS))
OptimizerName = Literal.__getitem__(OPTIMIZERS)
SyntheticName = Literal.__getitem__(tuple(SYNTHETIC_SETS.names()))


@dataclass
class ModelSpec:
    """``model``: what is trained (a registry name) and where its first weights come from."""

    name: str
    variant: str | None = None
    pretrained: bool | str = False
    args: dict[str, Any] = setting({})


@dataclass
class DataSpec:
    """``data``: the data set folder under ``--data-root`` and reader arguments (read by the task)."""

    subdir: str | None = None
    args: dict[str, Any] = setting({})
    synthetic: SyntheticName | None = setting(
        None, help="a tiny generated set in the benchmark's layout, written to OUT/data without --data-root")


@dataclass
class OptimizerSpec:
    name: OptimizerName
    lr: float = setting(positive=True)
    weight_decay: float = setting(0.0, minimum=0.0)
    momentum: float = setting(0.0, minimum=0.0)
    nesterov: bool = False
    dampening: float = setting(0.0, minimum=0.0)
    betas: list[float] | None = setting(None, minimum=0.0, length=2)
    eps: float | None = setting(None, positive=True)


@dataclass
class SchedulerSpec:
    """``scheduler``: the common keys, then the parameters of every scheduler (only the chosen one's may be set)."""

    name: SchedulerName = "none"
    per: Literal["step", "epoch"] = "step"
    warmup_steps: int = setting(0, minimum=0)
    warmup_epochs: int = setting(0, minimum=0)
    warmup_start_factor: float = setting(0.001, minimum=0.0)
    start_factor: float | None = setting(None, minimum=0.0)
    end_factor: float | None = setting(None, minimum=0.0)
    total_iters: int | None = setting(None, minimum=1)
    eta_min: float | None = setting(None, minimum=0.0)
    gamma: float | None = setting(None, positive=True)
    step_size: int | None = setting(None, minimum=1)
    milestones: list[int] | None = setting(None, minimum=0)


@dataclass
class EvalSpec:
    """``eval``: a packaged table evaluated during training."""

    table: str
    every_epochs: int = setting(1, minimum=1)
    args: dict[str, Any] = setting({})


@dataclass
class Recipe:
    """One training run of one model (schema of ``zoo/recipes/*.yaml``; see its README.md)."""

    name: str
    task: str
    model: ModelSpec
    batch_size: int = setting(minimum=1)
    epochs: int = setting(minimum=1)
    optimizer: OptimizerSpec = setting()
    description: str = ""
    follows: str = ""
    imports: list[str] = setting([])
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    max_steps_per_epoch: int | None = setting(None, minimum=1)
    scheduler: SchedulerSpec = dataclasses.field(default_factory=SchedulerSpec)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_accum_steps: int = setting(1, minimum=1)
    clip_grad_norm: float | None = setting(None, positive=True)
    checkpoint_every: int | None = setting(1000, minimum=1)
    keep_checkpoints: int = setting(2, minimum=1)
    log_every: int = setting(10, minimum=1)
    seed: int = setting(0, minimum=0)
    num_workers: int = setting(0, minimum=0)
    find_unused_parameters: bool = False
    task_args: dict[str, Any] = setting({})
    eval: EvalSpec | None = None


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
    """Check every key and value of a recipe; return it (plain dicts) with defaults filled in."""
    if not isinstance(recipe, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping, got {type(recipe).__name__}")
    try:
        out = as_dict(parse(Recipe, recipe, noun="recipe key"))
        out["scheduler"] = _check_scheduler(out["scheduler"])
    except (SettingsError, RecipeError) as err:
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
        hint = did_you_mean(name, recipes)
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
        try:
            found = field_type(Recipe, path, text, noun="recipe key")
            if found is not None and not dataclasses.is_dataclass(found[0]):
                kind, meta = found
                where = f"override {text!r}: {key}"
                try:
                    value = check(kind, value, where, meta)
                except SettingsError:
                    if isinstance(value, str) or not raw.strip() or not takes_str(kind):
                        raise
                    # A string field given something YAML reads otherwise (model.variant=512_32 -> 51232)
                    value = check(kind, raw.strip(), where, meta)
        except SettingsError as err:
            raise RecipeError(str(err)) from None
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
