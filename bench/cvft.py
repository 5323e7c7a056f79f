#!/usr/bin/env python
"""Throughput of cvft_vgg in pairs per second (one ground panorama 112x616 + one aerial image 256x256).

Measures the fp32 baseline and the requested setting (``--precision``, ``--channels-last``) in the
same run on the same inputs, and prints both, their ratio, and how far the setting's descriptors
move from fp32 (max abs difference; descriptors are L2-normalised, 4096-d).

Examples:
  python bench/cvft.py --device cpu --batch-size 1 --iters 2
  python bench/cvft.py --device cuda --batch-size 32 --precision bf16 --channels-last

Weights are random (pretrained=False): speed does not depend on them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import zoo  # noqa: E402
from bench._timing import DTYPES, autocast, check_precision, report, seconds_per_call  # noqa: E402


def run_pairs(model: torch.nn.Module, ground: torch.Tensor, aerial: torch.Tensor, iters: int, warmup: int,
              precision: str, device: torch.device) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Pairs per second of ``encode_query(ground)`` + ``encode_database(aerial)``, and the last descriptors."""
    with torch.inference_mode(), autocast(device, precision):
        seconds, (g, a) = seconds_per_call(lambda: (model.encode_query(ground), model.encode_database(aerial)),
                                           iters, warmup, device)
    return ground.shape[0] / seconds, g.float(), a.float()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="fp32", choices=list(DTYPES), help="autocast dtype of the measured setting")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convolutions on GPU)")
    p.add_argument("--batch-size", type=int, default=1, help="pairs per forward")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    check_precision(p, device, args.precision)
    torch.manual_seed(args.seed)
    model = zoo.create_model("cvft_vgg", pretrained=False).to(device).eval()
    # Caffe-mean-subtracted BGR pixels span about -125..150
    ground = torch.empty(args.batch_size, 3, 112, 616, device=device).uniform_(-120, 130)
    aerial = torch.empty(args.batch_size, 3, 256, 256, device=device).uniform_(-120, 130)

    base_rate, base_g, base_a = run_pairs(model, ground, aerial, args.iters, args.warmup, "fp32", device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        ground, aerial = ground.to(memory_format=torch.channels_last), aerial.to(memory_format=torch.channels_last)
    rate, g, a = run_pairs(model, ground, aerial, args.iters, args.warmup, args.precision, device)
    diff = max(float((g - base_g).abs().max()), float((a - base_a).abs().max()))
    setting = args.precision + (", channels_last" if args.channels_last else "")
    result = {"device": str(device), "batch_size": args.batch_size, "setting": setting,
              "fp32_pairs_per_s": round(base_rate, 3), "pairs_per_s": round(rate, 3),
              "speedup_vs_fp32": round(rate / base_rate, 2), "max_abs_diff_vs_fp32": diff}
    return report(result, f"cvft_vgg [{device}, batch {args.batch_size}] fp32: {base_rate:.2f} pairs/s | {setting}: {rate:.2f} pairs/s "
          f"(x{rate / base_rate:.2f}) | descriptors max abs diff vs fp32 {diff:.2e}", args.json)


if __name__ == "__main__":
    main()
