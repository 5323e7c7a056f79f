#!/usr/bin/env python
"""Forward throughput of dinov2_salad (images/s), optionally beside the original serizba/salad model.

Examples:
  python bench/salad.py --device cpu                               # ours, fp32, 322x322
  python bench/salad.py --device cuda --precision bf16 --batch-size 64
  python bench/salad.py --device cuda --precision bf16 \\
      --original /path/to/serizba/salad --dinov2 /path/to/facebookresearch/dinov2

With --original (and --dinov2, a local clone of facebookresearch/dinov2 that the original loads
through torch.hub), the original DINOv2 + SALAD model is imported from that folder at run time
(nothing of it is part of this repository), given the same random weights as ours, checked to give
the same descriptors, and timed in the same process on the same inputs; the ratio ours/original is
printed. The original's DINOv2 uses xFormers attention when xFormers is installed; ours uses
PyTorch's fused scaled_dot_product_attention (timm's default), which picks flash / memory-efficient
kernels on CUDA.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

import zoo  # noqa: E402
from bench._timing import DTYPES, autocast, synchronize  # noqa: E402


def build_original(salad_dir: Path, dinov2_dir: Path, num_clusters: int, cluster_dim: int, token_dim: int) -> torch.nn.Module:
    """The original VPRModel's forward (DINOv2 backbone + SALAD) without pytorch_lightning."""
    sys.path.insert(0, str(salad_dir))
    hub_load = torch.hub.load

    def local_load(repo, name, *args, **kwargs):  # the original calls torch.hub.load('facebookresearch/dinov2', ...)
        return hub_load(str(dinov2_dir), name, source="local", pretrained=False)

    torch.hub.load = local_load
    try:
        from models.aggregators.salad import SALAD
        from models.backbones.dinov2 import DINOv2

        class Original(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.backbone = DINOv2("dinov2_vitb14", num_trainable_blocks=4, norm_layer=True, return_token=True)
                self.aggregator = SALAD(num_channels=768, num_clusters=num_clusters, cluster_dim=cluster_dim,
                                        token_dim=token_dim)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.aggregator(self.backbone(x))

        return Original()
    finally:
        torch.hub.load = hub_load


def to_original_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {("backbone.model." + k[len("backbone."):] if k.startswith("backbone.") else k): v for k, v in state.items()}
    out["backbone.model.mask_token"] = torch.zeros(1, 768)
    return out


def time_forward(fns: dict[str, Callable[[torch.Tensor], torch.Tensor]], x: torch.Tensor, iters: int, warmup: int,
                 device: torch.device) -> dict[str, float]:
    """Images per second of each function on batch ``x``: median of ``iters`` timed calls.

    The functions are timed in alternation (one call of each per round), so that load from
    other processes or clock changes affect them alike.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn(x)
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(x)
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: x.shape[0] / sorted(t)[len(t) // 2] for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", choices=tuple(DTYPES), help="default: fp32 on CPU, bf16 on CUDA")
    parser.add_argument("--variant", default="8192_256", choices=("8192_256", "2048_64", "512_32"))
    parser.add_argument("--image-size", type=int, default=322, help="square input side (multiple of 14)")
    parser.add_argument("--batch-size", type=int, help="default: 4 on CPU, 64 on CUDA")
    parser.add_argument("--iters", type=int, help="timed rounds (default: 5 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, help="untimed iterations first (default: 1 on CPU, 5 on CUDA)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(ours)")
    parser.add_argument("--original", type=Path, metavar="DIR", help="clone of serizba/salad to compare with")
    parser.add_argument("--dinov2", type=Path, metavar="DIR", help="clone of facebookresearch/dinov2 (needed with --original)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    precision = args.precision or ("bf16" if cuda else "fp32")
    batch = args.batch_size or (64 if cuda else 4)
    iters, warmup = args.iters or (20 if cuda else 5), args.warmup if args.warmup is not None else (5 if cuda else 1)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.original and not args.dinov2:
        parser.error("--original needs --dinov2 (the original loads DINOv2 through torch.hub)")

    torch.manual_seed(0)
    ours = zoo.create_model("dinov2_salad", pretrained=False, variant=args.variant).to(device).eval()
    x = torch.randn(batch, 3, args.image_size, args.image_size, device=device)

    def run(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        def fn(inp: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), autocast(device, precision):
                return model(inp)
        return fn

    results: dict[str, float | str] = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu", "precision": precision,
        "batch_size": batch, "image_size": args.image_size, "variant": args.variant,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "attention": "F.scaled_dot_product_attention" if ours.backbone.blocks[0].attn.fused_attn else "timm eager"}
    fns = {"ours": run(ours)}
    if args.compile:
        fns["ours_compiled"] = run(torch.compile(ours))
    if args.original:
        info = zoo.get_model_info("dinov2_salad").variant_kwargs(args.variant)
        original = build_original(args.original, args.dinov2, info["num_clusters"], info["cluster_dim"], info["token_dim"])
        original.load_state_dict(to_original_keys(ours.state_dict()))
        original = original.to(device).eval()
        with torch.inference_mode():
            diff = (run(ours)(x[:2]).float() - run(original)(x[:2]).float()).abs().max().item()
        results["max_abs_diff_vs_original"] = diff
        try:
            import xformers  # noqa: F401
            results["original_attention"] = "xformers memory_efficient_attention"
        except ImportError:
            results["original_attention"] = "eager (xFormers not installed)"
        fns["original"] = run(original)
    speeds = time_forward(fns, x, iters, warmup, device)
    results.update({f"{name}_img_s": value for name, value in speeds.items()})
    if "original" in speeds:
        results["ours_over_original"] = speeds["ours"] / speeds["original"]
    for key, value in results.items():
        print(f"{key:>26}: {value:.4g}" if isinstance(value, float) else f"{key:>26}: {value}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
