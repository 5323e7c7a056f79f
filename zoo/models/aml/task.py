"""AML training (budnikm/aml main.py, training.py, lib/datasets/traindataset.py) on retrieval-SfM-120k.

``task_args``: the fields of :class:`AMLArgs`. ``mode``: ``ts`` asymmetric contrastive (student
query vs the teacher's positive and hardest negatives), ``ts_self`` Contr+ (the teacher's own query
descriptor as one more positive), ``reg`` regression to the teacher's descriptor, ``rkd``
relational distillation, ``std`` symmetric contrastive without a teacher (cirtorch's protocol).
``calibrate_bn`` is for smoke runs only: before the first epoch, the student's BatchNorm statistics
are set from the training images (a random MobileNetV2 with frozen identity statistics outputs
~1e-10, below GeM's clamp, and cannot learn); AML starts from ImageNet weights instead.

As the original: one image per forward (sizes differ), BatchNorm layers in eval mode (their
affine parameters still learn), the loss summed over the tuples of a batch, teacher
descriptors single-scale, unwhitened, at ``image_size`` and fixed for the whole run, negatives
re-mined at every epoch from a fresh random pool (at most one per cluster, never the query's
cluster), on teacher descriptors (``ts``, ``ts_self``) or the student's own (``std``).
AML's validation pass (loss on the ``val`` split) is not run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from zoo.data.base import ImageRecord
from zoo.data.sfm120k import EpochTuples, ImageList, draw_pairs, draw_pool, mine_negatives, read_sfm120k
from zoo.distributed import unwrap
from zoo.engine.extract import extract_descriptors
from zoo.errors import InputError
from zoo.io import atomic_path, zoo_cache_dir
from zoo.models.aml.loss import contrastive_loss, regression_loss, rkd_loss, tuple_labels
from zoo.settings import setting
from zoo.task import StepContext, TrainTask, register_task

MODES = ("ts", "ts_self", "reg", "rkd", "std")


@dataclass
class AMLArgs:
    """``task_args`` of the AML task (defaults: AML's main.py)."""

    mode: Literal["ts", "ts_self", "reg", "rkd", "std"] = "ts"
    num_negatives: int = setting(5, minimum=1)
    query_size: int = setting(2000, minimum=1, help="tuples per epoch")
    pool_size: int = setting(20000, minimum=1, help="images for negative mining; images per epoch for reg/rkd")
    image_size: int = setting(1024, minimum=1, help="longer side, never upsampled")
    margin: float = setting(0.7, positive=True)
    teacher_pretrained: bool | str | None = setting(None, help="teacher weights (default: teacher_<teacher>, cirtorch's)")
    teacher_features: str | None = setting(None, help="AML --feat-path file (D, N) .npy instead of extracting them")
    calibrate_bn: bool = False


def _bn_eval(module: nn.Module) -> None:
    # AML set_batchnorm_eval: running statistics frozen (one image per forward), affine params learn.
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def extract(net: nn.Module, paths: list[Path], transform: Any, device: torch.device, desc: str) -> torch.Tensor:
    """``(N, D)`` single-scale descriptors, one image at a time as cirtorch's ``extract_vectors``
    (through the shared extraction, sharded over the ranks of a torchrun job, on every rank)."""
    result = extract_descriptors(net, [ImageRecord(p) for p in paths], transform, encode=net, batch_size=1,
                                 device=device, precision="fp32", channels_last=False, progress=len(paths) >= 100, desc=desc,
                                 all_ranks=True)
    return result.descriptors if paths else torch.zeros(0, 0)


class _AMLItems(Dataset):
    """Items of one epoch: a tuple (tuple modes) or one image (``reg``/``rkd``)."""

    def __init__(self, task: "AMLTask") -> None:
        self.task = task

    def __len__(self) -> int:
        return self.task.items_per_epoch

    def __getitem__(self, i: int) -> dict[str, Any]:
        from zoo.io import load_image
        t = self.task
        if t.tuples is None:
            raise InputError("AML: no tuples for this epoch (on_epoch_start was not run)")
        tf, images = t.transform, t.split.images
        if t.mode in ("reg", "rkd"):
            idx = t.tuples.qidxs[i]
            return {"query": tf(load_image(images[idx])).unsqueeze(0), "qidx": torch.tensor(idx)}
        q, p, negs = t.tuples.qidxs[i], t.tuples.pidxs[i], t.tuples.nidxs[i]
        item = {"query": tf(load_image(images[q])).unsqueeze(0), "qidx": torch.tensor(q),
                "pidx": torch.tensor(p), "nidx": torch.tensor(negs, dtype=torch.long)}
        if t.mode == "std":
            item["others"] = [tf(load_image(images[j])).unsqueeze(0) for j in (p, *negs)]
        return item


def _collate(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch  # images differ in size: the step runs them one by one


@register_task("aml")
class AMLTask(TrainTask):
    collate_fn = staticmethod(_collate)
    Args = AMLArgs

    def __init__(self, recipe: dict[str, Any], data_root: Path | None, dist: Any) -> None:
        super().__init__(recipe, data_root, dist)
        a = self.args
        self.mode, self.num_negatives, self.query_size, self.pool_size = a.mode, a.num_negatives, a.query_size, a.pool_size
        self.image_size, self.margin, self.calibrate_bn = a.image_size, a.margin, a.calibrate_bn
        self.teacher_pretrained, self.teacher_features_path = a.teacher_pretrained, a.teacher_features
        self.tuples: EpochTuples | None = None
        self._teacher_feats: torch.Tensor | None = None

    # -- set-up --
    def check_data(self) -> None:
        if self.data_root is None:
            raise InputError("task aml needs --data-root (the retrieval-SfM-120k folder)")
        self.split = read_sfm120k(self.data_root, "train")
        from zoo.models.aml.modeling import AMLTransform
        self.transform = AMLTransform(self.image_size)
        self.items_per_epoch = (min(self.pool_size, len(self.split.images)) if self.mode in ("reg", "rkd")
                                else min(self.query_size, len(self.split.qpool)))

    def build_model(self) -> nn.Module:
        model = self.recipe_model()
        if model.teacher is not None or model.student is None:
            raise InputError("model: AML trains a student alone (a symmetric variant, e.g. mobilenetv2_resnet101); "
                             "the teacher is built by the task")
        if model.whiten_ss is not None or model.multiscale:
            raise InputError("model.args: train with whitening: false and multiscale: false (AML learns "
                             "whitening afterwards and trains single-scale)")
        self.teacher_name = {2048: "resnet101", 512: "vgg16"}[model.dim]
        return model

    def build_dataset(self) -> Dataset:
        return _AMLItems(self)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        student = model.student
        trunk = [p for n, p in student.named_parameters() if not n.startswith("pool.")]
        # AML main.py: GeM p at 10x the learning rate, without weight decay
        return [{"params": trunk}, {"params": list(student.pool.parameters()), "lr_scale": 10.0, "weight_decay": 0.0}]

    # -- teacher descriptors --
    def teacher_features(self) -> torch.Tensor:
        """``(N, D)`` teacher descriptors of every training image (computed once, cached on disk)."""
        if self._teacher_feats is not None:
            return self._teacher_feats
        if self.teacher_features_path:
            arr = np.load(self.teacher_features_path)
            if arr.shape[1] != len(self.split.images):
                raise InputError(f"{self.teacher_features_path}: {arr.shape[1]} columns for {len(self.split.images)} images")
            self._teacher_feats = torch.from_numpy(np.ascontiguousarray(arr.T)).float()
            return self._teacher_feats
        pretrained = self.teacher_pretrained if self.teacher_pretrained is not None else f"teacher_{self.teacher_name}"
        pkl = Path(self.data_root) / "retrieval-SfM-120k.pkl"
        key = hashlib.sha256(f"{pkl.resolve()}|{pkl.stat().st_size}|{pkl.stat().st_mtime_ns}|{self.teacher_name}|"
                             f"{pretrained}|{self.image_size}".encode()).hexdigest()[:20]
        cache = zoo_cache_dir() / "aml_teacher_features" / f"{key}.pt"
        if cache.is_file() and pretrained is not False:
            self._teacher_feats = torch.load(cache, weights_only=True)
            return self._teacher_feats
        # random teacher (pretrained=False, smoke runs): seeded so that every rank builds the same one
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.recipe.get("seed", 0))
            teacher = self.create_model("aml_student", variant=f"teacher_{self.teacher_name}", pretrained=pretrained,
                                       whitening=False).to(self.dist.device).eval()
        feats = extract(teacher.teacher, self.split.images, self.transform, self.dist.device, "teacher descriptors")
        if pretrained is not False and self.dist.is_main:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                torch.save(feats, tmp)
        self._teacher_feats = feats
        return feats

    @torch.no_grad()
    def _calibrate_bn(self, student: nn.Module) -> None:
        bns = [m for m in student.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the images
        student.train()
        by_size: dict[tuple[int, ...], list[torch.Tensor]] = {}
        for x in ImageList(self.split.images, self.transform):
            by_size.setdefault(tuple(x.shape), []).append(x)
        for xs in by_size.values():  # batches of equal-sized images (train-mode BN needs > 1 value)
            student(torch.stack(xs).to(self.dist.device))
        for m in bns:
            m.momentum = 0.1

    # -- the loop --
    def on_epoch_start(self, model: nn.Module, epoch: int) -> None:
        if epoch == 0 and self.calibrate_bn:
            self._calibrate_bn(unwrap(model).student)
        gen = torch.Generator().manual_seed(self.recipe.get("seed", 0) * 1_000_003 + epoch)
        if self.mode in ("reg", "rkd"):
            self.tuples = EpochTuples(draw_pool(self.split, self.pool_size, gen), [], [])
            return
        qidxs, pidxs = draw_pairs(self.split, self.query_size, gen)
        pool = draw_pool(self.split, self.pool_size, gen)
        net = unwrap(model)
        was_training = net.training
        net.eval()
        student = net.student
        qvecs = extract(student, [self.split.images[i] for i in qidxs], self.transform, self.dist.device, "queries")
        if self.mode == "std":
            pvecs = extract(student, [self.split.images[i] for i in pool], self.transform, self.dist.device, "pool")
        else:
            pvecs = self.teacher_features()[pool]
        net.train(was_training)
        self.tuples = EpochTuples(qidxs, pidxs, mine_negatives(qvecs, pvecs, pool, qidxs, self.split.clusters,
                                                               self.num_negatives))

    def training_step(self, model: nn.Module, batch: list[dict[str, Any]], ctx: StepContext
                      ) -> tuple[torch.Tensor, dict[str, float]]:
        _bn_eval(model)
        queries = torch.cat([model(item["query"]) for item in batch])
        if self.mode in ("reg", "rkd"):
            target = self.teacher_features()[torch.stack([item["qidx"] for item in batch]).cpu()].to(queries.device)
            loss = regression_loss(queries, target) if self.mode == "reg" else rkd_loss(queries, target)
            return loss, {}
        if self.mode == "std":
            cands = torch.stack([torch.cat([model(x) for x in item["others"]]) for item in batch])
        else:
            feats = self.teacher_features()
            rows = [torch.cat([item["qidx"].view(1), item["pidx"].view(1), item["nidx"].view(-1)]).cpu() for item in batch]
            cands = torch.stack([feats[r] for r in rows]).to(queries.device)
            if self.mode == "ts":
                cands = cands[:, 1:]
        n_neg = cands.shape[1] - (2 if self.mode == "ts_self" else 1)
        labels = tuple_labels(len(batch), n_neg, extra_positive=self.mode == "ts_self", device=queries.device)
        loss = contrastive_loss(queries, cands.to(queries.dtype), labels, margin=self.margin)
        # The original sums the contrastive loss over every tuple of its (single-process) batch. The
        # engine divides by accumulation steps and DDP averages over ranks; scaling by both keeps the
        # gradient that of the sum over the global batch, whatever the number of processes.
        return loss * self.dist.world_size * self.recipe.get("grad_accum_steps", 1), {}

    # -- resumable state --
    def state_dict(self) -> dict[str, Any]:
        t = self.tuples
        return {} if t is None else {"qidxs": t.qidxs, "pidxs": t.pidxs, "nidxs": t.nidxs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.tuples = EpochTuples(list(state["qidxs"]), list(state["pidxs"]), [list(n) for n in state["nidxs"]])
