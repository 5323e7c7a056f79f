#!/usr/bin/env python
"""Reproduce a published table: evaluate its rows and compare with the published numbers.

Tables are declarative files shipped in zoo/tables/ (schema: zoo/tables/README.md). Each row names a
model, its weights, a data set folder under --data-root and a protocol; the report (terminal
table, JSON, Markdown, recall@K curves, retrieval grids) goes to --out.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from zoo.settings import parse_pretrained

EPILOG = """examples:
  python -m zoo eval --list --data-root /data
  python -m zoo eval --table salad --data-root /data --device cuda --precision bf16
  python -m zoo eval --table cvusa --data-root /data --pretrained weights/cvft --rows 0
  torchrun --nproc_per_node 4 -m zoo eval --table cvact --data-root /data --device cuda
  python -m zoo eval --table salad --data-root /data --backend onnxruntime --onnx release/salad-onnx

Descriptors are cached under OUT/cache (--cache-dir) keyed by model, weights, transform, images and
precision: an interrupted run resumes where it stopped and gives the same numbers.
"""


def build_parser(prog: str = "python -m zoo eval") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.strip().splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--table", help="table name (a packaged table, without .yaml; see --list) or a path to a table YAML")
    p.add_argument("--list", action="store_true",
                   help="list every table with its rows, data sets and whether their folders exist under --data-root")
    p.add_argument("--data-root", help="folder holding each row's data_subdir")
    p.add_argument("--rows", nargs="+", metavar="ROW", help="only these rows: indices as --list numbers them, or labels")
    p.add_argument("--model", help="only rows of this model (registry name, with or without .variant)")
    p.add_argument("--pretrained", help="weights for every selected row, overriding the table: true, false, a converted "
                                        "folder or file, hf-hub:org/repo[@rev], or a weight source name")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: %(default)s)")
    p.add_argument("--num-workers", type=int, default=4, help="DataLoader workers (default: %(default)s)")
    p.add_argument("--precision", choices=["fp32", "auto", "fp16", "bf16"], default="fp32",
                   help="autocast precision; fp16 needs CUDA, bf16 also runs on CPU; auto: bf16 on CPUs with native "
                        "bf16 (avx512_bf16/AMX) and on CUDA where supported, fp16 on other GPUs, fp32 on other CPUs. "
                        "Default fp32: reproduced numbers must not depend on the machine (default: %(default)s)")
    p.add_argument("--backend", choices=["torch", "onnxruntime", "onnxruntime-int8"], default="torch",
                   help="run the PyTorch model, or onnxruntime on the graphs in --onnx (fp32, or the int8 ones "
                        "written by export --quantize int8) (default: %(default)s)")
    p.add_argument("--onnx", metavar="DIR", help="folder written by `python -m zoo export NAME --format onnx`")
    p.add_argument("--out", help="report folder (default: outputs/eval/TABLE)")
    p.add_argument("--cache-dir", help="descriptor cache (default: OUT/cache)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write cached descriptors")
    p.add_argument("--shard-size", type=int, default=1024,
                   help="images per cache shard and per torchrun process share (default: %(default)s)")
    p.add_argument("--skip-corrupt", action="store_true",
                   help="skip unreadable images (counted and listed in the report) instead of stopping")
    p.add_argument("--tables-dir", default=None, help="where tables live (default: the tables shipped in the package)")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (it may register models, data sets or protocols); repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p



def cmd_list(args: argparse.Namespace) -> int:
    from zoo.engine.evaluate import data_status, list_tables, load_table

    names = list_tables(args.tables_dir)
    if not names:
        print("no tables found")
        return 0
    for name in names:
        table = load_table(name, args.tables_dir)
        print(f"{name}: {table.title}")
        for i, (row, status) in enumerate(zip(table.rows, data_status(table, args.data_root))):
            print(f"  [{i}] {row.label}\n      model {row.model} (pretrained: {row.pretrained}), data set {row.dataset} "
                  f"in {row.data_subdir}/: {status}, protocol {row.protocol}, metrics {', '.join(row.metrics)}")
        print()
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m zoo eval") -> int:
    args = build_parser(prog).parse_args(argv)
    from zoo.cli.guard import run_guarded

    try:
        return run_guarded(lambda: _evaluate(args, prog), prog)
    finally:
        from zoo.distributed import cleanup
        cleanup()


def _evaluate(args: argparse.Namespace, prog: str) -> int:
    from zoo.errors import InputError

    for module in args.plugin:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise InputError(f"--plugin {module}: cannot import it ({err})") from err
    if args.list:
        return cmd_list(args)
    if not args.table:
        print(f"{prog}: error: give --table NAME (or --list to see the tables)", file=sys.stderr)
        return 2
    if not args.data_root:
        print(f"{prog}: error: --data-root is required to evaluate a table", file=sys.stderr)
        return 2
    from zoo.engine.evaluate import evaluate_table

    evaluate_table(args.table, args.data_root, rows=args.rows, model=args.model,
                   pretrained=parse_pretrained(args.pretrained), device=args.device, batch_size=args.batch_size,
                   num_workers=args.num_workers, precision=args.precision, out_dir=args.out,
                   cache_dir=args.cache_dir, use_cache=not args.no_cache, skip_corrupt=args.skip_corrupt,
                   shard_size=args.shard_size, progress=not args.no_progress, tables_dir=args.tables_dir,
                   backend=args.backend, onnx=args.onnx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
