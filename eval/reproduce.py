#!/usr/bin/env python
"""Rebuild a published table beside the paper's numbers: the same command as ``python -m zoo eval``.

    python eval/reproduce.py --list --data-root /data
    python eval/reproduce.py --table cvusa --data-root /data --device cuda
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's zoo, installed or not

from zoo.cli.reproduce import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="reproduce.py"))
