"""CVFT training (``train_cvusa.py``, ``train_cvact.py``) on CVUSA or CVACT.

Per step: a batch of matching (ground panorama, aerial image) pairs, preprocessed exactly as for
evaluation (the original loaders do no augmentation), both branches embedded, and the weighted
soft-margin triplet loss over every pair of the batch in both directions (:mod:`zoo.models.cvft.loss`;
on CVACT pairs closer than 25 m are masked). conv1_1 .. conv3_3 of both VGG16 stacks stay frozen
(``trainable=False`` in ``VGG.py``); the model's dropout (keep 0.8) follows the trainable convs.

``task_args``: the fields of :class:`CVFTArgs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from zoo.data.cvact import cvact_paths, read_cvact_split
from zoo.data.cvusa import read_cvusa_split
from zoo.errors import DatasetError
from zoo.io import load_image
from zoo.models.cvft.loss import WeightedSoftMarginTriplet
from zoo.models.cvft.modeling import FROZEN_LAYERS, cvft_preprocessing, cvft_transforms
from zoo.settings import setting
from zoo.task import StepContext, TrainTask, register_task


class CrossViewPairs(Dataset):
    """``(ground tensor, aerial tensor, utm (2,) float64)`` per location (utm zeros for CVUSA)."""

    def __init__(self, pairs: list[tuple[Path, Path]], ground_tf: Any, aerial_tf: Any,
                 utm: np.ndarray | None = None) -> None:
        self.pairs, self.ground_tf, self.aerial_tf = pairs, ground_tf, aerial_tf
        self.utm = np.zeros((len(pairs), 2)) if utm is None else np.asarray(utm, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ground, aerial = self.pairs[index]
        return (self.ground_tf(load_image(ground)), self.aerial_tf(load_image(aerial)),
                torch.from_numpy(self.utm[index].copy()))


@dataclass
class CVFTArgs:
    """``task_args`` of the CVFT task (defaults: the original's CVUSA training)."""

    dataset: Literal["cvusa", "cvact"] = "cvusa"
    split: str = "train"
    alpha: float = setting(10.0, positive=True, help="scale of the weighted soft-margin triplet loss")
    distance_threshold: float | Literal["auto"] | None = setting(
        "auto", positive=True, help="metres under which pairs are not negatives; auto: 25 on CVACT, none on CVUSA")
    mat_file: str = setting("ACT_data.mat", help="CVACT's list file")


@register_task("cvft")
class CVFTTask(TrainTask):
    Args = CVFTArgs

    def __init__(self, recipe: dict[str, Any], data_root: Any, dist: Any) -> None:
        super().__init__(recipe, data_root, dist)
        a = self.args
        self.dataset_name, self.split, self.mat_file = a.dataset, a.split, a.mat_file
        threshold = (25.0 if a.dataset == "cvact" else None) if a.distance_threshold == "auto" else a.distance_threshold
        self.loss = WeightedSoftMarginTriplet(a.alpha, threshold)
        self.pairs: list[tuple[Path, Path]] = []
        self.utm: np.ndarray | None = None

    def check_data(self) -> None:
        if self.data_root is None:
            raise DatasetError(f"task cvft needs --data-root with the {self.dataset_name.upper()} folder")
        root = Path(self.data_root)
        if self.dataset_name == "cvusa":
            self.pairs = [(ground, aerial) for aerial, ground in read_cvusa_split(root, self.split)]
        else:
            ids, self.utm = read_cvact_split(root, self.split, self.mat_file)
            self.pairs = [cvact_paths(root, pano_id, self.split) for pano_id in ids]
            missing = [p for pair in self.pairs for p in pair if not p.is_file()]
            if missing:
                raise DatasetError(f"CVACT {self.split}: {len(missing)} image(s) missing, e.g. {missing[0]}")

    def build_model(self) -> nn.Module:
        model = self.recipe_model()
        for stack in (model.grd_vgg, model.sat_vgg):
            for name in FROZEN_LAYERS:
                getattr(stack, name).requires_grad_(False)
        return model.train()

    def build_dataset(self) -> Dataset:
        spec = self.recipe["model"]
        ground_tf, aerial_tf = cvft_transforms(**cvft_preprocessing(spec["args"]))
        return CrossViewPairs(self.pairs, ground_tf, aerial_tf, self.utm)

    def training_step(self, model: nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        ground, aerial, utm = batch
        grd, sat = model(ground, aerial)
        if torch.isnan(grd).any() or torch.isnan(sat).any():
            raise FloatingPointError(f"NaN in descriptors at step {ctx.step}")
        loss = self.loss(sat.float(), grd.float(), utm)
        with torch.no_grad():
            top1 = ((sat @ grd.t()).argmax(0) == torch.arange(grd.shape[0], device=grd.device)).float().mean()
        return loss, {"loss": float(loss.detach()), "batch_top1": float(top1)}
