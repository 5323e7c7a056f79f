"""The cards of DINOv2 SALAD: one per descriptor size of the paper's Table 1 (``m*l + g``)."""

from __future__ import annotations

from typing import Any

from zoo.models import MODELS
from zoo.models.cards import HubFile, ModelInfo, UrlFile, Variant, WeightSource, results
from zoo.models.salad.convert import convert_salad_checkpoint
from zoo.models.salad.modeling import (
    TIMM_BACKBONE_WEIGHTS,
    dinov2_salad,
    load_dinov2_backbone,
    salad_preprocessing,
    salad_transforms,
)

_README = "serizba/salad README.md, Evaluation table (DINOv2 SALAD, 322x322)"
_PWC = ("paperswithcode.com/paper/optimal-transport-aggregation-for-visual 'Results from the Paper' (secondary "
        "transcription of arXiv:2311.15937 Table 1; not checked against the PDF)")
_TABLE1 = "arXiv:2311.15937 Table 1 (not yet transcribed)"


#: The authors' release (GSV-Cities, 8192+256). Not pinned: the file could not be fetched here to hash it.
RELEASE = WeightSource(
    kind="release",
    description="authors' release dino_salad.ckpt (8192+256, GSV-Cities), converted on first use",
    file=UrlFile("https://github.com/serizba/salad/releases/download/v1.0.0/dino_salad.ckpt",
                 sha256=None, env_base="ZOO_SALAD_RELEASE_URL"),
    licence="GPL-3.0 (released with serizba/salad)",
)


def _descriptor_dim(args: dict[str, Any]) -> int:
    return args.get("token_dim", 256) + args.get("num_clusters", 64) * args.get("cluster_dim", 128)


MODEL = MODELS.register("dinov2_salad", ModelInfo(
    name="dinov2_salad",
    builder=dinov2_salad,
    paper="Izquierdo & Civera, Optimal Transport Aggregation for Visual Place Recognition, CVPR 2024",
    arxiv="2311.15937",
    task="visual place recognition",
    licence="weights: released by the authors with their GPL-3.0 code (serizba/salad); "
            "DINOv2 backbone weights Apache-2.0",
    code_licence="GPL-3.0",
    original_code="https://github.com/serizba/salad",
    citation="""@InProceedings{Izquierdo_CVPR_2024_SALAD,
    author    = {Izquierdo, Sergio and Civera, Javier},
    title     = {Optimal Transport Aggregation for Visual Place Recognition},
    booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
    year      = {2024},
}""",
    descriptor_dim=_descriptor_dim,
    variants={
        "8192_256": Variant(
            args={"num_clusters": 64, "cluster_dim": 128, "token_dim": 256},
            weights=(RELEASE,),
            published=(
                *results("msls_challenge", {"R@1": 75.0, "R@5": 88.8, "R@10": 91.3}, _README),
                *results("msls_val", {"R@1": 92.2, "R@5": 96.4, "R@10": 97.0}, _README),
                *results("nordland", {"R@1": 76.0, "R@5": 89.2, "R@10": 92.0}, _README),
                *results("pitts250k_test", {"R@1": 95.1, "R@5": 98.5, "R@10": 99.1}, _PWC),
                *results("sped", {"R@1": 92.1, "R@5": 96.2, "R@10": 96.5}, _PWC),
            ),
            recipe="salad", table="salad",
            description="the paper's full model: 8192 cluster dims + 256 global token (8448-d)"),
        "2048_64": Variant(
            args={"num_clusters": 32, "cluster_dim": 64, "token_dim": 64},
            published=tuple(r for name in ("msls_challenge", "msls_val", "nordland", "pitts250k_test", "sped")
                            for r in results(name, {"R@1": None, "R@5": None}, _TABLE1)),
            table="salad",
            description="Table 1's 2048+64 descriptor (2112-d); no released weights"),
        "512_32": Variant(
            args={"num_clusters": 16, "cluster_dim": 32, "token_dim": 32},
            published=tuple(r for name in ("msls_challenge", "msls_val", "nordland", "pitts250k_test", "sped")
                            for r in results(name, {"R@1": None, "R@5": None}, _TABLE1)),
            table="salad",
            description="Table 1's 512+32 descriptor (544-d); no released weights"),
    },
    preprocessing=salad_preprocessing,
    transforms=salad_transforms,
    weights={
        "backbone": WeightSource(
            kind="init",
            description="DINOv2 ViT-B/14 LVD-142M backbone (timm/vit_base_patch14_dinov2.lvd142m), "
                        "random SALAD head: the start of training",
            # Revision "main": no commit sha could be pinned offline; the strict load still rejects
            # a file of another architecture.
            file=HubFile(f"timm/{TIMM_BACKBONE_WEIGHTS}", "model.safetensors", "main"),
            init_fn=load_dinov2_backbone,
            licence="Apache-2.0 (DINOv2)",
        ),
    },
    converter=convert_salad_checkpoint,
    summary="DINOv2 ViT-B/14 fine-tuned on GSV-Cities with SALAD optimal-transport aggregation "
            "(8448-d descriptor at 322x322 for the default 8192+256 variant).",
))
