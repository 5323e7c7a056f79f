#!/usr/bin/env python
"""Speed of UCDIR: retrieval encoder images/s and one training step (both encoders, banks, all four losses).

Prints, measured in the same run on the same inputs:
  * the retrieval encoder (key encoder + head, eval mode) in fp32, the baseline, and with the
    requested ``--precision`` / ``--channels-last``, with the ratio to the baseline;
  * one optimiser step of the UCDIR task (query forward, momentum update, shuffled split-BN key
    forward, bank update, instance + cluster-wise + self-entropy + distance-of-distance losses,
    backward, SGD) at ``--train-batch`` images per domain, as seconds per step and images/s
    (2 x 2 x batch images pass through an encoder per step), and its ratio to inference.

Examples:
  python bench/ucdir.py --device cpu --batch-size 4 --train-batch 4 --iters 2
  python bench/ucdir.py --device cuda --precision bf16 --channels-last --batch-size 128 --train-batch 64

Weights are random (speed does not depend on them); banks hold ``--bank-size`` images per domain
and ``--clusters`` k-means centroids per domain (65 = Office-Home).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import zoo  # noqa: E402
from bench._timing import DTYPES, autocast, check_precision, seconds_per_call  # noqa: E402
from zoo.layers.norm import l2n  # noqa: E402
from zoo.models.ucdir.loss import UCDIRLossWeights  # noqa: E402
from zoo.models.ucdir.task import UCDIRModel, ucdir_step  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=list(DTYPES), help="autocast dtype (fp16 needs CUDA)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convolutions on GPU)")
    p.add_argument("--arch", default="resnet50", choices=["resnet18", "resnet34", "resnet50", "resnet101"])
    p.add_argument("--size", type=int, default=224, help="input side (eval crop and training crop: 224)")
    p.add_argument("--batch-size", type=int, default=8, help="images per inference forward")
    p.add_argument("--train-batch", type=int, default=8, help="images per domain per training step (paper: 64)")
    p.add_argument("--bank-size", type=int, default=4000, help="images per domain in the memory banks")
    p.add_argument("--clusters", type=int, default=65, help="k-means centroids per domain")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    device = torch.device(args.device)
    check_precision(p, device, args.precision)
    torch.manual_seed(0)

    # -- inference: the retrieval encoder -----------------------------------------------------
    net = zoo.create_model("ucdir_moco", pretrained=False, arch=args.arch).to(device).eval()
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=device)
    with torch.no_grad():
        base = args.batch_size / seconds_per_call(lambda: net(x), args.iters, args.warmup, device)[0]
        fast_net, fast_x = net, x
        if args.channels_last:
            fast_net = zoo.create_model("ucdir_moco", pretrained=False, arch=args.arch).to(device).eval()
            fast_net.load_state_dict(net.state_dict())
            fast_net = fast_net.to(memory_format=torch.channels_last)
            fast_x = x.contiguous(memory_format=torch.channels_last)

        def fast() -> None:
            with autocast(device, args.precision):
                fast_net(fast_x)
        tuned = args.batch_size / seconds_per_call(fast, args.iters, args.warmup, device)[0]

    # -- training: one optimiser step ---------------------------------------------------------
    model = UCDIRModel(zoo.create_model("ucdir_moco", pretrained=False, arch=args.arch), 0.999, 2).to(device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=2e-4, momentum=0.9, weight_decay=1e-4)
    b, n = args.train_batch, args.bank_size
    banks = [l2n(torch.randn(128, n, device=device), dim=0) for _ in range(2)]
    clusters = tuple([(torch.randint(0, args.clusters, (n,), device=device),
                       l2n(torch.randn(args.clusters, 128, device=device), dim=1))] for _ in range(2))
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    batch = {f"{kind}_{d}": torch.randn(b, 3, args.size, args.size, device=device).contiguous(memory_format=fmt)
             for kind in "qk" for d in "AB"}
    batch.update({f"id_{d}": torch.randperm(n, device=device)[:b] for d in "AB"})
    weights = UCDIRLossWeights()

    def step() -> None:
        with autocast(device, args.precision):
            loss, _ = ucdir_step(model, batch, banks, clusters, 150, weights)  # every loss on
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    seconds, _ = seconds_per_call(step, args.iters, args.warmup, device)
    train_ips = 4 * b / seconds

    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "arch": args.arch, "size": args.size, "batch_size": args.batch_size,
              "inference_fp32_images_per_s": base,
              f"inference_{args.precision}{'_channels_last' if args.channels_last else ''}_images_per_s": tuned,
              "speedup_vs_fp32": tuned / base, "train_batch_per_domain": b, "train_step_s": seconds,
              "train_images_per_s": train_ips, "train_vs_inference": train_ips / tuned}
    print(f"UCDIR {args.arch} at {args.size}px on {result['device']} (torch {torch.__version__})")
    print(f"  retrieval encoder fp32 (baseline): {base:8.2f} images/s (batch {args.batch_size})")
    print(f"  retrieval encoder {args.precision}{' channels_last' if args.channels_last else ''}: {tuned:8.2f} images/s "
          f"= {tuned / base:.2f}x baseline")
    print(f"  training step ({b} images/domain, all losses, bank {n}, k={args.clusters}): {seconds:.3f} s/step, "
          f"{train_ips:.2f} encoder images/s = {train_ips / tuned:.2f}x inference")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
