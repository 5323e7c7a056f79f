"""UCDIR training (conghui1002/UCDIR ``main.py``, ``builder.py``, ``loader.py``) on two image domains.

Each item is one image of domain A and one of domain B (index ``i`` of each; past the end of the
smaller domain a random image of it, ``loader.TrainDataset``), each in two MoCo v2 augmentations
(query and key). Per step (``builder.UCDIR.forward`` + ``main.train``):

1. queries of both domains through the query encoder (one forward, BatchNorm over A and B together);
2. momentum update of the key encoder (``m = 0.999``; parameters only, BatchNorm statistics are
   the key encoder's own), then keys through it with shuffled BatchNorm: in one process the
   batch is permuted and normalised in 2 interleaved groups (``SplitBatchNorm``, as the original);
   under DDP the keys of all processes are shuffled across them (MoCo's ``_batch_shuffle_ddp``)
   and each process normalises ``max(1, 2 // world_size)`` groups;
3. the keys overwrite their images' columns of the domain's memory bank (all processes' keys);
4. losses (:mod:`zoo.models.ucdir.loss`): instance contrast from the start, cluster-wise contrast from
   ``cluster_start_epoch`` with its ramp, self-entropy and distance-of-distance from their epochs.

At the start of epoch 0 the banks are filled with the key encoder's eval-mode descriptors of every
image (eval transform); from ``cluster_start_epoch`` on, every epoch starts by clustering those
descriptors per domain with k-means (k = ``num_cluster``, niter 20, nredo 5, seed = clustering
index; faiss when installed). Banks and clusters are task state (exact resume).

Epoch selection: the original evaluates P@K on the training images *with their labels* after
every epoch and reports the best epoch. ``select_epoch: last`` (default) exports the last epoch's
key encoder; ``select_epoch: best_on_labels`` does what the original does (P@K of both directions
after every epoch, the epoch with the best mean of the first K is exported; it uses the labels, so
it is not an unsupervised model selection).

``task_args``: the fields of :class:`UCDIRArgs` (defaults = ``scripts/office-home.sh``), the loss
weights and start epochs of :class:`zoo.models.ucdir.loss.UCDIRLossWeights` among them.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as tdist
import torchvision.transforms as T
from PIL import ImageFilter
from torch import nn
from torch.utils.data import Dataset

from zoo import distributed as D
from zoo.data.base import ImageRecord
from zoo.data.domains import Domain
from zoo.engine.extract import extract_descriptors
from zoo.errors import DatasetError
from zoo.io import load_image
from zoo.kmeans import kmeans
from zoo.layers.norm import l2n
from zoo.layers.split_bn import set_bn_splits
from zoo.models.ucdir.loss import UCDIRLossWeights, ucdir_loss
from zoo.models.ucdir.modeling import IMAGENET_MEAN, IMAGENET_STD, UCDIRNet, ucdir_transforms
from zoo.settings import setting
from zoo.task import StepContext, TrainTask, register_task

log = logging.getLogger("zoo.train.ucdir")


class GaussianBlur:
    """PIL Gaussian blur with a radius drawn from ``sigma`` (MoCo v2 ``loader.GaussianBlur``)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = sigma

    def __call__(self, img: Any) -> Any:
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def moco_v2_augmentation(image_size: int = 224, crop_scale: tuple[float, float] = (0.2, 1.0)) -> T.Compose:
    """MoCo v2 ``aug_plus`` (``loader.TrainDataset``): crop 0.2-1, jitter 0.8, grey 0.2, blur 0.5, flip."""
    return T.Compose([
        T.RandomResizedCrop(image_size, scale=tuple(crop_scale)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([GaussianBlur((0.1, 2.0))], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def read_domain(dataset: str, root: Path, domain: str, split: str | None) -> Domain:
    if dataset == "office_home":
        from zoo.data.office_home import office_home_domain
        return office_home_domain(root, domain, split)
    if dataset == "domainnet":
        from zoo.data.domainnet import domainnet_domain
        return domainnet_domain(root, domain, split)
    raise ValueError(f"task_args.dataset: expected office_home or domainnet, got {dataset!r}")


class TwoDomainPairs(Dataset):
    """Item ``i``: two augmentations of image ``i`` of each domain (a random image past a domain's end)."""

    def __init__(self, a: Domain, b: Domain, transform: Any) -> None:
        self.domains, self.transform = (a, b), transform

    def __len__(self) -> int:
        return max(len(d) for d in self.domains)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, dom in zip("AB", self.domains):
            # The engine reseeds `random` per item, so this draw is reproducible (loader.TrainDataset).
            i = index if index < len(dom) else random.randint(0, len(dom) - 1)
            img = load_image(dom.paths[i])
            out[f"q_{name}"], out[f"k_{name}"] = self.transform(img), self.transform(img)
            out[f"id_{name}"] = torch.tensor(i)
        return out


def _all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenation over ranks of same-shaped tensors (no gradient)."""
    if not D.is_distributed():
        return x
    out = [torch.empty_like(x) for _ in range(tdist.get_world_size())]
    tdist.all_gather(out, x.contiguous())
    return torch.cat(out)


class UCDIRModel(nn.Module):
    """Query encoder (trained) + momentum key encoder with split BatchNorm; ``forward`` = query descriptors."""

    def __init__(self, encoder_q: UCDIRNet, momentum: float = 0.999, key_bn_splits: int = 2) -> None:
        super().__init__()
        self.encoder_q = encoder_q
        self.encoder_k = UCDIRNet(encoder_q.arch, encoder_q.dim, bn_splits=key_bn_splits)
        # Both encoders start from the same weights and statistics (the original loads encoder_q's into both).
        self.encoder_k.load_state_dict(encoder_q.state_dict())
        for p in self.encoder_k.parameters():
            p.requires_grad = False
        self.momentum = momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder_q(x)

    @torch.no_grad()
    def momentum_update(self) -> None:
        for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            pk.data = pk.data * self.momentum + pq.data * (1.0 - self.momentum)

    @torch.no_grad()
    def shuffled_keys(self, im_k: torch.Tensor) -> torch.Tensor:
        """Key descriptors of ``im_k`` with BatchNorm over a random partition of the (global) batch."""
        if not D.is_distributed():
            perm = torch.randperm(im_k.shape[0]).to(im_k.device)  # the original draws it on the CPU generator
            return self.encoder_k(im_k[perm])[torch.argsort(perm)]
        # MoCo's DDP shuffle: gather every rank's images, one permutation from rank 0, each rank its slice.
        n, rank = im_k.shape[0], tdist.get_rank()
        everything = _all_gather_cat(im_k)
        perm = torch.randperm(everything.shape[0]).to(im_k.device)
        tdist.broadcast(perm, src=0)
        keys = _all_gather_cat(self.encoder_k(everything[perm[rank * n:(rank + 1) * n]]))
        return keys[torch.argsort(perm)][rank * n:(rank + 1) * n]


def ucdir_step(model: nn.Module, batch: dict[str, torch.Tensor], banks: list[torch.Tensor],
               clusterings: Any, epoch: int, weights: UCDIRLossWeights,
               momentum_update: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One UCDIR step (``builder.UCDIR.forward`` + ``main.train``); ``banks`` (D, N) are updated in place.

    ``model`` is a :class:`UCDIRModel` or its DDP wrapper (the query forward goes through it).
    """
    inner: UCDIRModel = D.unwrap(model)  # type: ignore[assignment]
    b = batch["q_A"].shape[0]
    q_a, q_b = torch.split(model(torch.cat([batch["q_A"], batch["q_B"]])), b)
    with torch.no_grad():
        if momentum_update:
            inner.momentum_update()
        k_a, k_b = torch.split(inner.shuffled_keys(torch.cat([batch["k_A"], batch["k_B"]])).float(), b)
        # The banks take this batch's keys (of every rank) before the losses read them.
        for bank, k, ids in ((banks[0], k_a, batch["id_A"]), (banks[1], k_b, batch["id_B"])):
            bank.index_copy_(1, _all_gather_cat(ids), _all_gather_cat(k).t().to(bank.dtype))
    q_a, q_b = q_a.float(), q_b.float()
    return ucdir_loss((q_a, q_b), (k_a, k_b), (batch["id_A"], batch["id_B"]), (banks[0], banks[1]),
                      clusterings, epoch, weights)


def precision_at_k(feats_a: torch.Tensor, labels_a: np.ndarray, feats_b: torch.Tensor, labels_b: np.ndarray,
                   ks: list[int]) -> dict[str, float]:
    """The original's P@K of both directions (``main.retrieval_precision_cal``) on training descriptors."""
    from zoo.data.base import RetrievalSet
    from zoo.metrics.precision import class_precision

    out = {}
    for name, (fq, lq, fd, ld) in {"A->B": (feats_a, labels_a, feats_b, labels_b),
                                   "B->A": (feats_b, labels_b, feats_a, labels_a)}.items():
        gt = {"query_labels": lq, "database_labels": ld}
        res = class_precision(fq, fd, RetrievalSet(name, Path("."), [], [], gt, "class_precision"), k_values=ks)
        out.update({f"{name} P@{k}": res.metrics[f"P@{k}"] for k in ks})
    return out


@dataclass(frozen=True)
class UCDIRArgs(UCDIRLossWeights):
    """``task_args`` of the UCDIR task: the loss weights and start epochs, and the settings below."""

    dataset: Literal["office_home", "domainnet"] = "office_home"
    domains: list[str] = setting(["Product", "Clipart"], length=2, help="the two domains [A, B]")
    split: str | None = setting(None, help="null for Office-Home, train for DomainNet")
    num_cluster: int | list[int] | None = setting(None, minimum=1, help="k of k-means (null: the number of classes)")
    moco_momentum: float = setting(0.999, minimum=0.0)
    key_bn_splits: int = setting(2, minimum=1)
    kmeans_niter: int = setting(20, minimum=1)
    kmeans_nredo: int = setting(5, minimum=1)
    kmeans_backend: Literal["auto", "faiss", "torch"] = "auto"
    image_size: int = setting(224, minimum=1)
    crop_scale: tuple[float, ...] = setting((0.2, 1.0), minimum=0.0, length=2, help="RandomResizedCrop scale")
    eval_resize: int = setting(256, minimum=1)
    eval_batch_size: int = setting(128, minimum=1)
    prec_k: list[int] = setting([1, 5, 15], minimum=1)
    select_epoch: Literal["last", "best_on_labels"] = "last"


@register_task("ucdir")
class UCDIRTask(TrainTask):
    Args = UCDIRArgs

    def __init__(self, recipe: dict[str, Any], data_root: Path | None, dist: Any) -> None:
        super().__init__(recipe, data_root, dist)
        a = self.args
        self.dataset_name, self.domain_names, self.split = a.dataset, list(a.domains), a.split
        self.num_cluster = a.num_cluster
        self.momentum, self.key_bn_splits = a.moco_momentum, a.key_bn_splits
        self.kmeans_args = {"niter": a.kmeans_niter, "nredo": a.kmeans_nredo, "backend": a.kmeans_backend}
        self.image_size, self.crop_scale = a.image_size, a.crop_scale
        self.eval_resize, self.eval_batch_size, self.prec_k = a.eval_resize, a.eval_batch_size, list(a.prec_k)
        self.select_epoch = a.select_epoch
        self.weights = UCDIRLossWeights(**{f.name: getattr(a, f.name) for f in dataclasses.fields(UCDIRLossWeights)})
        self.domains: list[Domain] = []
        self.banks: list[torch.Tensor] | None = None
        self.clusters: dict[str, Any] | None = None
        self.best: dict[str, Any] = {"score": None, "epoch": None, "encoder_k": None, "history": []}
        self._momentum_step = -1

    # -- set-up ---------------------------------------------------------------------
    def check_data(self) -> None:
        if self.data_root is None:
            raise DatasetError(f"task ucdir needs --data-root with the {self.dataset_name} domain folders")
        self.domains = [read_domain(self.dataset_name, self.data_root, d, self.split) for d in self.domain_names]
        if self.num_cluster is None:
            self.num_cluster = len(self.domains[0].classes)
        self.num_cluster = [int(k) for k in (self.num_cluster if isinstance(self.num_cluster, list) else [self.num_cluster])]
        small = min(len(d) for d in self.domains)
        if max(self.num_cluster) > small:
            raise DatasetError(f"task_args.num_cluster {max(self.num_cluster)} exceeds the {small} images of the smaller domain")

    def build_model(self) -> nn.Module:
        encoder = self.recipe_model()
        model = UCDIRModel(encoder, self.momentum, self.key_bn_splits)
        # Under DDP each process normalises its share of the shuffled keys: keep 2 groups in all when possible.
        set_bn_splits(model.encoder_k, max(1, self.key_bn_splits // self.dist.world_size))
        return model.train()

    def build_dataset(self) -> Dataset:
        return TwoDomainPairs(self.domains[0], self.domains[1], moco_v2_augmentation(self.image_size, self.crop_scale))

    # -- per epoch ------------------------------------------------------------------
    @torch.no_grad()
    def _features(self, model: nn.Module) -> list[torch.Tensor]:
        """Key-encoder eval-mode descriptors of every image of both domains (sharded over ranks, on every rank)."""
        inner: UCDIRModel = D.unwrap(model)  # type: ignore[assignment]
        enc = inner.encoder_k
        was_training = enc.training
        device = next(enc.parameters()).device
        tf, _ = ucdir_transforms(resize_shorter=self.eval_resize, center_crop=self.image_size)
        out = []
        for dom in self.domains:
            result = extract_descriptors(
                enc, [ImageRecord(p) for p in dom.paths], tf, encode=enc, batch_size=self.eval_batch_size,
                num_workers=self.recipe.get("num_workers", 0), device=device, precision="fp32", channels_last=False,
                progress=self.dist.is_main and len(dom) >= 500, desc=f"features {dom.name}", all_ranks=True)
            out.append(result.descriptors if len(dom) else torch.zeros(0, enc.dim))
        enc.train(was_training)
        return out

    def _cluster(self, feats: list[torch.Tensor]) -> dict[str, Any]:
        result: dict[str, Any] = {"im2cluster": [[], []], "centroids": [[], []]}
        if self.dist.is_main:
            for d, x in enumerate(feats):
                for seed, k in enumerate(self.num_cluster):
                    im2cluster, centroids = kmeans(x, k, seed=seed, **self.kmeans_args)
                    result["im2cluster"][d].append(im2cluster)
                    result["centroids"][d].append(l2n(centroids, dim=1))
        return D.broadcast_object(result)

    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        need_banks = self.banks is None or epoch == 0
        need_clusters = epoch >= self.weights.cluster_start_epoch
        if not (need_banks or need_clusters):
            return
        feats = self._features(model)
        device = self.dist.device
        if need_banks:
            self.banks = [f.t().contiguous().to(device) for f in feats]
        self.clusters = self._cluster(feats) if need_clusters else None

    def _clusterings(self) -> Any:
        if self.clusters is None:
            return None
        dev = self.dist.device
        return tuple([(i.to(dev), c.to(dev)) for i, c in zip(self.clusters["im2cluster"][d], self.clusters["centroids"][d])]
                     for d in range(2))

    # -- the loop -------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Any, ctx: StepContext) -> tuple[torch.Tensor, dict[str, float]]:
        if self.banks is None:
            raise RuntimeError("ucdir: memory banks are empty (on_epoch_start did not run)")
        # One momentum update per optimiser step, before the keys (as the original's forward).
        update = ctx.step != self._momentum_step
        self._momentum_step = ctx.step
        loss, parts = ucdir_step(model, batch, self.banks, self._clusterings(), ctx.epoch, self.weights, update)
        scalars = {name: float(v) for name, v in parts.items()}
        return loss, scalars

    def after_optimizer_step(self, model: nn.Module, ctx: StepContext) -> None:
        if self.select_epoch != "best_on_labels" or (ctx.step + 1) % ctx.steps_per_epoch:
            return
        feats = self._features(model)
        res = precision_at_k(feats[0], self.domains[0].labels, feats[1], self.domains[1].labels, self.prec_k)
        score = (res[f"A->B P@{self.prec_k[0]}"] + res[f"B->A P@{self.prec_k[0]}"]) / 2
        self.best["history"].append({"epoch": ctx.epoch, **res})
        if self.dist.is_main:
            log.info("epoch %d: %s", ctx.epoch, ", ".join(f"{k} {v:.2f}" for k, v in res.items()))
        if self.best["score"] is None or score > self.best["score"]:  # strictly better, as main.py:221
            inner = D.unwrap(model)
            self.best.update(score=score, epoch=ctx.epoch,
                             encoder_k={k: v.detach().cpu().clone() for k, v in inner.encoder_k.state_dict().items()})

    # -- state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"banks": [b.cpu() for b in self.banks] if self.banks is not None else None,
                "clusters": self.clusters, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.banks = [b.to(self.dist.device) for b in state["banks"]] if state["banks"] is not None else None
        self.clusters = state["clusters"]
        self.best = state["best"]

    def export_model(self, model: nn.Module) -> nn.Module:
        out = self.recipe_model(pretrained=False)
        inner: UCDIRModel = D.unwrap(model)  # type: ignore[assignment]
        state = inner.encoder_k.state_dict()
        note = "key encoder of the last epoch"
        if self.select_epoch == "best_on_labels" and self.best["encoder_k"] is not None:
            state = self.best["encoder_k"]
            note = (f"key encoder of epoch {self.best['epoch']}, best P@{self.prec_k[0]} on the training images' "
                    "labels (the original's selection)")
        out.load_state_dict(copy.deepcopy(state))
        out.zoo_config["selection"] = note
        return out
