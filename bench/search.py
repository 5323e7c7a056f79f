#!/usr/bin/env python
"""Exact k-NN: zoo.search against faiss-cpu (IndexFlatIP / IndexFlatL2) and a full numpy matrix.

Every method runs in its own subprocess on the same seeded random data (L2-normalised float32),
so that its peak memory can be measured on its own: the peak resident set size (VmHWM, reset
after the data are made) minus the resident size before the search, i.e. everything the search
allocates beyond its inputs, including faiss's copy of the database inside an index. On CUDA
(``--device cuda``, zoo.search only) the peak of torch's allocator is reported as well.

Printed per case: seconds (the fastest of ``--repeat`` interleaved runs), speed relative to faiss
for the same metric (> 1 = faster than faiss), extra peak memory (the largest over the runs), and
agreement of the top-k indices with faiss. The full numpy matrix runs only where it fits in
``--max-matrix-gb``.

``--baseline REF`` also runs the zoo methods with the ``zoo`` package of git revision ``REF``
(e.g. ``main`` or ``HEAD~1``), interleaved with the others, and prints the speed of the working
tree's search relative to it. ``--unique U`` draws the database from ``U`` distinct vectors, so
that it holds many duplicates (and exactly tying scores).

  python bench/search.py                                   # default cases, 1 thread
  python bench/search.py --case 100000,100000,4096 --threads 16
  python bench/search.py --case 100000,100000,4096 --device cuda --methods zoo-ip zoo-l2
  python bench/search.py --case 2000,20000,1024 --methods zoo-ip zoo-l2 faiss-ip --baseline HEAD~1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
METHODS = ("zoo-ip", "zoo-l2", "faiss-ip", "faiss-l2", "faiss-knn-ip", "numpy-full-ip")
DEFAULT_CASES = ("10000,10000,4096", "100000,100000,128", "2000,100000,4096")


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _make_data(n_q: int, n_db: int, dim: int, seed: int, unique: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for n in (n_q, unique or n_db):
        x = rng.standard_normal((n, dim), dtype=np.float32)
        # In place, chunk by chunk: no temporary larger than a chunk.
        for i in range(0, n, 8192):
            x[i:i + 8192] /= np.linalg.norm(x[i:i + 8192], axis=1, keepdims=True)
        out.append(x)
    if unique:
        out[1] = out[1][rng.integers(0, unique, n_db)]
    return out


def worker(method: str, n_q: int, n_db: int, dim: int, k: int, seed: int, device: str, threads: int,
           unique: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    q, d = _make_data(n_q, n_db, dim, seed, unique)
    name, method = method, method.split("@")[0]  # a baseline runs the same code from another revision
    import faiss
    faiss.omp_set_num_threads(threads)
    from zoo.search import knn

    knn(q[:8], d[:64], 2)  # load kernels and libraries before measuring
    if device == "cuda":
        qt, dt = torch.from_numpy(q).cuda(), torch.from_numpy(d).cuda()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_base = torch.cuda.memory_allocated()
    rss_before = _rss_kb("VmRSS")
    exact_peak = _reset_peak()
    start = time.perf_counter()
    if method in ("zoo-ip", "zoo-l2"):
        metric = method.split("-")[1]
        if device == "cuda":
            _, idx = knn(qt, dt, k, metric, backend="torch")
            torch.cuda.synchronize()
        else:
            _, idx = knn(q, d, k, metric, backend="torch")
        idx = idx.cpu().numpy()
    elif method in ("faiss-ip", "faiss-l2"):
        index = faiss.IndexFlatIP(dim) if method == "faiss-ip" else faiss.IndexFlatL2(dim)
        index.add(d)
        _, idx = index.search(q, k)
    elif method == "faiss-knn-ip":
        _, idx = faiss.knn(q, d, k, metric=faiss.METRIC_INNER_PRODUCT)
    elif method == "numpy-full-ip":
        s = q @ d.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, 1), axis=1, kind="stable")
        idx = np.take_along_axis(part, order, 1)
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - start
    # Without a peak reset, VmHWM may still hold the data generation's peak: then a lower bound.
    result = {"method": name, "seconds": seconds, "extra_peak_mb": max(0, _rss_kb("VmHWM") - rss_before) / 1024,
              "peak_exact": exact_peak}
    np.save(os.environ["BENCH_IDX_OUT"], idx.astype(np.int64))
    if device == "cuda":
        result["gpu_extra_peak_mb"] = (torch.cuda.max_memory_allocated() - gpu_base) / 2**20
    return result


def _methods(args: argparse.Namespace) -> list[str]:
    """The methods to run: ``--methods``, plus ``<zoo method>@<REF>`` for each zoo method under
    ``--baseline REF``."""
    extra = [f"{m}@{args.baseline}" for m in args.methods if m.startswith("zoo-")] if args.baseline else []
    return list(args.methods) + extra


def _baseline_tree(ref: str, tmp: Path) -> Path:
    """The ``zoo`` package of git revision ``ref``, unpacked under ``tmp``."""
    import io
    import tarfile

    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", ref, "zoo"], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"--baseline {ref}: {archive.stderr.decode().strip()}")
    root = tmp / "baseline"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(root, filter="data")
    return root


def run_case(n_q: int, n_db: int, dim: int, args: argparse.Namespace, tmp: Path) -> list[dict]:
    """Every method ``--repeat`` times, interleaved (round r runs each method once), so that a
    change of load on a shared machine hits all methods alike; the fastest run of each counts."""
    import numpy as np

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads))
    baseline_root = _baseline_tree(args.baseline, tmp) if args.baseline else None
    best: dict[str, dict] = {}
    for _ in range(args.repeat):
        for method in _methods(args):
            if method == "numpy-full-ip" and n_q * n_db * 4 / 2**30 > args.max_matrix_gb:
                best[method] = {"method": method,
                                "skipped": f"full matrix {n_q * n_db * 4 / 2**30:.0f} GB > --max-matrix-gb"}
                continue
            if "skipped" in best.get(method, {}):
                continue
            idx_file = tmp / f"{method.replace('@', '_at_').replace('/', '_')}.npy"
            env["BENCH_IDX_OUT"] = str(idx_file)
            env["PYTHONPATH"] = str(baseline_root if "@" in method else REPO_ROOT)
            device = args.device if method.startswith("zoo") else "cpu"  # faiss-cpu and numpy: CPU baselines
            cmd = [sys.executable, __file__, "--worker", method, "--case", f"{n_q},{n_db},{dim}", "--k", str(args.k),
                   "--seed", str(args.seed), "--device", device, "--threads", str(args.threads),
                   "--unique", str(args.unique)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                best[method] = {"method": method, "skipped": f"failed: {out.stderr.strip().splitlines()[-1:]}"}
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["idx"] = np.load(idx_file)
            row["runs"] = best.get(method, {}).get("runs", []) + [row["seconds"]]
            row["extra_peak_mb"] = max(row["extra_peak_mb"], best.get(method, {}).get("extra_peak_mb", 0))
            if method in best and best[method]["seconds"] < row["seconds"]:
                row["seconds"] = best[method]["seconds"]
            best[method] = row
    return [best[m] for m in _methods(args) if m in best]


def report(n_q: int, n_db: int, dim: int, rows: list[dict], args: argparse.Namespace) -> list[str]:
    import numpy as np

    by = {r["method"]: r for r in rows if "seconds" in r}
    dup = f" drawn from {args.unique} distinct vectors" if args.unique else ""
    lines = [f"\n{n_q} queries x {n_db} database items{dup}, {dim}-d, k={args.k}, {args.threads} thread(s), "
             f"zoo on {args.device}",
             f"{'method':<15} {'seconds':>9} {'speed vs faiss':>15} {'extra peak MB':>14} {'same top-k as faiss':>20}"
             f"  all runs (s)"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['method']:<15} skipped: {r['skipped']}")
            continue
        base = by.get("faiss-l2" if r["method"].split("@")[0].endswith("l2") else "faiss-ip")
        ratio = f"{base['seconds'] / r['seconds']:.2f}x" if base else "-"
        agree = f"{100 * float(np.mean(r['idx'] == base['idx'])):.3f}%" if base else "-"
        mem = f"{r['extra_peak_mb']:.0f}"
        if "gpu_extra_peak_mb" in r:
            mem += f" (+{r['gpu_extra_peak_mb']:.0f} GPU)"
        runs = " ".join(f"{t:.1f}" for t in r["runs"])
        lines.append(f"{r['method']:<15} {r['seconds']:>9.2f} {ratio:>15} {mem:>14} {agree:>20}  {runs}")
    for m in args.methods:
        before = by.get(f"{m}@{args.baseline}")
        if before and m in by:
            speed = before["seconds"] / by[m]["seconds"]
            same = 100 * float(np.mean(by[m]["idx"] == before["idx"]))
            lines.append(f"{m} vs {m}@{args.baseline}: {speed:.3f}x speed (> 1 = faster), same top-k: {same:.3f}%")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="\n".join(__doc__.splitlines()[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", action="append", metavar="Q,N,D",
                   help=f"queries,database,dim (repeatable; default: {' '.join(DEFAULT_CASES)})")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--k", type=int, default=25)
    p.add_argument("--repeat", type=int, default=3, help="interleaved runs per method; the fastest counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where zoo.search runs")
    p.add_argument("--max-matrix-gb", type=float, default=4.0, help="largest full numpy matrix to try")
    p.add_argument("--baseline", metavar="REF", help="also run the zoo methods from git revision REF (same run)")
    p.add_argument("--unique", type=int, default=0, metavar="U",
                   help="draw the database from U distinct vectors (duplicates; 0 = all distinct)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    cases = [tuple(int(v) for v in c.split(",")) for c in (args.case or DEFAULT_CASES)]
    if args.worker:
        print(json.dumps(worker(args.worker, *cases[0], args.k, args.seed, args.device, args.threads, args.unique)))
        return 0
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        for n_q, n_db, dim in cases:
            print("\n".join(report(n_q, n_db, dim, run_case(n_q, n_db, dim, args, Path(tmp)), args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
