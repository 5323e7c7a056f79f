#!/usr/bin/env python
"""bf16 autocast against fp32 for every zoo model: images/s and how far the descriptors move.

For each model the same images go through the same extraction code (``zoo.engine.extract``)
twice in one run, once in fp32 and once under bf16 autocast, on the chosen device. It prints
images/s of both, their ratio, the largest absolute descriptor difference, the lowest cosine
between a descriptor and its fp32 counterpart, and whether each query's top-1 among the database
images stays the same.

Weights: ``--pretrained false`` (default) uses random weights, which measures speed faithfully
and descriptor drift only roughly (trained weights give other activations); pass converted
weights with ``--pretrained PATH`` for the real drift.

    python bench/precision.py                         # all models, CPU, sample images
    python bench/precision.py --models dinov2_salad --device cuda --repeat 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

import zoo  # noqa: E402
from zoo.data.base import ImageRecord  # noqa: E402
from zoo.engine.extract import extract_descriptors  # noqa: E402
from zoo.io import list_images  # noqa: E402
from zoo.search import knn  # noqa: E402
from zoo.settings import parse_pretrained  # noqa: E402

SAMPLES = REPO_ROOT / "assets" / "samples"


def _extract(model, records, transform, side, device, precision, batch_size, repeat):
    # One untimed batch first: the first call pays for allocator warm-up and kernel selection.
    extract_descriptors(model, records[:batch_size], transform, side=side, batch_size=batch_size, device=device,
                        precision=precision, progress=False)
    best, desc = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        desc = extract_descriptors(model, records, transform, side=side, batch_size=batch_size, device=device,
                                   precision=precision, progress=False).descriptors
        best = min(best, time.perf_counter() - start)
    return desc, len(records) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--models", nargs="+", default=list(zoo.ENTRY_POINTS))
    parser.add_argument("--pretrained", default="false")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--queries", default=str(SAMPLES / "queries"))
    parser.add_argument("--database", default=str(SAMPLES / "database"))
    parser.add_argument("--batch-size", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=1, help="timed passes per precision; the best is kept")
    args = parser.parse_args()
    pretrained = parse_pretrained(args.pretrained)

    queries = [ImageRecord(p) for p in list_images(args.queries)]
    database = [ImageRecord(p) for p in list_images(args.database)]
    print(f"device {args.device}, {len(queries)} queries + {len(database)} database images, "
          f"weights: {args.pretrained}, torch threads {torch.get_num_threads()}")
    header = f"{'model':14} {'fp32 img/s':>10} {'bf16 img/s':>10} {'ratio':>6} {'max |diff|':>10} {'min cos':>8} {'top-1 same':>10}"
    print(header)
    print("-" * len(header))
    for name in args.models:
        torch.manual_seed(0)
        model = zoo.create_model(name, pretrained=pretrained).to(args.device)
        query_tf, database_tf = zoo.model_transforms(model)
        results = {}
        for precision in ("fp32", "bf16"):
            q, q_speed = _extract(model, queries, query_tf, "query", args.device, precision, args.batch_size, args.repeat)
            d, d_speed = _extract(model, database, database_tf, "database", args.device, precision, args.batch_size,
                                  args.repeat)
            total = len(queries) + len(database)
            speed = total / (len(queries) / q_speed + len(database) / d_speed)
            results[precision] = (q, d, speed)
        (q32, d32, s32), (q16, d16, s16) = results["fp32"], results["bf16"]
        diff = max((q32 - q16).abs().max().item(), (d32 - d16).abs().max().item())
        cos = min((q32 * q16).sum(1).min().item(), (d32 * d16).sum(1).min().item())
        same = (knn(q32, d32, 1)[1] == knn(q16, d16, 1)[1]).float().mean().item()
        print(f"{name:14} {s32:10.2f} {s16:10.2f} {s16 / s32:6.2f} {diff:10.2e} {cos:8.5f} {same:10.0%}")


if __name__ == "__main__":
    main()
