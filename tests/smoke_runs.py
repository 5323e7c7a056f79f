"""One training run per smoke recipe, shared by every test that checks one (the model's test_task.py
and tests/test_end_to_end.py): ``smoke_run("dycl-smoke")`` trains on first use and returns the run.

Runs train without ``--data-root``, on the set the recipe generates (``data.synthetic``) in
``OUT/data``, through the training command line's ``main(argv)`` in this process, except
:data:`SUBPROCESS_RECIPE`, which runs ``python -m zoo train`` as a real process started in a folder
outside the repository, with ``--out`` relative to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
SUBPROCESS_RECIPE = "dycl-smoke"


@dataclass
class SmokeRun:
    out: Path             # the run folder (--out)
    stdout: str = ""      # the process's output (SUBPROCESS_RECIPE only)
    stderr: str = ""

    @property
    def export_dir(self) -> Path:
        return self.out / "export"

    @property
    def data_root(self) -> Path:
        return self.out / "data"


def _train(recipe: str, folder: Path) -> SmokeRun:
    args = ["--recipe", recipe, "--device", "cpu", "--no-progress"]
    if recipe != SUBPROCESS_RECIPE:
        from zoo.cli.train import main

        assert main([*args, "--out", str(folder / "run")]) == 0, f"{recipe} failed (see the captured output)"
        return SmokeRun(folder / "run")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "zoo", "train", *args, "--out", "run"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return SmokeRun(folder / "run", proc.stdout, proc.stderr)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], SmokeRun]:
    """``smoke_run(recipe)``: the run of ``recipe``, trained once per test session (a failure is kept too)."""
    runs: dict[str, SmokeRun | Exception] = {}

    def get(recipe: str) -> SmokeRun:
        if recipe not in runs:
            try:
                runs[recipe] = _train(recipe, tmp_path_factory.mktemp(recipe))
            except Exception as err:  # every test of this recipe reports the same failure, without retraining
                runs[recipe] = err
                raise
        run = runs[recipe]
        if isinstance(run, Exception):
            raise run
        return run

    return get
