"""bench/gpu.sh --dry-run: the GPU check runs end to end on a CPU-only machine (tiny sizes, gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import zoo

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([str(REPO / "bench" / "gpu.sh"), "--dry-run", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dry_run"] and report["failures"] == []
    sections = report["sections"]
    assert set(sections) == {"equivalence", "throughput", "search", "ddp"}
    for name in zoo.ENTRY_POINTS:
        # On the CPU the "device" run is the reference itself; bf16 autocast moves descriptors a little.
        assert sections["equivalence"][name]["fp32"]["max_abs_diff_vs_cpu_fp32"] == 0.0
        assert 0.0 < sections["equivalence"][name]["bf16"]["max_abs_diff_vs_cpu_fp32"] < 0.05
        assert sections["throughput"][name]["fp32"]["images_per_s"] > 0
    assert "fp32 channels_last" in sections["throughput"]["dycl_resnet"]  # CNNs get channels_last
    assert "fp32 channels_last" not in sections["throughput"]["dinov2_salad"]
    assert sections["search"]["topk_index_agreement_on_subsample"] == 1.0
    assert sections["ddp"]["backend"] == "gloo" and sections["ddp"]["processes"] == 2
    for recipe in ("salad-smoke", "dycl-smoke", "cvft-smoke", "ucdir-smoke", "aml-smoke"):
        assert sections["ddp"][recipe]["ok"], sections["ddp"][recipe]
    for heading in ("Descriptors on the device vs CPU fp32", "Throughput", "Exact search", "One DDP step"):
        assert heading in proc.stdout
