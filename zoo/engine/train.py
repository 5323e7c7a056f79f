"""The training loop every recipe runs (``training/train.py`` is its command line).

The engine owns what is generic: process group and DistributedDataParallel, resumable
distributed sampling, optimiser and schedule from the recipe, autocast and grad scaling,
accumulation, clipping, atomic checkpoints with exact resume, logging and export. A
:class:`~zoo.task.TrainTask` owns the model, data, sampler and loss of one paper.

Exact resume: a checkpoint holds model, optimiser, schedule, grad scaler, task state, the
position (epoch, step) and every RNG state of every rank. Randomness inside a data set's
``__getitem__`` is reseeded per item from ``(seed, epoch, index)``, so augmentation does not
depend on where a run was resumed, on the number of loader workers, nor on the world size; the
data loader gets its own generator, so building it consumes none of the global RNG. On CPU an
interrupted and resumed run ends with bitwise the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import itertools
import json
import logging
import math
import os
import random
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler

import zoo
from zoo import distributed as D
from zoo.data.synthetic import materialise
from zoo.distributed import unwrap
from zoo.engine.checkpoint import check_plain, list_checkpoints, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from zoo.engine.recipes import RecipeError, dump_recipe, validate
from zoo.engine.schedules import Schedule, build_optimizer
from zoo.errors import CheckpointError, DatasetError, InputError, UnknownNameError
from zoo.io import atomic_write_text, check_output_dir
from zoo.task import DistInfo, StepContext, TrainTask, get_task

log = logging.getLogger("zoo.train")

#: what a run writes into its output folder: any of them there is an earlier run
RUN_FILES = ("checkpoints", "export", "metrics.jsonl", "metrics.csv", "recipe.yaml", "eval", "tensorboard")
#: recipe keys that may change between a run and its resume (they do not affect the weights)
RESUMABLE_CHANGES = {"description", "follows", "eval", "num_workers", "checkpoint_every",
                     "keep_checkpoints", "log_every"}
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainOptions:
    """Run-time choices that are not part of the recipe (they do not change the result)."""

    out_dir: Path
    data_root: Path | None = None
    resume: bool = False
    overwrite: bool = False              # replace an earlier run's files in out_dir
    device: str | None = None          # "cpu" | "cuda" | None (CUDA when available)
    tensorboard: bool = False
    progress: bool = True
    stop_after_steps: int | None = None  # debug: stop without a final checkpoint, like a killed run


@dataclass
class TrainResult:
    out_dir: Path
    export_dir: Path | None
    step: int
    epoch: int
    interrupted: bool
    last_metrics: dict[str, float]


# --------------------------------------------------------------------------- data


class ShardedRandomSampler(Sampler[int]):
    """The engine's default sampler: a permutation of the data set seeded by (seed, epoch), sharded by rank.

    Rank ``r`` takes every ``world``-th index from position ``r``; the tail that does not divide
    evenly is dropped so that every rank yields the same count. With per-rank batches ``b`` the
    union of the ranks' ``k``-th batches is the ``k``-th block of ``b * world`` indices of the
    permutation: the same global batches as one process with batch ``b * world``.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        self.size, self.seed, self.rank, self.world_size, self.shuffle = size, seed, rank, world_size, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size // self.world_size

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        else:
            order = torch.arange(self.size)
        return iter(order[: len(self) * self.world_size][self.rank::self.world_size].tolist())


class _SkipFirst(Sampler):
    """Yields a sampler's items after the first ``skip`` (the part of an epoch done before a resume)."""

    def __init__(self, sampler: Sampler, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator:
        return itertools.islice(iter(self.sampler), self.skip, None)


class _SeededItems(Dataset):
    """Reseeds python/numpy/torch RNGs from (seed, epoch, index) before each item of ``dataset``.

    In the main process (``num_workers=0``) the generators' states are restored afterwards, so
    that loading data does not disturb the training RNG (dropout, task randomness).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        key = int(index) if isinstance(index, (int, np.integer)) else zlib.crc32(repr(index).encode())
        item_seed = np.random.SeedSequence([self.seed, self.epoch, key]).generate_state(1, np.uint64)[0]
        in_worker = torch.utils.data.get_worker_info() is not None
        saved = None if in_worker else (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(int(item_seed))
        np.random.seed(int(item_seed) % 2**32)
        torch.default_generator.manual_seed(int(item_seed) % 2**63)
        try:
            return self.dataset[index]
        finally:
            if saved is not None:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.set_rng_state(saved[2])


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor (in nested tuples/lists/dicts) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(v, device) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def count_images(batch: Any) -> int:
    """Images in a batch: all leading dims of every tensor with >= 4 dims; else the first tensor's length."""
    tensors = []

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            tensors.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
    walk(batch)
    images = sum(math.prod(t.shape[:-3]) for t in tensors if t.dim() >= 4)
    return images or (len(tensors[0]) if tensors and tensors[0].dim() else 0)


# --------------------------------------------------------------------------- logging


class _Meter:
    """Scalars summed between two log rows; a row averages them over micro-batches (or steps) and ranks."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss: torch.Tensor | float = 0.0  # kept as a tensor: no device sync per micro-batch
        self.micro_sums: dict[str, float] = {}
        self.step_sums: dict[str, float] = {}
        self.micro = self.steps = self.images = 0
        self.tick = time.perf_counter()

    def add(self, loss: torch.Tensor, scalars: dict[str, float], images: int) -> None:
        """One micro-batch: its loss and the task's scalars."""
        self.loss = self.loss + loss.detach().float()
        for key, value in scalars.items():
            if key != "loss":  # the engine logs the returned loss itself
                self.micro_sums[key] = self.micro_sums.get(key, 0.0) + float(value)
        self.micro += 1
        self.images += images

    def step(self, **scalars: float) -> None:
        """One optimiser step and its own scalars (e.g. the gradient norm)."""
        for key, value in scalars.items():
            self.step_sums[key] = self.step_sums.get(key, 0.0) + value
        self.steps += 1

    def row(self, world_size: int, lrs: list[float]) -> dict[str, float]:
        local = {**{k: v / self.micro for k, v in self.micro_sums.items()},
                 **{k: v / self.steps for k, v in self.step_sums.items()},
                 "loss": float(self.loss) / self.micro, "images": self.images}
        seconds = time.perf_counter() - self.tick
        mean = D.mean_over_ranks(local)
        images = mean.pop("images") * world_size
        row = {"loss": mean.pop("loss"), "lr": lrs[0], **{f"lr_{i}": lr for i, lr in enumerate(lrs[1:], 1)},
               "images_per_s": images / max(seconds, 1e-9), **mean}
        self.reset()
        return row


class MetricsLog:
    """Rows of scalars to ``metrics.jsonl`` and ``metrics.csv`` (and TensorBoard when asked), rank 0 only."""

    def __init__(self, out_dir: Path, enabled: bool, resume_step: int | None, tensorboard: bool) -> None:
        self.enabled = enabled
        self.jsonl, self.csv = out_dir / "metrics.jsonl", out_dir / "metrics.csv"
        self.fields: list[str] | None = None
        self.writer = None
        if not enabled:
            return
        rows = []
        if resume_step is not None and self.jsonl.is_file():
            # Rows written after the checkpoint (before the interruption) are replayed by the resumed run.
            rows = [r for r in map(json.loads, self.jsonl.read_text().splitlines()) if r.get("step", 0) <= resume_step]
        atomic_write_text(self.jsonl, "".join(json.dumps(r) + "\n" for r in rows))
        self.csv.unlink(missing_ok=True)
        for row in rows:
            if row.get("kind") == "train":
                self._csv_row(row)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("--tensorboard: the tensorboard package is not installed; logging to CSV/JSONL only")
            else:
                self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=resume_step)

    def _csv_row(self, row: dict[str, Any]) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row)
        with self.csv.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if row.get("kind") == "train":
            self._csv_row(row)
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.writer.add_scalar(f"{row.get('kind', 'train')}/{key}", value, row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------- checks before any work


def _resolve_task(recipe: dict[str, Any]) -> type[TrainTask]:
    for module in recipe["imports"]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            raise RecipeError(f"imports: cannot import {module!r} ({err})") from None
    try:
        return get_task(recipe["task"])
    except UnknownNameError as err:
        raise RecipeError(f"task: {err}") from None


def _check_model(recipe: dict[str, Any]) -> None:
    from zoo.models import get_model_info

    try:
        info = get_model_info(recipe["model"]["name"])
        if recipe["model"]["variant"]:
            info.variant_kwargs(recipe["model"]["variant"])
    except (KeyError, ValueError, NotImplementedError) as err:
        raise RecipeError(f"model: {err.args[0] if err.args else err}") from None


def resolve_data_dir(recipe: dict[str, Any], data_root: Path | None, out_dir: Path | None = None) -> Path | None:
    """``data_root / data.subdir`` (checked to exist), ``data_root`` without a subdir, or None.

    Without ``data_root``, a recipe with ``data.synthetic`` gets its tiny generated set in ``out_dir/data``.
    """
    subdir = recipe["data"]["subdir"]
    if data_root is None:
        if recipe["data"]["synthetic"] and out_dir is not None:
            data_dir = materialise(recipe["data"]["synthetic"], Path(out_dir) / "data")
            if os.environ.get("RANK", "0") == "0":
                log.info("no --data-root: training on the synthetic %r set in %s", recipe["data"]["synthetic"], data_dir)
            return data_dir
        if subdir:
            raise DatasetError(f"recipe {recipe['name']!r} trains on {subdir!r}: pass --data-root DIR "
                               f"(the folder that holds {subdir}/)")
        return None
    data_root = Path(data_root).expanduser()
    if not data_root.is_dir():
        raise DatasetError(f"--data-root {data_root}: no such directory")
    data_dir = data_root / subdir if subdir else data_root
    if not data_dir.is_dir():
        raise DatasetError(f"{data_dir}: no such directory (recipe {recipe['name']!r} expects its data "
                           f"set in {subdir!r} under --data-root {data_root})")
    return data_dir


def _check_resume_recipe(saved: dict[str, Any], recipe: dict[str, Any], where: Path) -> None:
    differ = sorted(k for k in set(saved) | set(recipe)
                    if k not in RESUMABLE_CHANGES and saved.get(k) != recipe.get(k))
    if differ:
        detail = "; ".join(f"{k}: {saved.get(k)!r} in the checkpoint vs {recipe.get(k)!r} now" for k in differ)
        raise RecipeError(f"--resume: the recipe differs from the one {where} was trained with ({detail}). "
                          "Pass the same overrides, or choose another --out for a new run")


# --------------------------------------------------------------------------- the loop


class Trainer:
    """One training run; build with :meth:`__init__` (all checks), run with :meth:`run`."""

    def __init__(self, recipe: dict[str, Any], options: TrainOptions) -> None:
        self.recipe = recipe = validate(recipe, source=f"recipe {recipe.get('name', '?')!r}")
        self.opts = options
        self.task_cls = _resolve_task(recipe)
        _check_model(recipe)
        self.data_dir = resolve_data_dir(recipe, options.data_root, options.out_dir)
        self.owns_group = not D.is_distributed()
        self.dist: DistInfo = D.init_distributed(options.device)
        self.dtype = _DTYPES[recipe["precision"]]
        if recipe["precision"] == "fp16" and self.dist.device.type != "cuda":
            raise RecipeError("precision: fp16 needs a CUDA device (grad scaling); use bf16 or fp32 on CPU")
        world, accum = self.dist.world_size, recipe["grad_accum_steps"]
        if recipe["batch_size"] % (world * accum):
            raise RecipeError(f"batch_size: the global batch {recipe['batch_size']} does not divide into "
                              f"{world} process(es) x {accum} accumulation step(s)")
        self.micro_batch = recipe["batch_size"] // (world * accum)
        self.out_dir = check_output_dir(options.out_dir, {"the data set folder": self.data_dir})
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.resume_from, self.resume_state = self._check_earlier_run(options)
        if self.resume_state is not None:
            _check_resume_recipe(self.resume_state["recipe"], recipe, self.resume_from)
        # The task reads its typed task_args here: a key or value that does not fit is a SettingsError.
        self.task: TrainTask = self.task_cls(recipe, self.data_dir, self.dist)
        self.task.micro_batch_size = self.micro_batch
        self.task.create_model = zoo.create_model
        self.task.check_data()
        self.evaluate = None
        if recipe["eval"]:
            self._check_eval()

    def _check_earlier_run(self, options: TrainOptions) -> tuple[Path | None, dict[str, Any] | None]:
        """Refuse to replace an earlier run's files unless asked; find the checkpoint ``--resume`` continues.

        Returns ``(checkpoint, its state)``, or ``(None, None)`` for a new run. With ``--resume``, a
        last checkpoint that cannot be read (a write cut off by a crash of the disk or the machine)
        gives way to the newest intact one, with a warning in the log.
        """
        if options.resume and options.overwrite:
            raise InputError("--resume continues the run in --out and --overwrite replaces it: pass only one")
        if options.overwrite:
            return None, None
        earlier = [name + ("/" if (self.out_dir / name).is_dir() else "")
                   for name in RUN_FILES if (self.out_dir / name).exists()]
        checkpoints = list_checkpoints(self.ckpt_dir)
        if earlier and not options.resume:
            raise InputError(f"{self.out_dir} already holds {', '.join(earlier)} of an earlier run: pass --resume "
                             "to continue it, --overwrite to replace it, or choose another --out")
        if not options.resume:
            return None, None
        if not checkpoints and (self.out_dir / "export").exists():
            raise InputError(f"--resume: {self.ckpt_dir} holds no checkpoint to continue from, and "
                             f"{self.out_dir / 'export'} holds an earlier run's model: pass --overwrite to train "
                             "again from the start, or choose another --out")
        for path in reversed(checkpoints):
            try:
                state = load_checkpoint(path)
            except CheckpointError as err:
                log.warning("--resume: %s cannot be read (%s); trying the checkpoint before it", path.name, err)
                continue
            if path != checkpoints[-1]:
                log.warning("--resume: continuing from %s, the newest intact checkpoint", path)
            return path, state
        if checkpoints:
            raise CheckpointError(f"--resume: none of the {len(checkpoints)} checkpoint(s) in {self.ckpt_dir} can be "
                                  "read; pass --overwrite to start again")
        return None, None

    def _remove_earlier_run(self) -> None:
        """``--overwrite``: delete the files an earlier run wrote (only those; the folder stays)."""
        removed = []
        for name in RUN_FILES:
            path = self.out_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            else:
                continue
            removed.append(name)
        if removed:
            print(f"--overwrite: removed {', '.join(removed)} of the earlier run in {self.out_dir}", flush=True)

    # -- set-up -----------------------------------------------------------------
    def _build(self) -> None:
        recipe, dist = self.recipe, self.dist
        _seed_all(recipe["seed"])  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        model = self.task.build_model().to(dist.device)
        self.model = model
        if dist.world_size > 1:
            kwargs = {"device_ids": [dist.device.index]} if dist.device.type == "cuda" else {}
            self.model = DistributedDataParallel(model, find_unused_parameters=recipe["find_unused_parameters"], **kwargs)
        self.dataset = self.task.build_dataset()
        self.seeded = _SeededItems(self.dataset, recipe["seed"])
        self.batch_sampler = self.task.build_batch_sampler(self.dataset, self.micro_batch, recipe["seed"])
        self.sampler = None if self.batch_sampler is not None else (
            self.task.build_sampler(self.dataset, recipe["seed"])
            or ShardedRandomSampler(len(self.dataset), recipe["seed"], dist.rank, dist.world_size))
        self.optimizer = build_optimizer(recipe["optimizer"], self.task.param_groups(model), model)
        self.steps_per_epoch = self._steps_in_epoch(0)
        if self.steps_per_epoch == 0:
            raise DatasetError(f"{self.data_dir or 'the data set'}: {len(self.dataset)} items give no full "
                               f"batch of {recipe['batch_size']} (global)")
        self.schedule = Schedule(self.optimizer, recipe["scheduler"], self.steps_per_epoch, recipe["epochs"])
        self.scaler = torch.amp.GradScaler(dist.device.type, enabled=recipe["precision"] == "fp16")
        _seed_all(recipe["seed"] + dist.rank)  # ranks draw different dropout/task randomness

    def _steps_in_epoch(self, epoch: int) -> int:
        source = self.batch_sampler if self.batch_sampler is not None else self.sampler
        if hasattr(source, "set_epoch"):
            source.set_epoch(epoch)
        try:
            n = len(source)  # type: ignore[arg-type]
        except TypeError:
            raise InputError(f"task {self.recipe['task']!r}: its sampler needs __len__ (items of one epoch "
                             "on this rank)") from None
        micro = n if self.batch_sampler is not None else n // self.micro_batch
        steps = micro // self.recipe["grad_accum_steps"]
        if self.recipe["max_steps_per_epoch"]:
            steps = min(steps, self.recipe["max_steps_per_epoch"])
        return D.all_reduce_min(steps)

    def _loader(self, epoch: int, skip_micro: int) -> DataLoader:
        self.seeded.epoch = epoch
        generator = torch.Generator().manual_seed(self.recipe["seed"] * 1_000_003 + epoch * 1009 + self.dist.rank)
        common = dict(num_workers=self.recipe["num_workers"], collate_fn=self.task.collate_fn,
                      pin_memory=self.dist.device.type == "cuda", generator=generator)
        if self.batch_sampler is not None:
            return DataLoader(self.seeded, batch_sampler=_SkipFirst(self.batch_sampler, skip_micro), **common)
        return DataLoader(self.seeded, batch_size=self.micro_batch, drop_last=True,
                          sampler=_SkipFirst(self.sampler, skip_micro * self.micro_batch), **common)

    # -- checkpoints ------------------------------------------------------------
    def _save(self, step: int, epoch: int, step_in_epoch: int, epoch_steps: int) -> None:
        if step_in_epoch >= epoch_steps:
            epoch, step_in_epoch = epoch + 1, 0
        rngs = D.all_gather_object(rng_state())
        if self.dist.is_main:
            save_checkpoint({
                "recipe": self.recipe, "step": step, "epoch": epoch, "step_in_epoch": step_in_epoch,
                "world_size": self.dist.world_size,
                "model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
                "task": check_plain(self.task.state_dict(), "task.state_dict()"), "rng": rngs,
            }, self.ckpt_dir, step, self.recipe["keep_checkpoints"])
        D.barrier()

    def _restore(self, state: dict[str, Any]) -> tuple[int, int, int]:
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.task.load_state_dict(state["task"])
        if state["world_size"] == self.dist.world_size:
            set_rng_state(state["rng"][self.dist.rank])
        else:
            log.warning("resuming a %d-process run with %d processes: data order is kept, random states "
                        "are reseeded (the result will not be bitwise that of an uninterrupted run)",
                        state["world_size"], self.dist.world_size)
            _seed_all(self.recipe["seed"] + self.dist.rank + 7919 * state["step"])
        return state["step"], state["epoch"], state["step_in_epoch"]

    # -- run --------------------------------------------------------------------
    def run(self) -> TrainResult:
        try:
            return self._run()
        finally:
            if self.owns_group:
                D.cleanup()

    def _run(self) -> TrainResult:
        recipe, dist, opts = self.recipe, self.dist, self.opts
        self._build()
        step = first_epoch = start_in_epoch = 0
        if self.resume_state is not None:
            step, first_epoch, start_in_epoch = self._restore(self.resume_state)
            if dist.is_main:
                print(f"resuming from {self.resume_from} (epoch {first_epoch}, step {step})", flush=True)
            self.resume_state = None
        elif opts.resume and dist.is_main:
            print(f"--resume: no checkpoint in {self.ckpt_dir}; starting a new run", flush=True)
        if dist.is_main:
            if opts.overwrite:
                self._remove_earlier_run()
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / "recipe.yaml", dump_recipe(recipe))
        metrics_log = MetricsLog(self.out_dir, dist.is_main, step if self.resume_from else None, opts.tensorboard)
        from tqdm.auto import tqdm
        bar = tqdm(total=recipe["epochs"] * self.steps_per_epoch, initial=step, desc=recipe["name"],
                   disable=not (dist.is_main and opts.progress), dynamic_ncols=True, unit="step")
        meter = _Meter()
        last: dict[str, Any] = {}
        interrupted = False
        try:
            for epoch in range(first_epoch, recipe["epochs"]):
                epoch_steps = self._steps_in_epoch(epoch) if epoch else self.steps_per_epoch
                if start_in_epoch == 0:
                    self.task.on_epoch_start(self.model, epoch)
                self.model.train()
                batches = iter(self._loader(epoch, start_in_epoch * recipe["grad_accum_steps"]))
                for step_in_epoch in range(start_in_epoch, epoch_steps):
                    lrs = self.schedule.apply(step, epoch)
                    ctx = StepContext(epoch=epoch, step=step, steps_per_epoch=epoch_steps, dist=dist,
                                      autocast_dtype=self.dtype)
                    self._optimizer_step(batches, ctx, meter)
                    step += 1
                    bar.update(1)
                    done = step_in_epoch + 1 == epoch_steps
                    if step % recipe["log_every"] == 0 or done:
                        last = {"kind": "train", "step": step, "epoch": epoch, **meter.row(dist.world_size, lrs)}
                        if not math.isfinite(last["loss"]) and recipe["precision"] != "fp16":
                            raise FloatingPointError(f"loss is {last['loss']} at step {step} (epoch {epoch})")
                        metrics_log.write(last)
                        bar.set_postfix(loss=f"{last['loss']:.4g}", img_s=f"{last['images_per_s']:.1f}",
                                        lr=f"{lrs[0]:.3g}")
                    if opts.stop_after_steps is not None and step >= opts.stop_after_steps:
                        interrupted = True
                        return TrainResult(self.out_dir, None, step, epoch, True, last)
                    if done or (recipe["checkpoint_every"] and step % recipe["checkpoint_every"] == 0):
                        self._save(step, epoch, step_in_epoch + 1, epoch_steps)
                start_in_epoch = 0
                if recipe["eval"] and (epoch + 1) % recipe["eval"]["every_epochs"] == 0:
                    result = self._evaluate(epoch, step)
                    if result:
                        metrics_log.write({"kind": "eval", "step": step, "epoch": epoch, **result})
            export_dir = None
            if dist.is_main:
                export_dir = self._export(step)
            D.barrier()
            return TrainResult(self.out_dir, export_dir, step, recipe["epochs"] - 1, False, last)
        finally:
            bar.close()
            metrics_log.close()
            if interrupted and dist.is_main:
                print(f"stopped after step {step} (--stop-after-steps); the last checkpoint is in {self.ckpt_dir}",
                      flush=True)

    def _optimizer_step(self, batches: Iterator, ctx: StepContext, meter: _Meter) -> None:
        """Accumulate ``grad_accum_steps`` micro-batches (gradients synchronised on the last), clip, step."""
        accum = self.recipe["grad_accum_steps"]
        ddp = isinstance(self.model, DistributedDataParallel)
        for micro in range(accum):
            batch = to_device(next(batches), self.dist.device)
            with (self.model.no_sync() if ddp and micro < accum - 1 else contextlib.nullcontext()), self._autocast():
                loss, scalars = self.task.training_step(self.model, batch, ctx)
            self.scaler.scale(loss / accum).backward()
            meter.add(loss, scalars, count_images(batch))
        step_scalars = {}
        if self.recipe["clip_grad_norm"]:
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.recipe["clip_grad_norm"])
            step_scalars["grad_norm"] = float(norm)  # before clipping
        meter.step(**step_scalars)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.task.after_optimizer_step(self.model, ctx)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.dist.device.type, dtype=self.dtype)

    def _export(self, step: int, out: Path | None = None, card: bool = True) -> Path:
        from zoo.export import export_pretrained

        model = self.task.export_model(unwrap(self.model))
        extra = {"weights": f"trained with recipe {self.recipe['name']!r} ({step} steps)",
                 "training": {"recipe": self.recipe["name"], "steps": step, "epochs": self.recipe["epochs"]}}
        return export_pretrained(model, out or self.out_dir / "export", extra_config=extra, card=card)

    def _check_eval(self) -> None:
        """Before any work: the recipe's eval table exists, has rows for this model and their data is there."""
        spec = self.recipe["eval"]
        try:
            evaluate = importlib.import_module("zoo.engine.evaluate")
        except ModuleNotFoundError:
            log.warning("eval: zoo.engine.evaluate is not available; no evaluation during training")
            self.evaluate = None
            return
        import inspect

        self.evaluate = evaluate
        if self.opts.data_root is None:
            raise DatasetError(f"eval: table {spec['table']!r} needs --data-root (or set eval=null)")
        accepted = inspect.signature(evaluate.evaluate_table).parameters
        for key in spec["args"]:
            if key in ("table", "data_root", "model", "pretrained", "device", "out_dir") or key not in accepted:
                raise RecipeError(f"eval.args.{key}: not an option of evaluation during training")
        from zoo.models import get_model_info, split_name

        table = evaluate.load_table(spec["table"])
        arch, tag = split_name(self.recipe["model"]["name"])
        tag = self.recipe["model"]["variant"] or tag or get_model_info(arch).default_variant
        # Rows of the architecture trained here, in its variant (or untagged): other variants cannot load these weights.
        rows = [r for r in evaluate.select_rows(table, spec["args"].get("rows"), arch)
                if split_name(r.model)[1] in (None, tag)]
        if not rows:
            raise RecipeError(f"eval: table {spec['table']!r} has no row for {arch}.{tag}")
        self.eval_rows = [r.label for r in rows]
        missing = sorted({r.data_subdir for r in rows if not (Path(self.opts.data_root) / r.data_subdir).is_dir()})
        if missing:
            raise DatasetError(f"eval: table {spec['table']!r} reads {', '.join(missing)} under --data-root "
                               f"{self.opts.data_root}, which is missing (or set eval=null)")

    def _evaluate(self, epoch: int, step: int) -> dict[str, float] | None:
        """Evaluate the current weights on the recipe's table (every rank takes part; RNG states untouched)."""
        if self.evaluate is None:
            return None
        spec = self.recipe["eval"]
        saved = rng_state()
        weights = self.out_dir / "eval" / "weights"
        if self.dist.is_main:
            self._export(step, weights, card=False)
        D.barrier()
        options = {"use_cache": False, "progress": self.opts.progress, **spec["args"], "rows": self.eval_rows}
        result = self.evaluate.evaluate_table(
            spec["table"], self.opts.data_root, pretrained=str(weights), device=self.dist.device.type,
            out_dir=self.out_dir / "eval" / f"epoch-{epoch:03d}", **options)
        set_rng_state(saved)
        if result is None:  # not rank 0
            return None
        return {f"{row.row.label}/{metric}": float(value) for row in result.rows for metric, value in row.metrics.items()}


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(recipe: dict[str, Any], options: TrainOptions) -> TrainResult:
    """Check everything (recipe, task, model name, data root, batch split, resume state), then train."""
    return Trainer(recipe, options).run()
