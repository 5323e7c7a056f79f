#!/usr/bin/env python
"""CPU inference paths of every zoo model against its fp32 eager forward, in one run.

For each model the sample images (``assets/samples``: queries and database) go through:

* ``fp32 eager`` - the zoo model as it is (the baseline every ratio is against);
* ``torch.compile`` - the same model compiled (skipped, saying why, where compilation fails);
* ``bf16 autocast`` - only where the CPU has native bf16 (``zoo.engine.precision``), else
  "skipped: no native bf16 on <CPU>" (emulated bf16 is several times slower than fp32);
* ``onnxruntime fp32`` and ``onnxruntime int8`` - the graphs of ``zoo.onnx.export_onnx`` (int8:
  onnxruntime's dynamic quantization of MatMul/Gemm), with as many threads as torch;
* ``original fp32`` - with ``--salad-original`` and ``--dinov2``, the authors' DINOv2 + SALAD
  (imported at run time from local clones, nothing of it in this repository) with the same weights.

It prints, per path: images/s over both sides, the speed-up over fp32 eager, the largest absolute
descriptor difference and the lowest cosine to fp32 eager, and the share of queries whose top-1
database image is the one fp32 eager finds. Timing rounds alternate between the paths (one pass of
every path per round) and the median round counts, so that load from other processes hits every
path alike. Weights are random (seeded), which measures speed faithfully and descriptor changes
only roughly: trained weights give other activations.

    python bench/cpu.py                                    # all five models
    python bench/cpu.py --models dinov2_salad --rounds 5 --json salad.json
    python bench/cpu.py --models dinov2_salad --salad-original /tmp/salad --dinov2 /tmp/dinov2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

import zoo  # noqa: E402
from zoo.engine.precision import cpu_name, native_cpu_bf16  # noqa: E402
from zoo.io import list_images, load_image  # noqa: E402
from zoo.search import knn  # noqa: E402

SAMPLES = REPO_ROOT / "assets" / "samples"
PATHS = ("fp32 eager", "torch.compile", "bf16 autocast", "onnxruntime fp32", "onnxruntime int8", "original fp32")

Encoder = Callable[[torch.Tensor], torch.Tensor]


def _batches(images: list[torch.Tensor], batch_size: int) -> list[torch.Tensor]:
    """Consecutive batches of equal-shape images (a shape change starts a new batch)."""
    out, current = [], []
    for image in images:
        if current and (len(current) == batch_size or current[0].shape != image.shape):
            out.append(torch.stack(current))
            current = []
        current.append(image)
    if current:
        out.append(torch.stack(current))
    return out


def _describe(query: Encoder, database: Encoder, q_batches: list[torch.Tensor],
              d_batches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        q = torch.cat([query(b).float() for b in q_batches])
        d = torch.cat([database(b).float() for b in d_batches])
    return q, d


def _time_paths(paths: dict[str, tuple[Encoder, Encoder]], q_batches: list[torch.Tensor],
                d_batches: list[torch.Tensor], rounds: int) -> dict[str, float]:
    """Median seconds of one pass over every image, per path; paths alternate within each round."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, (query, database) in paths.items():
            start = time.perf_counter()
            _describe(query, database, q_batches, d_batches)
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def _autocast_bf16(encode: Encoder) -> Encoder:
    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return encode(x)
    return run


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0][:160] if lines else ''}"


def bench_model(name: str, args: argparse.Namespace, bf16_native: bool, cpu: str) -> dict[str, Any]:
    torch.manual_seed(0)
    model = zoo.create_model(name, pretrained=False).eval()
    query_tf, database_tf = zoo.model_transforms(model)
    queries = [query_tf(load_image(p)) for p in list_images(args.queries)]
    database = [database_tf(load_image(p)) for p in list_images(args.database)]
    q_batches, d_batches = _batches(queries, args.batch_size), _batches(database, args.batch_size)
    n_images = len(queries) + len(database)

    paths: dict[str, tuple[Encoder, Encoder]] = {"fp32 eager": (model.encode_query, model.encode_database)}
    skipped: dict[str, str] = {}
    setup_seconds: dict[str, float] = {}

    if "torch.compile" not in args.skip:
        start = time.perf_counter()
        try:
            compiled = (torch.compile(model.encode_query), torch.compile(model.encode_database))
            _describe(*compiled, q_batches, d_batches)  # compiles every batch shape now, not in a timed round
            paths["torch.compile"] = compiled
            setup_seconds["torch.compile"] = time.perf_counter() - start
        except Exception as err:  # noqa: BLE001 - report why and go on with the other paths
            skipped["torch.compile"] = f"skipped: compilation failed ({_first_line(err)})"
    if "bf16 autocast" not in args.skip:
        if bf16_native:
            paths["bf16 autocast"] = (_autocast_bf16(model.encode_query), _autocast_bf16(model.encode_database))
        else:
            skipped["bf16 autocast"] = f"skipped: no native bf16 on {cpu}"
    wants_ort = {"onnxruntime fp32", "onnxruntime int8"} - set(args.skip)
    if wants_ort:
        from zoo.onnx import OnnxModel, export_onnx

        folder = Path(tempfile.mkdtemp(prefix=f"bench-onnx-{name}-"))
        start = time.perf_counter()
        try:
            export_onnx(model, folder, quantize="int8" if "onnxruntime int8" in wants_ort else None,
                        image_size=tuple(queries[0].shape[-2:]) if name != "cvft_vgg" else None,
                        log=lambda line: print(f"  [{name}] {line}", file=sys.stderr, flush=True))
            setup_seconds["onnx export"] = time.perf_counter() - start
            threads = torch.get_num_threads()
            for path in sorted(wants_ort):
                runner = OnnxModel(folder, quantized=path.endswith("int8"), threads=threads)
                paths[path] = (runner.encode_query, runner.encode_database)
        except Exception as err:  # noqa: BLE001
            for path in wants_ort:
                skipped[path] = f"skipped: export failed ({_first_line(err)})"
    if name == "dinov2_salad" and args.salad_original:
        from bench.salad import build_original, to_original_keys

        variant = model.zoo_config["variant"]
        original = build_original(args.salad_original, args.dinov2, variant["num_clusters"], variant["cluster_dim"],
                                  variant["token_dim"])
        original.load_state_dict(to_original_keys(model.state_dict()))
        original.eval()
        paths["original fp32"] = (original, original)

    for encoders in paths.values():  # warm-up: allocator, kernel selection, onnxruntime's first run
        _describe(*encoders, q_batches, d_batches)
    seconds = _time_paths(paths, q_batches, d_batches, args.rounds)
    reference = _describe(*paths["fp32 eager"], q_batches, d_batches)
    top1 = knn(reference[0], reference[1], 1)[1]
    rows = {}
    for path in PATHS:
        if path in skipped:
            rows[path] = {"note": skipped[path]}
            continue
        if path not in paths:
            continue
        q, d = _describe(*paths[path], q_batches, d_batches)
        diff = max((q - reference[0]).abs().max().item(), (d - reference[1]).abs().max().item())
        cosine = min(torch.nn.functional.cosine_similarity(q, reference[0]).min().item(),
                     torch.nn.functional.cosine_similarity(d, reference[1]).min().item())
        same = (knn(q, d, 1)[1] == top1).float().mean().item()
        rows[path] = {"images_per_s": n_images / seconds[path],
                      "speedup_vs_fp32_eager": seconds["fp32 eager"] / seconds[path],
                      "max_abs_diff": diff, "min_cosine": cosine, "top1_agreement": same}
    return {"model": name, "variant": model.zoo_config["variant_tag"], "images": n_images,
            "input_sizes": {"query": list(queries[0].shape[-2:]), "database": list(database[0].shape[-2:])},
            "paths": rows, "setup_seconds": setup_seconds}


def _print_model(result: dict[str, Any]) -> None:
    sizes = result["input_sizes"]
    shown = "x".join(map(str, sizes["query"])) + ("" if sizes["query"] == sizes["database"] else
                                                  " / " + "x".join(map(str, sizes["database"])))
    print(f"\n{result['model']} ({result['variant']}, {shown}, {result['images']} images)")
    header = f"  {'path':18} {'img/s':>8} {'x fp32':>7} {'max |diff|':>10} {'min cos':>9} {'top-1 same':>10}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for path, row in result["paths"].items():
        if "note" in row:
            print(f"  {path:18} {row['note']}")
        else:
            print(f"  {path:18} {row['images_per_s']:8.2f} {row['speedup_vs_fp32_eager']:6.2f}x "
                  f"{row['max_abs_diff']:10.1e} {row['min_cosine']:9.6f} {row['top1_agreement']:10.0%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(zoo.ENTRY_POINTS), choices=list(zoo.ENTRY_POINTS))
    parser.add_argument("--queries", default=str(SAMPLES / "queries"), help="folder of query images")
    parser.add_argument("--database", default=str(SAMPLES / "database"), help="folder of database images")
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes per path; the median counts (default: 3)")
    parser.add_argument("--threads", type=int, help="torch and onnxruntime threads (default: torch's)")
    parser.add_argument("--skip", nargs="+", default=[], choices=[p for p in PATHS if p != "fp32 eager"],
                        metavar="PATH", help="paths not to run, e.g. --skip torch.compile")
    parser.add_argument("--salad-original", type=Path, metavar="DIR", help="clone of serizba/salad (with --dinov2)")
    parser.add_argument("--dinov2", type=Path, metavar="DIR", help="clone of facebookresearch/dinov2")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    args = parser.parse_args(argv)
    if bool(args.salad_original) != bool(args.dinov2):
        parser.error("--salad-original and --dinov2 go together (the original loads DINOv2 through torch.hub)")
    if args.threads:
        torch.set_num_threads(args.threads)

    bf16_native, evidence = native_cpu_bf16()
    cpu = cpu_name()
    print(f"CPU: {cpu} ({platform.machine()}); {evidence}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; random weights (seed 0); "
          f"images from {args.queries} and {args.database}")
    results = []
    for name in args.models:
        result = bench_model(name, args, bf16_native, cpu)
        _print_model(result)
        results.append(result)
    if args.json:
        caps = {k: v for k, v in getattr(torch.cpu, "get_capabilities", dict)().items()
                if k in ("avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni", "amx_int8")}
        args.json.write_text(json.dumps({"cpu": cpu, "native_bf16": bf16_native, "capabilities": caps,
                                         "torch": torch.__version__, "threads": torch.get_num_threads(),
                                         "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
