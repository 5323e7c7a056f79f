"""Training task of DyCL on DA-Campus (anocodetest1/DyCL ``run_dycl.py`` + ``engine/train_dycl.py``
+ ``engine/base_training_loop_our.py``).

Per step: a batch of (satellite, drone) pairs of the training places (each drone image with its
place's satellite image, ``DaCampusDataset``), both views through the one shared network, and
:class:`zoo.models.dycl.loss.DyCLCriterion` (0.9 H-AP + 0.2 DyCL + 0.1 proxy cluster loss) on the
place-level matrix of the training places (built, by default, with the original's row block of
80 and its false "same place" entries).

Optimisation as ``config/optimizer/da_campus.yaml``: Adam, backbone at the recipe's ``lr``, the
LayerNorm/fc head at twice that (``lr_scale`` 2), the proxies at ``proxy_lr`` (10) without weight
decay. For the first ``warmup_epochs`` (5 in the README's command) the backbone is not updated
(``warmup_keys: [backbone]``): its parameters stop requiring gradients, so Adam skips them.

``task_args``: the fields of :class:`DyCLArgs`.

Differences from the original, all small: the pairs are shuffled by the engine's seeded sampler
(the original's sampler also shuffles all pairs and drops its last batch); the cosine schedule
counts the warm-up epochs (the original holds the learning rate during warm-up and starts the
cosine after it), and it ends the proxies' learning rate at 0 instead of 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torchvision.transforms as T
from torch import nn
from torch.utils.data import Dataset

from zoo.data.da_campus import TRAIN_ROW_BATCH, DACampusPairs, read_list
from zoo.distributed import unwrap
from zoo.errors import DatasetError
from zoo.models.dycl.loss import DyCLCriterion
from zoo.models.dycl.modeling import IMAGENET_MEAN, IMAGENET_STD
from zoo.settings import setting
from zoo.task import StepContext, TrainTask, register_task


def train_transform(resize: int = 256, crop: int = 224, scale: tuple[float, float] = (0.16, 1.0),
                    ratio: tuple[float, float] = (0.75, 1.33)) -> T.Compose:
    """``config/transform/da_campus.yaml`` ``train``: Resize(256) (shorter side), RandomResizedCrop(224),
    horizontal flip, ImageNet mean/std; applied to each view independently."""
    return T.Compose([T.Resize(resize), T.RandomResizedCrop(crop, scale=tuple(scale), ratio=tuple(ratio)),
                      T.RandomHorizontalFlip(0.5), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


@dataclass
class DyCLArgs:
    """``task_args`` of the DyCL task (defaults: the original's DA-Campus configuration)."""

    warmup_epochs: int = setting(5, minimum=0, help="epochs with the backbone frozen")
    head_lr_scale: float = setting(2.0, positive=True, help="LayerNorm/fc learning rate / the recipe's lr")
    proxy_lr: float = setting(10.0, positive=True, help="learning rate of the cluster proxies")
    resize: int = setting(256, minimum=1)
    crop: int = setting(224, minimum=1)
    crop_scale: tuple[float, ...] = setting((0.16, 1.0), minimum=0.0, length=2)
    crop_ratio: tuple[float, ...] = setting((0.75, 1.33), positive=True, length=2)
    row_batch: int | None = setting(TRAIN_ROW_BATCH, minimum=1,
                                    help="the original's row block of the level matrix (null: corrected matrix)")
    normalize_dim: int = setting(0, minimum=0, help="0: the original's DyCL loss; 1: corrected")
    loss_weights: tuple[float, ...] = setting((0.9, 0.2, 0.1), minimum=0.0, length=3)
    temperature: float = setting(0.05, positive=True)
    scale: float = setting(32.0, positive=True)
    margins: tuple[float, ...] = setting((0.25, 0.35, 0.45), length=3)


@register_task("dycl")
class DyCLTask(TrainTask):
    Args = DyCLArgs

    def __init__(self, recipe: dict[str, Any], data_root: Any, dist: Any) -> None:
        super().__init__(recipe, data_root, dist)
        a = self.args
        self.warmup_epochs, self.head_lr_scale, self.proxy_lr = a.warmup_epochs, a.head_lr_scale, a.proxy_lr
        self.transform_args = {"resize": a.resize, "crop": a.crop, "scale": a.crop_scale, "ratio": a.crop_ratio}
        self.row_batch = a.row_batch
        self.loss_args = {"weights": a.loss_weights, "normalize_dim": a.normalize_dim, "temperature": a.temperature,
                          "scale": a.scale, "margins": a.margins}
        self.num_places = 0
        self.criterion: DyCLCriterion | None = None
        self.place_levels: torch.Tensor | None = None

    def check_data(self) -> None:
        if self.data_root is None:
            raise DatasetError("task dycl needs --data-root with the DA_Campus folder (satellite/, drone/)")
        self.num_places = len(read_list(self.data_root, "satellite", "train").paths)
        read_list(self.data_root, "drone", "train")
        if self.num_places == 0:
            raise DatasetError(f"{self.data_root / 'satellite' / 'train.txt'} lists no image")

    def build_model(self) -> nn.Module:
        model = self.recipe_model()
        # built after the engine's seeding, so the proxies are the same on every rank and every run
        self.criterion = DyCLCriterion(self.num_places, model.embed_dim, **self.loss_args).to(self.dist.device)
        return model.train()

    def build_dataset(self) -> Dataset:
        dataset = DACampusPairs(self.data_root, train_transform(**self.transform_args), "train", self.row_batch)
        self.place_levels = dataset.place_levels.to(self.dist.device)
        return dataset

    def param_groups(self, model: nn.Module) -> Iterable[dict[str, Any]]:
        net = unwrap(model)
        head = [p for name, p in net.named_parameters() if not name.startswith("backbone.")]
        assert self.criterion is not None
        return [{"params": list(net.backbone.parameters())},
                {"params": head, "lr_scale": self.head_lr_scale},
                {"params": list(self.criterion.parameters()), "lr": self.proxy_lr, "weight_decay": 0.0}]

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        unwrap(model).backbone.requires_grad_(epoch >= self.warmup_epochs)

    def training_step(self, model: nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        sat, drone, labels, _ = batch
        assert self.criterion is not None and self.place_levels is not None
        emb_sat, emb_drone = model(sat), model(drone)
        if torch.isnan(emb_sat).any() or torch.isnan(emb_drone).any():
            raise FloatingPointError(f"NaN in embeddings at step {ctx.step}")
        loss, parts = self.criterion(emb_sat.float(), emb_drone.float(), labels, self.place_levels)
        return loss, {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in parts.items()}}

    def state_dict(self) -> dict[str, Any]:
        assert self.criterion is not None
        return {"proxies": self.criterion.cluster.proxies.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.criterion is not None
        with torch.no_grad():
            self.criterion.cluster.proxies.copy_(state["proxies"])
