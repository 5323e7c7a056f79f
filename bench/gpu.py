#!/usr/bin/env python
"""The GPU check: correctness and speed of every model on CUDA, exact search, and a DDP step per recipe.

Run through ``bench/gpu.sh`` (which sets the environment: no network, thread counts). Sections:

1. ``equivalence`` - every model (default variant, random weights, seed 0) on the sample images:
   CUDA fp32 (TF32 off), bf16 and fp16 against CPU fp32 - largest descriptor difference and
   top-1 agreement.
2. ``throughput`` - images/s on random inputs at each model's evaluation size: fp32, bf16, fp16;
   channels_last for CNNs; for DINOv2 SALAD scaled_dot_product_attention (timm's default) and,
   where installed, xFormers' memory_efficient_attention; torch.compile at bf16.
3. ``search`` - exact k-NN (``zoo.search.knn``) of 100k x 100k x 4096 on the GPU, against the CPU
   path on a subsample of the queries, extrapolated linearly to all of them (and said so), with
   the agreement of the two on that subsample.
4. ``ddp`` - one optimiser step of every ``<x>-smoke`` recipe under torchrun (NCCL, one process
   per GPU) on tiny data generated here.

``--dry-run`` runs all of it on the CPU at tiny sizes (gloo, two processes), to check the script
on machines without a GPU. Everything goes to one JSON file (``--out``) and a table is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

import zoo  # noqa: E402
from bench._timing import seconds_per_call  # noqa: E402
from zoo.io import list_images, load_image  # noqa: E402
from zoo.search import knn  # noqa: E402

SAMPLES = REPO_ROOT / "assets" / "samples"
SECTIONS = ("equivalence", "throughput", "search", "ddp")

#: Full run: each model's evaluation input ``(query HxW, database HxW)`` and batch size.
FULL_SHAPES: dict[str, tuple[tuple[int, int], tuple[int, int], int]] = {
    "dinov2_salad": ((322, 322), (322, 322), 64),
    "dycl_resnet": ((224, 224), (224, 224), 128),
    "cvft_vgg": ((112, 616), (256, 256), 64),
    "ucdir_moco": ((224, 224), (224, 224), 128),
    "aml_student": ((768, 1024), (768, 1024), 16),
}
#: Dry run: small members of each family and small inputs (the builders' own arguments).
DRY_MODELS: dict[str, dict[str, Any]] = {
    "dinov2_salad": {"variant": "512_32", "depth": 2, "num_trainable_blocks": 1},
    "dycl_resnet": {},
    "cvft_vgg": {"ground_size": (32, 160), "aerial_size": (64, 64)},
    "ucdir_moco": {"arch": "resnet18"},
    "aml_student": {"variant": "teacher_vgg16"},
}
DRY_SHAPES = {"dinov2_salad": ((70, 70), (70, 70), 2), "dycl_resnet": ((64, 64), (64, 64), 2),
              "cvft_vgg": ((32, 160), (64, 64), 2), "ucdir_moco": ((64, 64), (64, 64), 2),
              "aml_student": ((64, 64), (64, 64), 2)}
RECIPES = ("salad-smoke", "dycl-smoke", "cvft-smoke", "ucdir-smoke", "aml-smoke")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(name: str, dry: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return zoo.create_model(name, pretrained=False, **(DRY_MODELS[name] if dry else {})).eval()


def is_cnn(model: torch.nn.Module) -> bool:
    from zoo.engine.extract import _is_cnn
    return _is_cnn(model)


@contextlib.contextmanager
def exact_fp32() -> Any:
    """True float32 on CUDA (no TF32), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- 1. equivalence


def _samples(model: torch.nn.Module, name: str, dry: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample queries and database images through the model's transforms (resized for the dry run)."""
    query_tf, database_tf = zoo.model_transforms(model)
    q = [query_tf(load_image(p)) for p in list_images(SAMPLES / "queries")]
    d = [database_tf(load_image(p)) for p in list_images(SAMPLES / "database")]
    q, d = torch.stack(q), torch.stack(d)
    if dry:  # the dry run's models take small inputs
        (qh, qw), (dh, dw), _ = DRY_SHAPES[name]
        q = torch.nn.functional.interpolate(q, size=(qh, qw), mode="bilinear", align_corners=False)
        d = torch.nn.functional.interpolate(d, size=(dh, dw), mode="bilinear", align_corners=False)
    return q, d


def _describe(model: torch.nn.Module, q: torch.Tensor, d: torch.Tensor, device: torch.device,
              precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode(), autocast(device, precision):
        return model.encode_query(q.to(device)).float().cpu(), model.encode_database(d.to(device)).float().cpu()


def equivalence(device: torch.device, dry: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    for name in zoo.ENTRY_POINTS:
        model = build(name, dry)
        q, d = _samples(model, name, dry)
        with exact_fp32():
            ref_q, ref_d = _describe(model, q, d, torch.device("cpu"), "fp32")
            ref_top1 = knn(ref_q, ref_d, 1)[1]
            model.to(device)
            rows = {}
            for precision in precisions:
                got_q, got_d = _describe(model, q, d, device, precision)
                rows[precision] = {
                    "max_abs_diff_vs_cpu_fp32": max((got_q - ref_q).abs().max().item(), (got_d - ref_d).abs().max().item()),
                    "top1_agreement": (knn(got_q, got_d, 1)[1] == ref_top1).float().mean().item()}
        out[name] = {"images": q.shape[0] + d.shape[0], **rows}
        log(f"equivalence {name}: " + ", ".join(f"{p} {r['max_abs_diff_vs_cpu_fp32']:.1e}" for p, r in rows.items()))
        del model
    return out


# --------------------------------------------------------------------------- 2. throughput


def _xformers_forward(self: torch.nn.Module, x: torch.Tensor, attn_mask: Any = None, is_causal: bool = False) -> torch.Tensor:
    """timm ``Attention.forward`` with xFormers' memory-efficient kernel (inference, no mask)."""
    import xformers.ops as xops

    b, n, _ = x.shape
    q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).unbind(2)  # (B, N, H, D) each
    x = xops.memory_efficient_attention(self.q_norm(q), self.k_norm(k), v)
    return self.proj(self.norm(x.reshape(b, n, -1)))


@contextlib.contextmanager
def xformers_attention(model: torch.nn.Module) -> Any:
    """Every timm ``Attention`` of ``model`` runs xFormers while inside."""
    from timm.layers.attention import Attention

    modules = [m for m in model.modules() if isinstance(m, Attention)]
    for m in modules:
        m.forward = _xformers_forward.__get__(m)
    try:
        yield
    finally:
        for m in modules:
            del m.forward


def _has_xformers() -> bool:
    try:
        import xformers.ops  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 - absent or broken install: not measured
        return False


def throughput(device: torch.device, dry: bool, iters: int, warmup: int, compile_models: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    shapes = DRY_SHAPES if dry else FULL_SHAPES
    for name in zoo.ENTRY_POINTS:
        model = build(name, dry).to(device)
        (qh, qw), (dh, dw), batch = shapes[name]
        generator = torch.Generator().manual_seed(1)
        q = torch.randn(batch, 3, qh, qw, generator=generator).to(device)
        d = torch.randn(batch, 3, dh, dw, generator=generator).to(device)
        cnn = is_cnn(model)
        configs: list[tuple[str, str, bool, str]] = []  # (label, precision, channels_last, attention)
        for precision in ("fp32", "bf16") + (("fp16",) if device.type == "cuda" else ()):
            configs.append((precision, precision, False, "sdpa"))
            if cnn:
                configs.append((f"{precision} channels_last", precision, True, "sdpa"))
            elif name == "dinov2_salad" and precision != "fp32" and device.type == "cuda" and _has_xformers():
                configs.append((f"{precision} xformers", precision, False, "xformers"))
        rows: dict[str, Any] = {"shapes": {"query": [batch, 3, qh, qw], "database": [batch, 3, dh, dw]}}
        for label, precision, channels_last, attention in configs:
            rows[label] = _time_config(model, q, d, device, precision, channels_last, attention, iters, warmup)
        if compile_models:
            label = "bf16 compiled" + (" channels_last" if cnn else "")
            try:
                compiled = _compiled(model, cnn)
                rows[label] = _time_config(compiled, q, d, device, "bf16", cnn, "sdpa", iters, warmup)
            except Exception as err:  # noqa: BLE001 - report why and go on
                rows[label] = {"skipped": f"torch.compile failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"}
        base = rows["fp32"]["images_per_s"]
        for row in rows.values():
            if isinstance(row, dict) and "images_per_s" in row:
                row["speedup_vs_fp32"] = row["images_per_s"] / base
        out[name] = rows
        log(f"throughput {name}: " + ", ".join(f"{k} {v['images_per_s']:.1f}" for k, v in rows.items()
                                                if isinstance(v, dict) and "images_per_s" in v))
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


class _Compiled(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.query = torch.compile(model.encode_query)
        self.database = torch.compile(model.encode_database)

    def encode_query(self, x: torch.Tensor) -> torch.Tensor:
        return self.query(x)

    def encode_database(self, x: torch.Tensor) -> torch.Tensor:
        return self.database(x)


def _compiled(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return _Compiled(model)


def _time_config(model: torch.nn.Module, q: torch.Tensor, d: torch.Tensor, device: torch.device, precision: str,
                 channels_last: bool, attention: str, iters: int, warmup: int) -> dict[str, Any]:
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        q, d = q.contiguous(memory_format=torch.channels_last), d.contiguous(memory_format=torch.channels_last)

    def step() -> torch.Tensor:
        with torch.inference_mode(), autocast(device, precision):
            model.encode_query(q)
            return model.encode_database(d)

    with exact_fp32() if precision == "fp32" else contextlib.nullcontext(), \
            xformers_attention(model) if attention == "xformers" else contextlib.nullcontext():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds, _ = seconds_per_call(step, iters, warmup, device)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    if channels_last and isinstance(model, torch.nn.Module) and not isinstance(model, _Compiled):
        model.to(memory_format=torch.contiguous_format)
    return {"images_per_s": (q.shape[0] + d.shape[0]) / seconds, "ms_per_batch_pair": seconds * 1e3,
            "peak_mib": peak}


# --------------------------------------------------------------------------- 3. search


def search(device: torch.device, dry: bool, k: int) -> dict[str, Any]:
    n, dim, sub = (2000, 64, 200) if dry else (100_000, 4096, 1000)
    generator = torch.Generator().manual_seed(2)
    queries = torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1)
    database = torch.nn.functional.normalize(torch.randn(n, dim, generator=generator), dim=1)
    q_dev, d_dev = queries.to(device), database.to(device)
    knn(q_dev[:10], d_dev, k)  # warm-up (cuBLAS handles, allocator)
    synchronize(device)
    start = time.perf_counter()
    scores, indices = knn(q_dev, d_dev, k)
    synchronize(device)
    device_seconds = time.perf_counter() - start
    start = time.perf_counter()
    cpu_scores, cpu_indices = knn(queries[:sub], database, k, device="cpu")
    cpu_seconds_sub = time.perf_counter() - start
    cpu_seconds = cpu_seconds_sub * n / sub
    agree = (indices[:sub].cpu() == cpu_indices).float().mean().item()
    result = {"queries": n, "database": n, "dim": dim, "k": k, "device_seconds": device_seconds,
              "cpu_queries_timed": sub, "cpu_seconds_timed": cpu_seconds_sub,
              "cpu_seconds_extrapolated": cpu_seconds,
              "cpu_note": f"CPU path timed on {sub} of {n} queries and scaled by {n // sub} (cost is linear in queries)",
              "speedup_vs_cpu": cpu_seconds / device_seconds, "topk_index_agreement_on_subsample": agree,
              "max_abs_score_diff_on_subsample": (scores[:sub].cpu() - cpu_scores).abs().max().item(),
              "cpu_threads": torch.get_num_threads()}
    log(f"search {n}x{n}x{dim}: {device.type} {device_seconds:.2f} s, CPU ~{cpu_seconds:.1f} s (extrapolated)")
    return result


# --------------------------------------------------------------------------- 4. ddp


def _make_recipe_data(recipe: str, root: Path) -> None:
    """Tiny training data in the recipe's on-disk layout: the synthetic set the smoke recipe names."""
    from zoo.data.synthetic import materialise
    from zoo.engine.recipes import resolve_recipe

    synthetic = resolve_recipe(recipe)["data"]["synthetic"]
    if synthetic is None:
        raise ValueError(f"recipe {recipe!r} names no synthetic data set (data.synthetic)")
    materialise(synthetic, root)


def ddp(device: torch.device, recipes: tuple[str, ...], timeout: int) -> dict[str, Any]:
    """One torchrun launch (``bench/_ddp_steps.py``) that takes one step of every recipe."""
    nproc = torch.cuda.device_count() if device.type == "cuda" else 2
    out: dict[str, Any] = {"backend": "nccl" if device.type == "cuda" else "gloo", "processes": nproc}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="zoo-gpu-ddp-") as tmp:
        work = Path(tmp)
        for recipe in recipes:
            _make_recipe_data(recipe, work / recipe / "data")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   str(REPO_ROOT / "bench" / "_ddp_steps.py"), "--work", str(work), "--device", device.type,
                   "--recipes", *recipes]
        start = time.perf_counter()
        try:
            proc = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
            tail = (proc.stdout + proc.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            tail = f"timed out after {timeout} s"
        out["launch_seconds"] = time.perf_counter() - start
        results = work / "results.json"
        rows = json.loads(results.read_text()) if results.is_file() else {}
        for recipe in recipes:
            out[recipe] = rows.get(recipe, {"ok": False, "first_loss": None, "seconds": 0.0})
            if not out[recipe]["ok"]:
                out[recipe].setdefault("output_tail", tail)
            log(f"ddp {recipe}: {'ok' if out[recipe]['ok'] else 'FAILED'} in {out[recipe]['seconds']:.1f} s")
    return out


# --------------------------------------------------------------------------- report


def print_report(report: dict[str, Any]) -> None:
    print(f"\n{report['device_name']} - torch {report['torch']} - {'DRY RUN (CPU, tiny sizes)' if report['dry_run'] else 'full run'}")
    if "equivalence" in report["sections"]:
        print("\nDescriptors on the device vs CPU fp32 (sample images, random weights)")
        print(f"  {'model':14} {'precision':9} {'max |diff|':>10} {'top-1 same':>10}")
        section = report["sections"]["equivalence"]
        if "error" in section:
            print(f"  error: {section['error']}")
        for name, rows in ({} if "error" in section else section).items():
            if "error" in rows:
                print(f"  {name:14} error: {rows['error']}")
                continue
            for precision, row in rows.items():
                if isinstance(row, dict):
                    print(f"  {name:14} {precision:9} {row['max_abs_diff_vs_cpu_fp32']:10.1e} {row['top1_agreement']:10.0%}")
    if "throughput" in report["sections"]:
        print("\nThroughput (random inputs; images = query + database batch)")
        print(f"  {'model':14} {'configuration':28} {'images/s':>9} {'x fp32':>7} {'peak MiB':>9}")
        section = report["sections"]["throughput"]
        if "error" in section:
            print(f"  error: {section['error']}")
        for name, rows in ({} if "error" in section else section).items():
            for label, row in rows.items():
                if label == "shapes" or not isinstance(row, dict):
                    continue
                if "images_per_s" not in row:
                    print(f"  {name:14} {label:28} {row.get('skipped') or row.get('error')}")
                    continue
                peak = f"{row['peak_mib']:9.0f}" if row.get("peak_mib") is not None else f"{'-':>9}"
                print(f"  {name:14} {label:28} {row['images_per_s']:9.1f} {row['speedup_vs_fp32']:6.2f}x {peak}")
    if "search" in report["sections"]:
        s = report["sections"]["search"]
        if "error" in s:
            print(f"\nSearch: error: {s['error']}")
        else:
            print(f"\nExact search {s['queries']} x {s['database']} x {s['dim']}, k={s['k']}: device {s['device_seconds']:.2f} s, "
                  f"CPU {s['cpu_seconds_extrapolated']:.1f} s ({s['cpu_note']}; {s['cpu_threads']} threads) -> "
                  f"{s['speedup_vs_cpu']:.1f}x; top-k agreement {s['topk_index_agreement_on_subsample']:.2%}")
    if "ddp" in report["sections"]:
        d = report["sections"]["ddp"]
        if "error" in d:
            print(f"\nDDP: error: {d['error']}")
        else:
            print(f"\nOne DDP step per smoke recipe (one torchrun launch, {d['backend']}, {d['processes']} processes, "
                  f"{d['launch_seconds']:.0f} s in all)")
            for recipe, row in d.items():
                if isinstance(row, dict):
                    print(f"  {recipe:12} {'ok' if row['ok'] else 'FAILED':7} {row['seconds']:6.1f} s"
                          + (f"  first loss {row['first_loss']:.4f}" if row["first_loss"] is not None else "")
                          + (f"  ({', '.join(row['overrides'])})" if row.get("overrides") else "")
                          + (f"  {row['error']}" if row.get("error") else ""))
    print(f"\ntotal {report['seconds']:.0f} s; failures: {', '.join(report['failures']) or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes, gloo: check the script without a GPU")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON report (default: %(default)s)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--iters", type=int, help="timed calls per configuration (default: 10, dry run 1)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile in the throughput section")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), help="smoke recipes of the ddp section")
    parser.add_argument("--k", type=int, default=25, help="neighbours in the search section (default: %(default)s)")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --dry-run to check the script on the CPU")
    device = torch.device("cpu" if args.dry_run else "cuda")
    iters = args.iters or (1 if args.dry_run else 10)
    warmup = 0 if args.dry_run else 3
    start = time.perf_counter()
    report: dict[str, Any] = {
        "dry_run": args.dry_run, "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"CPU ({platform.processor() or platform.machine()})", "torch": torch.__version__,
        "cuda": torch.version.cuda, "xformers": _has_xformers(), "sections": {}, "failures": []}
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "equivalence": lambda: equivalence(device, args.dry_run),
        "throughput": lambda: throughput(device, args.dry_run, iters, warmup,
                                         compile_models=not args.no_compile and not args.dry_run),
        "search": lambda: search(device, args.dry_run, args.k),
        "ddp": lambda: ddp(device, tuple(args.recipes), timeout=180 if args.dry_run else 240),
    }
    for section in args.sections:
        section_start = time.perf_counter()
        try:
            report["sections"][section] = runners[section]()
        except Exception as err:  # noqa: BLE001 - one broken section must not lose the others' figures
            traceback.print_exc()
            report["sections"][section] = {"error": f"{type(err).__name__}: {err}"}
            report["failures"].append(section)
        report.setdefault("section_seconds", {})[section] = time.perf_counter() - section_start
        ddp_rows = report["sections"].get("ddp", {}) if section == "ddp" else {}
        report["failures"] += [f"ddp {r}" for r, row in ddp_rows.items() if isinstance(row, dict) and not row.get("ok")]
        report["seconds"] = time.perf_counter() - start
        tmp = args.out.with_name(f".{args.out.name}.part")
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")  # after every section: a timeout keeps the rest
        os.replace(tmp, args.out)
    print_report(report)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
