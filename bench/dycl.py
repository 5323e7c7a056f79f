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
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import zoo  # noqa: E402

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def measure(fn, x: torch.Tensor, iters: int, warmup: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """``(images per second, last output)`` of ``fn(x)`` over ``iters`` calls after ``warmup``."""
    out = None
    for _ in range(warmup):
        out = fn(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        out = fn(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return iters * x.shape[0] / (time.perf_counter() - start), out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="fp32", choices=list(_DTYPES), help="autocast dtype of the measured run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=224, help="square input side (the evaluation crop is 224)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convolutions on GPU)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    dtype = _DTYPES[args.precision]
    if dtype is torch.float16 and device.type != "cuda":
        p.error("--precision fp16 needs --device cuda")
    torch.manual_seed(0)
    model = zoo.create_model("dycl_resnet", pretrained=False).to(device).eval()
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    with torch.inference_mode():
        base, base_out = measure(model, x, args.iters, args.warmup, device)
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        model = model.to(memory_format=fmt)
        xf = x.to(memory_format=fmt)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            fast, fast_out = measure(model, xf, args.iters, args.warmup, device)
    diff = (fast_out.float() - base_out.float()).abs().max().item()
    result = {"model": "dycl_resnet", "device": str(device), "batch_size": args.batch_size, "size": args.size,
              "fp32_images_per_s": round(base, 3), "precision": args.precision, "channels_last": args.channels_last,
              "images_per_s": round(fast, 3), "speedup_over_fp32": round(fast / base, 2),
              "max_abs_descriptor_diff_vs_fp32": diff}
    print(f"dycl_resnet {args.size}px batch {args.batch_size} on {device}: fp32 {base:.2f} img/s | "
          f"{args.precision}{' channels_last' if args.channels_last else ''} {fast:.2f} img/s "
          f"(x{fast / base:.2f}); max |descriptor diff| {diff:.2e}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
