#!/usr/bin/env python
"""City-scale search: faiss flat (exact), IVF-PQ (with and without exact re-ranking) and HNSW on a
synthetic map, with ratios against exact flat search measured in the same run.

The map: ``--n`` descriptors (default 1,000,000) of dimension ``--dim`` (256), L2-normalised, drawn
from a mixture of Gaussians on the sphere (``n / 1000`` places by default, i.e. ~1000 views per
place) whose noise has a decaying spectrum (the variance of dimension ``i`` falls as ``1 / (i + 1)``,
as in real descriptors, where a few directions carry most of the variance). The queries
(``--queries``, 1000) are noisy views of known map items (the same noise, scaled by ``--noise``):
recall@K counts a query as found when its source item is among the top K.

Indexes are built by ``zoo.index.build_faiss_index`` with the parameters ``python -m zoo index build``
would choose (``zoo.index.ivfpq_params``); IVF-PQ's exact re-ranking reads the shortlisted rows of a
float16 ``.npy`` opened memory-mapped, as the index folder does. Printed per method: build seconds
(wall clock, and CPU time summed over threads, which other jobs on a shared machine do not inflate),
bytes of the index (faiss's serialisation), queries per second (all queries in one batch, faiss's
threads), recall@1/10, and ratios against exact flat; a JSON file keeps everything.

  python bench/index.py                       # 1M x 256: half an hour on a busy 2-core machine
  python bench/index.py --n 100000 --kinds flat ivfpq
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_map(n: int, dim: int, n_queries: int, places: int, noise: float, spread: float,
             seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(database (n, dim), queries (n_queries, dim), source row of each query)``, float32, unit norm."""
    rng = np.random.default_rng(seed)
    scale = (1.0 + np.arange(dim)) ** -0.5
    scale = (scale / np.sqrt((scale ** 2).sum())).astype(np.float32)
    centres = _normalise(rng.standard_normal((places, dim), dtype=np.float32) * scale)
    label = rng.integers(0, places, n)
    x = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):  # in chunks: no temporary larger than one
        e = min(n, s + 100_000)
        x[s:e] = _normalise(centres[label[s:e]] + spread * rng.standard_normal((e - s, dim), dtype=np.float32) * scale)
    source = rng.choice(n, n_queries, replace=False)
    q = _normalise(x[source] + noise * spread * rng.standard_normal((n_queries, dim), dtype=np.float32) * scale)
    return x, q, source


def _recall(rows: np.ndarray, source: np.ndarray, k: int) -> float:
    return float((rows[:, :k] == source[:, None]).any(1).mean())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--n", type=int, default=1_000_000, help="map size (default: %(default)s)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--places", type=int, default=None, help="mixture components (default: n / 1000)")
    ap.add_argument("--spread", type=float, default=0.35, help="spread of a place's views around its centre")
    ap.add_argument("--noise", type=float, default=1.0, help="query noise, relative to --spread")
    ap.add_argument("--kinds", nargs="+", default=["flat", "ivfpq", "hnsw"], choices=["flat", "ivfpq", "hnsw"])
    ap.add_argument("--rerank", type=int, default=100, help="IVF-PQ shortlist re-ranked exactly")
    ap.add_argument("--nprobe", type=int, nargs="+", default=None,
                    help="IVF-PQ lists visited, one or more values (default: the index's rule)")
    ap.add_argument("--ef", type=int, nargs="+", default=[128, 256], help="HNSW efSearch values")
    ap.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="output file (default: outputs/bench_index_<n>.json)")
    args = ap.parse_args()

    import faiss

    from zoo.index import build_faiss_index, index_bytes, ivfpq_params, rerank, set_search_params, to_search_device

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    k = 10
    t0 = time.perf_counter()
    x, q, source = make_map(args.n, args.dim, args.queries, args.places or max(1, args.n // 1000), args.noise,
                            args.spread, args.seed)
    print(f"map {args.n} x {args.dim}, {args.queries} queries, made in {time.perf_counter() - t0:.1f} s; "
          f"CPU {_cpu_name()}, {faiss.omp_get_max_threads()} faiss threads, faiss {faiss.__version__}, "
          f"{faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0} GPUs", flush=True)
    results: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="bench_index_"))

    def timed_search(index, kind, shortlist_k):  # -> (rows, seconds)
        index = to_search_device(index, kind)
        start = time.perf_counter()
        _, rows = index.search(q, shortlist_k)
        return rows, time.perf_counter() - start

    exact_top1 = None

    def record(method, build, nbytes, seconds, rows, extra=None):
        # exact_nn@1: the method's top-1 is exact search's top-1 (faiss's "1-recall@1").
        build_s, build_cpu_s = build
        results.append({"method": method, "build_s": build_s, "build_cpu_s": build_cpu_s, "bytes": nbytes,
                        "search_s": seconds,
                        "qps": args.queries / seconds, "recall@1": _recall(rows, source, 1),
                        "recall@10": _recall(rows, source, 10),
                        "exact_nn@1": 1.0 if exact_top1 is None else float((rows[:, 0] == exact_top1).mean()),
                        **(extra or {})})
        r = results[-1]
        print(f"  {method}: build {build_s:.1f} s, {nbytes / 2**20:.1f} MiB, {r['qps']:.0f} q/s, "
              f"R@1 {r['recall@1']:.3f}, R@10 {r['recall@10']:.3f}", flush=True)

    # Exact flat is the baseline of every ratio: always measured.
    start, cpu = time.perf_counter(), time.process_time()
    flat = build_faiss_index(x, "flat")
    build = (time.perf_counter() - start, time.process_time() - cpu)
    rows, seconds = timed_search(flat, "flat", k)
    record("flat (exact)", build, index_bytes(flat), seconds, rows)
    exact_top1 = rows[:, 0].copy()
    del flat

    if "ivfpq" in args.kinds:
        params = ivfpq_params(args.n, args.dim)
        start, cpu = time.perf_counter(), time.process_time()
        ivf = build_faiss_index(x, "ivfpq", params, progress=False)
        build = (time.perf_counter() - start, time.process_time() - cpu)
        nbytes = index_bytes(ivf)
        print(f"  ivfpq {params}: built in {build[0]:.1f} s ({build[1]:.1f} s of CPU time)", flush=True)
        store_path = work / "descriptors.npy"
        np.save(store_path, x.astype(np.float16))
        store = np.load(store_path, mmap_mode="r")
        for nprobe in args.nprobe or [params["nprobe"]]:
            set_search_params(ivf, "ivfpq", nprobe=nprobe)
            info = {"params": {**params, "nprobe": nprobe}}
            rows, seconds = timed_search(ivf, "ivfpq", k)
            record(f"ivfpq nprobe={nprobe}", build, nbytes, seconds, rows, info)
            start = time.perf_counter()
            shortlist, _ = timed_search(ivf, "ivfpq", args.rerank)
            _, rows = rerank(store, q, shortlist, k)
            seconds = time.perf_counter() - start
            record(f"ivfpq nprobe={nprobe} + rerank {args.rerank}", build, nbytes, seconds, rows,
                   {**info, "rerank": args.rerank, "store_bytes_on_disk": store_path.stat().st_size,
                    "shortlist_recall": _recall(shortlist, source, args.rerank)})
        del ivf, store
        store_path.unlink()

    if "hnsw" in args.kinds:
        start, cpu = time.perf_counter(), time.process_time()
        hnsw = build_faiss_index(x, "hnsw")
        build = (time.perf_counter() - start, time.process_time() - cpu)
        nbytes = index_bytes(hnsw)
        for ef in args.ef:
            set_search_params(hnsw, "hnsw", ef=ef)
            rows, seconds = timed_search(hnsw, "hnsw", k)
            record(f"hnsw32 ef={ef}", build, nbytes, seconds, rows, {"ef_search": ef})
        del hnsw

    base = results[0]
    for r in results:
        r["speed_vs_flat"] = r["qps"] / base["qps"]
        r["memory_vs_flat"] = r["bytes"] / base["bytes"]
        r["recall@1_vs_flat"] = r["recall@1"] / base["recall@1"] if base["recall@1"] else None
    header = ("method", "build s", "build CPU s", "index MiB", "mem/flat", "q/s", "speed/flat", "R@1", "R@10", "R@1/flat",
              "exact NN@1")
    table = [header] + [(r["method"], f"{r['build_s']:.1f}", f"{r['build_cpu_s']:.1f}", f"{r['bytes'] / 2**20:.1f}",
                         f"{r['memory_vs_flat']:.3f}",
                         f"{r['qps']:.0f}", f"{r['speed_vs_flat']:.1f}x", f"{r['recall@1']:.3f}",
                         f"{r['recall@10']:.3f}", f"{r['recall@1_vs_flat']:.3f}", f"{r['exact_nn@1']:.3f}")
                        for r in results]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print()
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    for r in results:
        if "store_bytes_on_disk" in r:
            print(f"\n{r['method']}: re-ranking also reads a {r['store_bytes_on_disk'] / 2**20:.0f} MiB float16 store, "
                  f"memory-mapped (only shortlisted rows are paged in); true item in the shortlist for "
                  f"{100 * r['shortlist_recall']:.1f}% of queries")
    out = Path(args.json or REPO_ROOT / "outputs" / f"bench_index_{args.n}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"n": args.n, "dim": args.dim, "queries": args.queries, "places": args.places or max(1, args.n // 1000),
               "spread": args.spread, "noise": args.noise, "seed": args.seed, "cpu": _cpu_name(),
               "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(), "results": results}
    tmp = out.with_name(f".{out.name}.part")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(out)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
