#!/usr/bin/env bash
# The GPU check of the zoo, under 8 minutes on one GPU and without network: every model's CUDA
# descriptors against CPU fp32, images/s per precision / memory format / attention kernel /
# torch.compile, exact search at 100k x 100k x 4096 against the CPU path, and one DDP step of each
# smoke recipe under torchrun (NCCL). Writes one JSON (--out, default gpu_check.json) and prints a table.
#
#   bench/gpu.sh                      # on a GPU machine
#   bench/gpu.sh --dry-run            # anywhere: CPU, tiny sizes, gloo (checks the script in < 60 s)
#   bench/gpu.sh --out /tmp/gpu.json --sections throughput search
#
# Other options: python bench/gpu.py --help. PYTHON selects the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."

# No network: weights are random, data is generated; a Hub lookup must fail fast, not retry.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
# Keep the CPU reference and search timings on the cores the machine has, not oversubscribed.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

exec "${PYTHON:-python}" bench/gpu.py "$@"
