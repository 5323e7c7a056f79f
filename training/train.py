#!/usr/bin/env python
"""Train a model of the zoo from a packaged recipe: the same command as ``python -m zoo train``.

    python training/train.py --list
    python training/train.py --recipe dycl --data-root /data
    torchrun --nproc_per_node 4 training/train.py --recipe salad --data-root /data
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's zoo, installed or not

from zoo.cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="train.py"))
