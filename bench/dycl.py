#!/usr/bin/env python
"""Forward throughput (images/s) of dycl_resnet at 224x224, against fp32 measured in the same run.

Drone queries and satellite images go through the same network, so one number covers both sides.
The fp32 baseline and the chosen setting run on the same inputs; the script prints both, their
ratio and the largest difference between their descriptors.

Examples:
  python bench/dycl.py --device cpu --iters 3 --batch-size 8
  python bench/dycl.py --device cuda --precision fp16 --channels-last --batch-size 128   # as the original evaluates (fp16 autocast)
  python bench/dycl.py --device cuda --precision bf16 --channels-last --batch-size 128

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


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="fp32", choices=list(DTYPES), help="autocast dtype of the measured run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=224, help="square input side (the evaluation crop is 224)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convolutions on GPU)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    check_precision(p, device, args.precision)
    torch.manual_seed(0)
    model = zoo.create_model("dycl_resnet", pretrained=False).to(device).eval()
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    with torch.inference_mode():
        base_s, base_out = seconds_per_call(lambda: model(x), args.iters, args.warmup, device)
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        xf = x.to(memory_format=fmt)
        with autocast(device, args.precision):
            fast_s, fast_out = seconds_per_call(lambda: model(xf), args.iters, args.warmup, device)
    base, fast = args.batch_size / base_s, args.batch_size / fast_s
    diff = (fast_out.float() - base_out.float()).abs().max().item()
    result = {"model": "dycl_resnet", "device": str(device), "batch_size": args.batch_size, "size": args.size,
              "fp32_images_per_s": round(base, 3), "precision": args.precision, "channels_last": args.channels_last,
              "images_per_s": round(fast, 3), "speedup_over_fp32": round(fast / base, 2),
              "max_abs_descriptor_diff_vs_fp32": diff}
    return report(result, f"dycl_resnet {args.size}px batch {args.batch_size} on {device}: fp32 {base:.2f} img/s | "
          f"{args.precision}{' channels_last' if args.channels_last else ''} {fast:.2f} img/s "
          f"(x{fast / base:.2f}); max |descriptor diff| {diff:.2e}", args.json)


if __name__ == "__main__":
    main()
