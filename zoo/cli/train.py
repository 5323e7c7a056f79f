#!/usr/bin/env python
"""Train a model of the zoo from a declarative recipe (zoo/recipes/NAME.yaml).

Examples:
  python training/train.py --list
  python training/train.py --recipe salad-smoke --data-root /tmp/smoke --out runs/salad-smoke --device cpu
  python training/train.py --recipe salad --data-root /data optimizer.lr=1e-4 precision=bf16
  torchrun --nproc_per_node 4 training/train.py --recipe salad --data-root /data --out runs/salad
  python training/train.py --recipe salad --data-root /data --out runs/salad --resume

The final weights are exported to OUT/export (model.safetensors + config.json), loadable with
zoo.create_model(NAME, pretrained="OUT/export"), torch.hub.load(REPO, NAME, source="local",
pretrained="OUT/export") and eval/reproduce.py --pretrained OUT/export.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def build_parser(prog: str = "python -m zoo train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]) + "\n\nRecipe schema: zoo/recipes/README.md",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", metavar="NAME", help="recipe name (a file in the recipes folder) or a path to a .yaml")
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    parser.add_argument("--data-root", type=Path, metavar="DIR",
                        help="folder holding the recipe's data set folder (its data.subdir)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="output folder: checkpoints/, metrics.csv/.jsonl, recipe.yaml, export/ "
                             "(default: ./runs/RECIPE)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last intact checkpoint in --out (starts a new run if there is "
                             "none and --out holds no earlier export)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run in --out (its checkpoints/, export/, metrics, recipe.yaml); "
                             "without it or --resume, a folder holding any of them is refused")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--recipes-dir", type=Path, metavar="DIR",
                        help="read recipes from DIR instead of the packaged recipes ($ZOO_RECIPES_DIR also works)")
    parser.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard (needs tensorboard)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--check", action="store_true",
                        help="run every check (recipe, task, model name, data, resume state), print the "
                             "resolved recipe and exit without training")
    parser.add_argument("--stop-after-steps", type=int, metavar="N",
                        help="debug: stop after N optimiser steps without a final checkpoint, as if killed")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="recipe overrides, dotted keys, YAML values: optimizer.lr=1e-4 epochs=2 eval=null")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m zoo train") -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("zoo").setLevel(logging.INFO)
    from zoo.cli.guard import run_guarded

    return run_guarded(lambda: _train(args, prog), prog)


def _train(args: argparse.Namespace, prog: str) -> int:
    from zoo.engine.recipes import recipe_table, resolve_recipe
    from zoo.engine.train import Trainer, TrainOptions

    if args.list:
        print(recipe_table(args.recipes_dir))
        return 0
    if not args.recipe:
        print(f"{prog}: error: --recipe NAME is required (see --list)", file=sys.stderr)
        return 2
    recipe = resolve_recipe(args.recipe, args.overrides, args.recipes_dir)
    options = TrainOptions(out_dir=args.out or Path("runs") / recipe["name"], data_root=args.data_root,
                           resume=args.resume, overwrite=args.overwrite, device=args.device,
                           tensorboard=args.tensorboard, progress=not args.no_progress,
                           stop_after_steps=args.stop_after_steps)
    trainer = Trainer(recipe, options)
    if args.check:
        from zoo.engine.recipes import dump_recipe
        print(dump_recipe(trainer.recipe), end="")
        print(f"# OK: {trainer.micro_batch} item(s) per process per micro-batch, data: {trainer.data_dir}")
        return 0
    result = trainer.run()
    if result.export_dir is not None:
        print(f"exported the trained model to {result.export_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
