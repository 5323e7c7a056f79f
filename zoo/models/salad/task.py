"""Training task of DINOv2 SALAD on GSV-Cities (serizba/salad ``main.py`` + ``vpr_model.py``).

Per step: a P×K batch (60 places × 4 images in the paper) is resized to 224×224 with
RandAugment(3) (``GSVCitiesDataModule.train_transform``), embedded by the model being fine-tuned
(last 4 ViT blocks + SALAD; the first 8 blocks are frozen in the model itself), and scored by the
Multi-Similarity loss on the Multi-Similarity miner's pairs (:mod:`zoo.models.salad.loss`).

``task_args``: the fields of :class:`SALADArgs`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torchvision.transforms as T
from torch import nn
from torch.utils.data import Dataset, Sampler

from zoo.data.gsv_cities import GSVCities, PlaceBatchSampler, check_gsv_cities
from zoo.errors import DatasetError, InputError
from zoo.models.salad.loss import MultiSimilarityWithMiner
from zoo.models.salad.modeling import IMAGENET_MEAN, IMAGENET_STD
from zoo.settings import setting
from zoo.task import StepContext, TrainTask, register_task


def train_transform(image_size: int = 224, randaugment_ops: int = 3) -> T.Compose:
    """``GSVCitiesDataModule.train_transform``: bilinear resize, RandAugment, ToTensor, ImageNet mean/std."""
    ops: list[Any] = [T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BILINEAR)]
    if randaugment_ops:
        ops.append(T.RandAugment(num_ops=randaugment_ops, interpolation=T.InterpolationMode.BILINEAR))
    ops += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return T.Compose(ops)


@dataclass
class SALADArgs:
    """``task_args`` of the SALAD task (defaults: serizba/salad main.py)."""

    images_per_place: int = setting(4, minimum=1)
    min_images_per_place: int = setting(4, minimum=1)
    image_size: int = setting(224, minimum=14)
    randaugment_ops: int = setting(3, minimum=0)
    cities: list[str] | None = setting(None, help="default: every CSV in Dataframes/")
    shuffle_all: bool = setting(False, help="false: shuffle places within each city, as the original")
    ms_alpha: float = 1.0
    ms_beta: float = 50.0
    ms_base: float = 0.0
    miner_epsilon: float = 0.1


@register_task("salad")
class SALADTask(TrainTask):
    Args = SALADArgs

    def __init__(self, recipe: dict[str, Any], data_root: Any, dist: Any) -> None:
        super().__init__(recipe, data_root, dist)
        a = self.args
        self.k, self.min_images, self.image_size = a.images_per_place, a.min_images_per_place, a.image_size
        self.randaugment_ops, self.cities, self.shuffle_all = a.randaugment_ops, a.cities, a.shuffle_all
        self.loss = MultiSimilarityWithMiner(alpha=a.ms_alpha, beta=a.ms_beta, base=a.ms_base, epsilon=a.miner_epsilon)

    def check_data(self) -> None:
        if self.data_root is None:
            raise DatasetError("task salad needs --data-root with the GSV-Cities folder (Dataframes/, Images/)")
        self.cities = check_gsv_cities(self.data_root, self.cities)

    def build_model(self) -> nn.Module:
        return self.recipe_model().train()

    def build_dataset(self) -> Dataset:
        return GSVCities(self.data_root, self.cities, self.min_images,
                         train_transform(self.image_size, self.randaugment_ops))

    def build_batch_sampler(self, dataset: Dataset, batch_size: int, seed: int) -> Sampler | None:
        if batch_size % self.k:
            raise InputError(f"batch_size: the per-process micro-batch of {batch_size} images is not a whole "
                             f"number of places of {self.k} images")
        assert isinstance(dataset, GSVCities)
        return PlaceBatchSampler(dataset.city_places, dataset.places, batch_size // self.k, self.k, seed,
                                 self.dist.rank, self.dist.world_size, self.shuffle_all)

    def training_step(self, model: nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch
        descriptors = model(images)
        if torch.isnan(descriptors).any():
            raise FloatingPointError(f"NaN in descriptors at step {ctx.step}")
        loss, trivial = self.loss(descriptors, labels)
        return loss, {"loss": float(loss.detach()), "b_acc": trivial}
