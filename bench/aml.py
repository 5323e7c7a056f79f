#!/usr/bin/env python
"""Forward throughput (images/s) of AML students against their cirtorch teachers at 1024 px.

The point of AML is that the student is cheap: this prints images/s of the student (query side)
and of the teacher (database side) measured in the same run on the same inputs, and the ratio.

Examples:
  python bench/aml.py --device cpu --iters 3                      # MobileNetV2 vs ResNet-101, 1024x768
  python bench/aml.py --device cuda --precision bf16 --batch-size 8 --channels-last
  python bench/aml.py --student efficientnet_b3 --teacher vgg16 --multiscale

Weights are random (pretrained=False): speed does not depend on them. Each image is 1024 px on its
longer side (``--size W H``, 1024x768 by default), as AML's test.py extracts, batch 1 by default as
the original (images differ in size).
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
    p.add_argument("--student", default="mobilenet_v2", choices=["mobilenet_v2", "efficientnet_b3"])
    p.add_argument("--teacher", default="resnet101", choices=["resnet101", "vgg16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="fp32", choices=list(DTYPES))
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--size", type=int, nargs=2, default=(1024, 768), metavar=("W", "H"))
    p.add_argument("--multiscale", action="store_true", help="scales 1, 1/sqrt(2), 1/2 (as the published numbers)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format (faster convolutions on GPU)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    check_precision(p, device, args.precision)
    short = {"mobilenet_v2": "mobilenetv2", "efficientnet_b3": "efficientnetb3"}[args.student]
    model = zoo.create_model(f"aml_student.{short}_{args.teacher}_asym", pretrained=False,
                             multiscale=args.multiscale).to(device).eval()
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    w, h = args.size
    x = torch.randn(args.batch_size, 3, h, w, device=device).to(memory_format=fmt)
    with torch.inference_mode(), autocast(device, args.precision):
        student_s, _ = seconds_per_call(lambda: model.encode_query(x), args.iters, args.warmup, device)
        teacher_s, _ = seconds_per_call(lambda: model.encode_database(x), args.iters, args.warmup, device)
    student, teacher = args.batch_size / student_s, args.batch_size / teacher_s
    result = {"student": args.student, "teacher": args.teacher, "device": str(device),
              "precision": args.precision, "batch_size": args.batch_size, "size": [w, h],
              "multiscale": args.multiscale, "channels_last": args.channels_last,
              "student_images_per_s": round(student, 3), "teacher_images_per_s": round(teacher, 3),
              "student_over_teacher": round(student / teacher, 2)}
    return report(result, f"{args.student} (query) {student:.2f} img/s | {args.teacher} (database) {teacher:.2f} img/s | "
          f"student/teacher x{student / teacher:.2f}  [{device}, {args.precision}, {w}x{h}, batch {args.batch_size}"
          f"{', multi-scale' if args.multiscale else ''}]", args.json)


if __name__ == "__main__":
    main()
