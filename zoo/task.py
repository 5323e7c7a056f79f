"""What a method plugs into the training loop.

The engine (:mod:`zoo.engine.train`) owns everything generic: process group and DDP, data
loaders and resumable distributed samplers, optimiser and scheduler built from the recipe,
autocast and grad scaling, accumulation, clipping, atomic checkpoints and exact resume,
logging, export. A :class:`TrainTask` owns what is specific to one paper: the model it
trains, its data set and sampler, its loss, extra per-epoch work (clustering, mining) and any
extra state (memory banks) that must survive a resume.

Tasks register by name with :func:`register_task`; a recipe's ``task:`` field picks one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from zoo.distributed import DistInfo
from zoo.registry import Registry, import_submodules
from zoo.settings import parse


@dataclass
class NoArgs:
    """``task_args`` of a task that takes none."""


@dataclass
class StepContext:
    """Passed to :meth:`TrainTask.training_step`."""

    epoch: int
    step: int               # global optimiser step (0-based) about to be taken
    steps_per_epoch: int
    dist: DistInfo
    autocast_dtype: torch.dtype | None


class TrainTask:
    """Base class: override what your method needs. ``recipe`` is the resolved recipe dict, and
    ``self.args`` its ``task_args`` read into the task's :attr:`Args` dataclass (unknown keys and
    wrong types fail at construction, naming the key).

    ``data_root`` is the data set folder itself: ``--data-root / data.subdir`` (``--data-root``
    when the recipe has no ``data.subdir``; None without ``--data-root``).
    """

    #: a collate function for the data loader (None: torch's default)
    collate_fn: Callable | None = None
    #: items per rank per micro-batch (global batch / (world size * accumulation)); set by the engine
    micro_batch_size: int = 0
    #: ``zoo.create_model``, set by the engine: a task builds its models through it
    create_model: Callable[..., nn.Module]

    #: the dataclass of this task's ``task_args``: its fields are the allowed keys, with types and defaults
    Args: type = NoArgs

    def __init__(self, recipe: dict[str, Any], data_root: Path | None, dist: DistInfo) -> None:
        self.recipe = recipe
        self.data_root = data_root
        self.dist = dist
        self.args = parse(self.Args, recipe.get("task_args"), "task_args")

    # -- set-up (called once, before any work; raise zoo.errors.DatasetError on bad data) --
    def check_data(self) -> None:
        """Validate the data root's layout; raise DatasetError naming what is missing."""

    def build_model(self) -> nn.Module:
        """The module trained (may wrap the zoo model, e.g. UCDIR's two encoders)."""
        raise NotImplementedError

    def recipe_model(self, pretrained: bool | str | None = None) -> nn.Module:
        """The recipe's ``model`` (name, variant, builder args) built through :attr:`create_model`, with the
        recipe's weights or, when given, ``pretrained``."""
        spec = self.recipe["model"]
        return self.create_model(spec["name"], pretrained=spec["pretrained"] if pretrained is None else pretrained,
                                 variant=spec["variant"], **(spec["args"] or {}))

    def build_dataset(self) -> Dataset:
        raise NotImplementedError

    def build_sampler(self, dataset: Dataset, seed: int) -> Sampler | None:
        """A sampler yielding this rank's indices for one epoch (``set_epoch`` is called each epoch).

        ``None`` lets the engine shard a seeded random permutation over ranks. A custom sampler
        must be deterministic given (seed, epoch, rank, world_size) so that resume is exact.
        """
        return None

    def build_batch_sampler(self, dataset: Dataset, batch_size: int, seed: int) -> Sampler | None:
        """Optional: a sampler yielding this rank's micro-batches (lists of ``batch_size`` indices).

        Takes precedence over :meth:`build_sampler`; same determinism contract, ``set_epoch`` and
        ``__len__`` (number of batches) required.
        """
        return None

    def param_groups(self, model: nn.Module) -> Iterable[dict[str, Any]] | None:
        """Parameter groups with their own ``lr``/``weight_decay`` (None: one group, all trainable params).

        A group may instead carry ``lr_scale``: a factor on the recipe's ``optimizer.lr``.
        """
        return None

    # -- the loop --
    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        """Per-epoch work (k-means, hard-negative mining); runs on every rank."""

    def training_step(self, model: nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one (micro-)batch and scalars to log. ``model`` may be DDP-wrapped."""
        raise NotImplementedError

    def after_optimizer_step(self, model: nn.Module, ctx: StepContext) -> None:
        """E.g. momentum-encoder update."""

    # -- resumable extra state --
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # -- export --
    def export_model(self, model: nn.Module) -> nn.Module:
        """The zoo model to export from the trained module (with ``zoo_config`` set)."""
        return model


#: Training tasks by name (a recipe's ``task:``); each method folder's ``task`` module registers its own.
TASKS: Registry[type[TrainTask]] = Registry(
    "training task", discover=lambda: import_submodules("zoo.models", suffix=".task", packages_only=True))


def register_task(name: str) -> Callable[[type[TrainTask]], type[TrainTask]]:
    return TASKS.register(name)


def get_task(name: str) -> type[TrainTask]:
    return TASKS.get(name)
