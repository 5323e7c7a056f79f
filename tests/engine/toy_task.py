"""A tiny training task and model for the engine's tests (independent of the zoo's five models).

``toy_mlp`` is registered as a zoo model (so export / create_model work on it) and ``toy`` as a
training task: regress L2-normalised descriptors of fixed random vectors, with per-item noise
(augmentation drawn from the global RNG, which the engine reseeds per item), optional dropout
(training randomness from the main RNG), per-epoch state computed in ``on_epoch_start`` and kept
in the task state, and a counter updated after every optimiser step.

With ``task_args.images: [C, H, W]`` the task instead feeds random images to any zoo model
(``model.name``), e.g. to check that its export loads back through hubconf.py.
:func:`train_cli` gives the tests the ``training/train.py`` module to call its ``main`` in-process.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import zoo
from zoo.layers.norm import l2n
from zoo.models import MODELS
from zoo.models.cards import ModelInfo, Variant
from zoo.task import StepContext, TrainTask, register_task


class ToyNet(nn.Module):
    def __init__(self, in_dim: int = 8, hidden: int = 16, dim: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2n(self.body(x))

    encode_query = encode_database = forward


MODELS.register("toy_mlp", ModelInfo(
    name="toy_mlp", builder=ToyNet, paper="test-only toy model", arxiv=None, task="test",
    licence="MIT", code_licence="MIT", original_code="tests/engine/toy_task.py", citation="none",
    descriptor_dim=lambda kw: kw.get("dim", 4), variants={"default": Variant()},
    preprocessing=lambda args: {}, transforms=lambda: (torch.as_tensor, torch.as_tensor),
))


class ToyData(Dataset):
    def __init__(self, size: int, shape: list[int], dim: int, noise: float) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(size, *shape, generator=g)
        self.y = l2n(self.x.flatten(1) @ torch.randn(self.x[0].numel(), dim, generator=g))
        self.noise = noise

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i] + self.noise * torch.randn(self.x[i].shape), self.y[i]


@dataclass
class ToyArgs:
    size: int = 48
    noise: float = 0.05
    jitter: float = 0.0
    anchor_weight: float = 0.1
    images: list[int] | None = None


@register_task("toy")
class ToyTask(TrainTask):
    Args = ToyArgs

    def __init__(self, recipe: dict[str, Any], data_root: Any, dist: Any) -> None:
        super().__init__(recipe, data_root, dist)
        self.updates = 0
        self.anchor: torch.Tensor | None = None

    def build_model(self) -> nn.Module:
        m = self.recipe["model"]
        return zoo.create_model(m["name"], pretrained=m["pretrained"], variant=m["variant"], **m["args"])

    def build_dataset(self) -> Dataset:
        shape = self.args.images or [8]
        return ToyData(self.args.size, shape, self.model_dim(), self.args.noise)

    def model_dim(self) -> int:
        m = self.recipe["model"]
        return zoo.get_model_info(m["name"]).dim({**zoo.get_model_info(m["name"]).variant_kwargs(m["variant"]), **m["args"]})

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        # Per-epoch state that training uses: must survive a mid-epoch resume via state_dict().
        was = model.training
        model.eval()
        with torch.no_grad():
            probe = torch.randn(4, *(self.args.images or [8]), generator=torch.Generator().manual_seed(epoch))
            self.anchor = model(probe.to(self.dist.device)).mean(0).cpu()
        model.train(was)

    def training_step(self, model: nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = batch
        if self.args.jitter:  # randomness drawn in the training process (not per item)
            x = x + self.args.jitter * torch.randn_like(x)
        out = model(x).float()
        fit = F.mse_loss(out, y)
        drift = (out.mean(0) - self.anchor.to(out.device)).pow(2).sum()
        loss = fit + self.args.anchor_weight * drift
        # "loss" among the task's scalars must not be added to the engine's own loss column
        return loss, {"fit": fit.item(), "loss": loss.item()}

    def after_optimizer_step(self, model: nn.Module, ctx: StepContext) -> None:
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates, self.anchor = state["updates"], state["anchor"]


def train_cli() -> ModuleType:
    """The training command line (``python -m zoo train``, ``training/train.py``) as a module."""
    import zoo.cli.train

    return zoo.cli.train
