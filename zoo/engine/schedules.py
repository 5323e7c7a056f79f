"""Optimiser and learning-rate schedule built from a recipe.

The schedule is a closed-form factor of ``(step, epoch)`` multiplied onto every parameter
group's own base learning rate, set before each optimiser step. Closed forms match torch's
``LinearLR``, ``CosineAnnealingLR``, ``ExponentialLR``, ``StepLR`` and
``MultiStepLR`` when those are stepped once per step (``per: step``) or once per epoch
(``per: epoch``), and make the state trivially resumable: it is derived from the position.
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Iterable

import torch
from torch import nn

from zoo.errors import InputError

#: scheduler name -> {parameter: default}; ``REQUIRED`` marks parameters without a default.
REQUIRED = object()
SCHEDULER_PARAMS: dict[str, dict[str, Any]] = {
    "none": {},
    "linear": {"start_factor": 1.0 / 3, "end_factor": 1.0, "total_iters": None},
    "cosine": {"total_iters": None, "eta_min": 0.0},
    "exponential": {"gamma": REQUIRED},
    "step": {"step_size": REQUIRED, "gamma": 0.1},
    "multistep": {"milestones": REQUIRED, "gamma": 0.1},
}
#: keys every scheduler accepts
SCHEDULER_COMMON = {"name": "none", "per": "step", "warmup_steps": 0, "warmup_epochs": 0,
                    "warmup_start_factor": 0.001}

OPTIMIZERS = ("adam", "adamw", "sgd")


def build_optimizer(spec: dict[str, Any], groups: Iterable[dict[str, Any]] | None,
                    model: nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimiser over ``groups`` (from ``TrainTask.param_groups``) or all trainable parameters.

    A group's ``lr_scale`` multiplies ``spec["lr"]``; its own ``lr``/``weight_decay`` win over the recipe's.
    """
    if groups is None:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    resolved = []
    for group in groups:
        group = dict(group)
        scale = group.pop("lr_scale", None)
        if scale is not None:
            group.setdefault("lr", spec["lr"] * scale)
        group["params"] = list(group["params"])
        resolved.append(group)
    if not any(group["params"] for group in resolved):
        raise InputError("the model has no trainable parameters (all have requires_grad=False)")
    name = spec["name"]
    common = {"lr": spec["lr"], "weight_decay": spec.get("weight_decay", 0.0)}
    if name in ("adam", "adamw"):
        extra = {k: tuple(v) if k == "betas" else v for k, v in spec.items() if k in ("betas", "eps") and v is not None}
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(resolved, **common, **extra)
    if name == "sgd":
        return torch.optim.SGD(resolved, **common, momentum=spec.get("momentum", 0.0),
                               nesterov=spec.get("nesterov", False), dampening=spec.get("dampening", 0.0))
    raise InputError(f"optimizer.name: unknown optimiser {name!r}; known: {', '.join(OPTIMIZERS)}")


class Schedule:
    """Sets each group's ``lr = base_lr * factor(step, epoch)``; call :meth:`apply` before each step.

    ``total_iters`` defaults to the whole run in the unit of ``per`` (steps or epochs). Warm-up is
    a linear ramp from ``warmup_start_factor`` to 1 over ``warmup_steps + warmup_epochs *
    steps_per_epoch`` optimiser steps, multiplied onto the main schedule.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, spec: dict[str, Any], steps_per_epoch: int,
                 epochs: int) -> None:
        self.optimizer = optimizer
        self.spec = {**SCHEDULER_COMMON, **SCHEDULER_PARAMS[spec.get("name", "none")], **spec}
        self.per_epoch = self.spec["per"] == "epoch"
        self.total = self.spec.get("total_iters") or (epochs if self.per_epoch else epochs * steps_per_epoch)
        self.warmup = self.spec["warmup_steps"] + self.spec["warmup_epochs"] * steps_per_epoch
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]

    def factor(self, step: int, epoch: int, base_lr: float) -> float:
        s, t = self.spec, (epoch if self.per_epoch else step)
        name = s["name"]
        if name == "none":
            f = 1.0
        elif name == "linear":
            f = s["start_factor"] + (s["end_factor"] - s["start_factor"]) * min(t, self.total) / self.total
        elif name == "cosine":
            eta = s["eta_min"] / base_lr if base_lr else 0.0
            # As torch's closed form: past total_iters the cosine rises again (SGDR without restarts).
            f = eta + (1 - eta) * (1 + math.cos(math.pi * t / self.total)) / 2
        elif name == "exponential":
            f = s["gamma"] ** t
        elif name == "step":
            f = s["gamma"] ** (t // s["step_size"])
        elif name == "multistep":
            f = s["gamma"] ** bisect.bisect_right(sorted(s["milestones"]), t)
        else:  # validated by zoo.engine.recipes; kept for direct use
            raise InputError(f"scheduler.name: unknown scheduler {name!r}; known: {', '.join(SCHEDULER_PARAMS)}")
        if step < self.warmup:
            start = s["warmup_start_factor"]
            f *= start + (1 - start) * step / self.warmup
        return f

    def apply(self, step: int, epoch: int) -> list[float]:
        lrs = []
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.factor(step, epoch, base)
            lrs.append(group["lr"])
        return lrs

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = list(state["base_lrs"])
