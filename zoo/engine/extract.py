"""Descriptor extraction: batched, cached on disk in shards, resumable, sharded over processes.

``extract_descriptors(model, records, transform, side=...)`` loads every :class:`ImageRecord`
(``zoo.io.load_image``, crop to its ``box``, the model's transform) in a DataLoader,
runs ``model.encode_query`` or ``model.encode_database`` under the requested precision and
returns ``(N, D)`` float32 descriptors on the CPU.

Cache: with a :class:`DescriptorCache`, descriptors are written in shards of ``shard_size``
images, each atomically (temporary file, then rename), in a folder whose name hashes what the
descriptors depend on: model name and variant, a hash of the state dict, the transform, the
image list (paths, boxes, sizes, modification times), the side, the precision and the device
type. A killed run leaves complete shards only; the next run loads them and computes the rest.
Batches never cross a shard boundary, so every shard is computed from the same batches whether
or not the run was resumed, or split over processes: the results are identical.

Processes: under ``torchrun --nproc_per_node N`` shard ``i`` is computed by rank ``i % N`` and
the shards are gathered on rank 0 (which alone returns the descriptors; other ranks get None).

Corrupt images raise :class:`~zoo.errors.InputError` naming the file; with ``skip_corrupt`` they
are skipped, counted and listed in the result, and their rows are zero vectors (so that database
and ground-truth indices stay aligned). A zero database item scores 0 with every query; a zero
query ties with everything, so the engine passes the skipped queries to protocols that accept
``skipped_queries``, which count them as misses (``vpr_recall``, ``cross_view_rank``). Missing files always raise
:class:`~zoo.errors.DatasetError`: they mean a wrong data root, not a damaged image.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zoo.data.base import ImageRecord
from zoo.engine.precision import resolve_precision
from zoo.errors import DatasetError, InputError
from zoo.io import atomic_path, atomic_write_text
from zoo.search import check_finite

__all__ = ["Extraction", "ImageListDataset", "DescriptorCache", "extract_descriptors", "weights_hash",
           "transform_id", "records_fingerprint", "autocast_dtype", "PRECISIONS"]

PRECISIONS = ("fp32", "fp16", "bf16")
CACHE_FORMAT = 1


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--precision`` (None for fp32); fp16 is refused on CPU; ``auto`` is
    the hardware's choice (:func:`zoo.engine.precision.resolve_precision`)."""
    precision = resolve_precision(precision, device)
    if precision == "fp16" and device.type != "cuda":
        raise InputError("--precision fp16 needs a CUDA device; on CPU use bf16 or fp32")
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


@dataclass
class Extraction:
    """Descriptors of one side and what happened while computing them."""

    descriptors: torch.Tensor
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (index, reason naming the file)
    cached_images: int = 0   # images whose descriptors came from the cache
    computed_images: int = 0
    seconds: float = 0.0


class ImageListDataset(Dataset):
    """Images of a record list, transformed; errors are returned (not raised) so that the main
    process can name the file without a DataLoader worker's traceback around it."""

    def __init__(self, records: Sequence[ImageRecord], transform: Callable) -> None:
        self.records = list(records)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None, str | None]:
        from zoo.io import load_image

        record = self.records[index]
        try:
            image = load_image(record.path)
        except DatasetError as err:
            return index, None, "missing", str(err)
        except InputError as err:
            return index, None, "corrupt", str(err)
        try:
            if record.box is not None:
                full_size = image.size
                image = image.crop(tuple(record.box))
                # Some protocols scale a cropped query by its full image's factor (cirtorch/revisitop:
                # imsize * max(crop) / max(full)); the transform can read the full size here.
                image.info["full_size"] = full_size
            tensor = self.transform(image)
        except Exception as err:  # noqa: BLE001 - any failure of the transform is this image's fault
            return index, None, "corrupt", f"transform failed on {record.path}: {type(err).__name__}: {err}"
        return index, tensor, None, None


def _keep_list(batch: list) -> list:
    return batch


def weights_hash(model: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes and bytes), in key order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def transform_id(transform: Callable) -> str:
    """A stable description of a transform: its repr without memory addresses (a plain function's
    repr contains one that changes every run)."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(transform))


def records_fingerprint(records: Sequence[ImageRecord]) -> str:
    """Hash of the image list: paths, boxes, and each file's size and modification time (so that
    a replaced image invalidates the cache). Missing files hash as missing."""
    digest = hashlib.sha256()
    for r in records:
        try:
            st = os.stat(r.path)
            stamp = f"{st.st_size}|{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        digest.update(f"{r.path}|{r.box}|{stamp}\n".encode())
    return digest.hexdigest()


class DescriptorCache:
    """Shards of descriptors for one (model, weights, transform, images, side, precision) key.

    Layout: ``root/<model>/<key hash>/key.json`` (what the hash covers, for humans) and
    ``shard_<i>.safetensors`` with ``descriptors`` (n, D) float32, ``valid`` (n,) uint8 and the
    skipped images in the file's metadata.
    """

    def __init__(self, root: str | Path, key: dict[str, Any]) -> None:
        self.key = {"format": CACHE_FORMAT, **key}
        blob = json.dumps(self.key, sort_keys=True, default=str).encode()
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(key.get("model", "model")))
        self.dir = Path(root).expanduser() / slug / hashlib.sha256(blob).hexdigest()[:20]

    def shard_path(self, i: int) -> Path:
        return self.dir / f"shard_{i:06d}.safetensors"

    def load(self, i: int, expected_rows: int) -> tuple[torch.Tensor, torch.Tensor, list] | None:
        """Shard ``i`` or None when absent (or of the wrong length: then it is recomputed)."""
        from safetensors import safe_open

        path = self.shard_path(i)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                desc, valid = f.get_tensor("descriptors"), f.get_tensor("valid").bool()
                skipped = json.loads((f.metadata() or {}).get("skipped", "[]"))
        except Exception:  # noqa: BLE001 - an unreadable shard is recomputed, never trusted
            return None
        if desc.shape[0] != expected_rows or valid.shape[0] != expected_rows:
            return None
        return desc, valid, [tuple(s) for s in skipped]

    def save(self, i: int, desc: torch.Tensor, valid: torch.Tensor, skipped: list) -> None:
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "key.json"
        if not key_file.exists():
            atomic_write_text(key_file, json.dumps(self.key, indent=2, sort_keys=True, default=str))
        with atomic_path(self.shard_path(i)) as tmp:
            save_file({"descriptors": desc.contiguous(), "valid": valid.to(torch.uint8).contiguous()}, str(tmp),
                      metadata={"skipped": json.dumps(skipped)})


def _is_cnn(model: nn.Module) -> bool:
    """Whether channels_last helps: the model has spatial convolutions other than a patch
    embedding (a ViT's only convolution has kernel == stride)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1 and tuple(m.kernel_size) != tuple(m.stride):
            return True
    return False


def _rank_world() -> tuple[int, int]:
    from zoo.distributed import is_distributed

    if is_distributed():
        import torch.distributed as dist
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _forward(encode: Callable, tensors: list[torch.Tensor], device: torch.device, amp: torch.dtype | None,
             channels_last: bool) -> list[torch.Tensor]:
    """Descriptors of a batch; images of different sizes (e.g. aspect-preserving resizes) go
    through the model in groups of equal shape, in order."""
    groups: dict[tuple, list[int]] = {}
    for j, t in enumerate(tensors):
        groups.setdefault(tuple(t.shape), []).append(j)
    out: list[torch.Tensor | None] = [None] * len(tensors)
    for members in groups.values():
        x = torch.stack([tensors[j] for j in members]).to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
            y = encode(x)
        if y.ndim != 2 or y.shape[0] != len(members):
            raise InputError(f"the model returned descriptors of shape {tuple(y.shape)} for a batch of "
                             f"{len(members)} images; expected ({len(members)}, D)")
        y = y.float().cpu()
        for row, j in zip(y, members):
            out[j] = row
    return out  # type: ignore[return-value]


@dataclass
class ShardPlan:
    """Which shards this process computes and which it found in the cache."""

    bounds: list[tuple[int, int]]
    done: dict[int, tuple[torch.Tensor, torch.Tensor, list]]
    todo: list[int]
    batches: list[list[int]]
    cached_images: int

    @property
    def computed_images(self) -> int:
        return sum(len(b) for b in self.batches)


def plan_shards(n: int, shard_size: int, batch_size: int, rank: int, world: int,
                cache: DescriptorCache | None) -> ShardPlan:
    """Split ``n`` images into shards of ``shard_size``; this rank takes every ``world``-th shard,
    reads those the cache holds and batches the others."""
    n_shards = (n + shard_size - 1) // shard_size
    bounds = [(i * shard_size, min(n, (i + 1) * shard_size)) for i in range(n_shards)]
    done: dict[int, tuple[torch.Tensor, torch.Tensor, list]] = {}
    todo: list[int] = []
    for i in range(rank, n_shards, world):
        hit = cache.load(i, bounds[i][1] - bounds[i][0]) if cache is not None else None
        if hit is not None:
            done[i] = hit
        else:
            todo.append(i)
    batches = [list(range(b, min(b + batch_size, bounds[i][1])))
               for i in todo for b in range(bounds[i][0], bounds[i][1], batch_size)]
    return ShardPlan(bounds, done, todo, batches, cached_images=sum(v[0].shape[0] for v in done.values()))


def _run_batches(plan: ShardPlan, records: Sequence[ImageRecord], transform: Callable, encode: Callable, *,
                 device: torch.device, amp: torch.dtype | None, channels_last: bool, num_workers: int,
                 skip_corrupt: bool, cache: DescriptorCache | None, bar: Any) -> None:
    """The loader loop: embed the planned batches; each finished shard goes into ``plan.done`` (and the cache)."""
    loader = DataLoader(ImageListDataset(records, transform), batch_sampler=plan.batches, num_workers=num_workers,
                        collate_fn=_keep_list, pin_memory=device.type == "cuda")
    rows: dict[int, torch.Tensor] = {}
    skipped: dict[int, str] = {}
    shard_of = {idx: i for i in plan.todo for idx in range(*plan.bounds[i])}
    remaining = {i: plan.bounds[i][1] - plan.bounds[i][0] for i in plan.todo}
    for batch in loader:
        good = []
        for index, tensor, kind, message in batch:
            if kind == "missing":
                raise DatasetError(message)
            if kind == "corrupt":
                if not skip_corrupt:
                    raise InputError(f"{message} (pass --skip-corrupt to skip and count such images)")
                skipped[index] = message
            else:
                good.append((index, tensor))
        if good:
            for (index, _), row in zip(good, _forward(encode, [t for _, t in good], device, amp, channels_last)):
                rows[index] = row
        for index, *_ in batch:
            shard = shard_of[index]
            remaining[shard] -= 1
            if remaining[shard] == 0:
                plan.done[shard] = _assemble_shard(rows, skipped, *plan.bounds[shard])
                if cache is not None:
                    cache.save(shard, *plan.done[shard])
        bar.update(len(batch))


def _gather(plan: ShardPlan, rank: int, world: int, all_ranks: bool
            ) -> tuple[dict[int, tuple[torch.Tensor, torch.Tensor, list]], int, int] | None:
    """Every rank's shards and counts, on rank 0 (None elsewhere) or, with ``all_ranks``, on every rank."""
    mine = (plan.done, plan.cached_images, plan.computed_images)
    if world == 1:
        return mine
    import torch.distributed as dist
    if all_ranks:
        parts: list[Any] = [None] * world
        dist.all_gather_object(parts, mine)
    else:
        parts = [None] * world if rank == 0 else None  # type: ignore[assignment]
        dist.gather_object(mine, parts, dst=0)
        if rank != 0:
            return None
    done: dict[int, tuple[torch.Tensor, torch.Tensor, list]] = {}
    for part, _, _ in parts:
        done.update(part)
    return done, sum(p[1] for p in parts), sum(p[2] for p in parts)


@torch.no_grad()
def extract_descriptors(model: nn.Module, records: Sequence[ImageRecord], transform: Callable, *,
                        side: str = "database", encode: Callable | None = None, batch_size: int = 32,
                        num_workers: int = 0, device: str | torch.device = "cpu", precision: str = "auto",
                        channels_last: bool | None = None, cache: DescriptorCache | None = None,
                        shard_size: int = 1024, skip_corrupt: bool = False, progress: bool = True,
                        desc: str | None = None, all_ranks: bool = False) -> Extraction | None:
    """Descriptors ``(len(records), D)`` float32 on the CPU (None on ranks other than 0 under torchrun).

    Args:
        model: a zoo model (eval mode is set here).
        records: the images, in the order of the returned rows.
        transform: PIL image -> float tensor (C, H, W), e.g. from :func:`zoo.get_transforms`.
        side: ``"query"`` (``model.encode_query``) or ``"database"`` (``model.encode_database``).
        encode: what embeds a batch ``(B, C, H, W) -> (B, D)`` instead of the side's encoder (e.g. a
            training task's inner network).
        batch_size: images per forward pass (1: one image at a time, as cirtorch extracts).
        num_workers: DataLoader worker processes for decoding and transforms.
        device: where the model runs.
        precision: ``fp32``, ``bf16`` (CPU or CUDA autocast), ``fp16`` (CUDA autocast only) or
            ``auto``: bf16 on CPUs with native bf16 and on CUDA where supported, else fp16 on CUDA
            and fp32 on CPU (:mod:`zoo.engine.precision`; the choice is logged).
        channels_last: memory format for the input; None = on CUDA for CNNs (see :func:`_is_cnn`).
        cache: where to keep and find shards; None computes everything in memory.
        shard_size: images per cached shard (and per process under torchrun).
        skip_corrupt: skip undecodable images (zero rows, listed in ``skipped``) instead of raising.
        progress: show a tqdm bar (rank 0 only).
        desc: label of the progress bar.
        all_ranks: under torchrun, return the descriptors on every rank (not only rank 0).
    """
    from tqdm import tqdm

    if side not in ("query", "database"):
        raise InputError(f"side: expected 'query' or 'database', got {side!r}")
    if batch_size < 1 or shard_size < 1:
        raise InputError(f"batch_size and shard_size must be positive, got {batch_size} and {shard_size}")
    device = torch.device(device)
    amp = autocast_dtype(resolve_precision(precision, device, announce=progress), device)
    if channels_last is None:
        channels_last = device.type == "cuda" and _is_cnn(model)
    model = model.eval().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if encode is None:
        encode = model.encode_query if side == "query" else model.encode_database
    rank, world = _rank_world()
    start_time = time.perf_counter()
    plan = plan_shards(len(records), shard_size, batch_size, rank, world, cache)
    # fork_rng: the DataLoader draws a seed from the global generator; extraction leaves the caller's
    # random state (e.g. a training run between two epochs) as it found it.
    if plan.batches:
        with torch.random.fork_rng(devices=[]), tqdm(total=plan.computed_images, desc=desc or f"{side} descriptors", unit="img",
                  disable=not progress or rank != 0, dynamic_ncols=True) as bar:
            _run_batches(plan, records, transform, encode, device=device, amp=amp, channels_last=channels_last,
                         num_workers=num_workers, skip_corrupt=skip_corrupt, cache=cache, bar=bar)
    gathered = _gather(plan, rank, world, all_ranks)
    if gathered is None:
        return None
    done, cached_images, computed_images = gathered
    result = _concatenate(done, len(plan.bounds), records, cached_images, computed_images,
                          time.perf_counter() - start_time)
    check_finite(result.descriptors, f"{side} descriptors", [r.path for r in records])
    return result


def _assemble_shard(rows: dict[int, torch.Tensor], skipped: dict[int, str], start: int,
                    stop: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Rows ``start..stop-1`` as one tensor (zeros for skipped images), popping them from ``rows``."""
    # Width 0 when every image of the shard was skipped: fixed at concatenation.
    dim = next((rows[i].shape[0] for i in range(start, stop) if i in rows), 0)
    desc = torch.zeros(stop - start, dim)
    valid = torch.zeros(stop - start, dtype=torch.bool)
    for i in range(start, stop):
        if i in rows:
            desc[i - start] = rows.pop(i)
            valid[i - start] = True
    return desc, valid, [(i, skipped.pop(i)) for i in range(start, stop) if i in skipped]


def _concatenate(done: dict[int, tuple[torch.Tensor, torch.Tensor, list]], n_shards: int,
                 records: Sequence[ImageRecord], cached_images: int, computed_images: int,
                 seconds: float) -> Extraction:
    dims = {v[0].shape[1] for v in done.values() if v[0].shape[1] > 0}
    if len(dims) > 1:
        raise InputError(f"descriptor width differs between shards ({sorted(dims)}): the cache folder "
                         "mixes results of different models; delete it")
    if not dims:
        if not records:
            return Extraction(torch.zeros(0, 0), [], 0, 0, seconds)
        raise InputError(f"no image could be read (first: {records[0].path})")
    dim = dims.pop()
    parts, skipped = [], []
    for i in range(n_shards):
        desc, _, skip = done[i]
        parts.append(desc if desc.shape[1] == dim else torch.zeros(desc.shape[0], dim))
        skipped.extend((int(j), str(msg)) for j, msg in skip)
    return Extraction(torch.cat(parts), skipped, cached_images, computed_images, seconds)
