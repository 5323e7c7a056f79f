"""One DDP optimiser step of each named recipe, all in one torchrun launch (bench/gpu.py's ddp section).

    torchrun --nproc_per_node N bench/_ddp_steps.py --work DIR --device cuda --recipes salad-smoke ...

Each recipe trains from ``DIR/<recipe>/data`` into ``DIR/<recipe>/run`` through the same
:class:`zoo.engine.train.Trainer` that ``python -m zoo train`` runs, stopped after one step. The
process group is joined once and kept for every recipe (one interpreter and one NCCL/gloo set-up
instead of one per recipe). Rank 0 writes ``DIR/results.json``: per recipe, ok / seconds / the
first logged loss / the error, and the global batch when it was cut to divide over the processes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from zoo import distributed as D  # noqa: E402
from zoo.engine.recipes import resolve_recipe  # noqa: E402
from zoo.engine.train import Trainer, TrainOptions  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="folder with <recipe>/data; runs and results go there")
    parser.add_argument("--device", choices=("cpu", "cuda"), required=True)
    parser.add_argument("--recipes", nargs="+", required=True)
    args = parser.parse_args(argv)
    info = D.init_distributed(args.device)
    results = {}
    try:
        for name in args.recipes:
            recipe = resolve_recipe(name, [])
            overrides = []
            # A smoke recipe's global batch is sized for one process; cut it to divide over all of them.
            if recipe["batch_size"] % (info.world_size * recipe["grad_accum_steps"]):
                fitted = recipe["batch_size"] - recipe["batch_size"] % (info.world_size * recipe["grad_accum_steps"])
                overrides.append(f"batch_size={fitted}")
                recipe = resolve_recipe(name, overrides)
            run = args.work / name / "run"
            start = time.perf_counter()
            try:
                Trainer(recipe, TrainOptions(out_dir=run, data_root=args.work / name / "data", device=args.device,
                                             progress=False, stop_after_steps=1)).run()
                D.barrier()
                metrics = run / "metrics.jsonl"
                rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
                losses = [r["loss"] for r in rows if r.get("kind") == "train" and "loss" in r]
                results[name] = {"ok": bool(losses), "first_loss": losses[0] if losses else None}
            except Exception as err:  # noqa: BLE001 - record it, go on with the next recipe
                results[name] = {"ok": False, "first_loss": None, "error": f"{type(err).__name__}: {err}"}
            results[name].update({"seconds": time.perf_counter() - start, "overrides": overrides})
    finally:
        if info.rank == 0:
            (args.work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        D.cleanup()
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
