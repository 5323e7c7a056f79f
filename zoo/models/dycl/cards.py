"""The card of DyCL: one ResNet-50 variant, released by the authors on the Hub (DA-Campus, 20 epochs)."""

from __future__ import annotations

from zoo.models import MODELS
from zoo.models.cards import HubFile, ModelInfo, Variant, WeightSource, results
from zoo.models.dycl.convert import convert_dycl
from zoo.models.dycl.modeling import dycl_preprocessing, dycl_resnet, dycl_transforms, imagenet_init

#: The authors' checkpoint on the Hub. Its commit sha and sha256 could not be looked up from here:
#: the revision is the branch ``main`` and the file is not checksummed until someone pins both.
RELEASE = HubFile("www0wwwjs1/dycl", "dycl_20epoch.ckpt", revision="main", sha256=None)

_METRICS = ("H-AP", "ASI", "NDCG", "AP_level0", "AP_level1", "AP_level2", "mAP@R_level0", "mAP@R_level1",
            "mAP@R_level2", "P@1_level0", "R@1_level0", "R@5_level0", "R@10_level0")
_PAPER = "not yet transcribed (DyCL paper, arXiv:2506.23077)"
_PAPER_RERANK = "not yet transcribed (DyCL paper, arXiv:2506.23077, with re-ranking)"

MODEL = MODELS.register("dycl_resnet", ModelInfo(
    name="dycl_resnet",
    builder=dycl_resnet,
    paper=("Dynamic Contrastive Learning for Hierarchical Retrieval: A Case Study of Distance-Aware "
           "Cross-View Geo-Localization (Zhang et al., 2025)"),
    arxiv="2506.23077",
    task="hierarchical cross-view geo-localization (drone <-> satellite, DA-Campus)",
    licence="no licence stated for the released weights (www0wwwjs1/dycl)",
    code_licence="anocodetest1/DyCL: no licence file; built on elias-ramzi/HAPPIER (MIT)",
    original_code="https://github.com/anocodetest1/DyCL",
    citation=("@misc{dycl, title={Dynamic Contrastive Learning for Hierarchical Retrieval: A Case Study of "
              "Distance-Aware Cross-View Geo-Localization}, author={Suofei Zhang and Xinxin Wang and Xiaofu Wu "
              "and Quan Zhou and Haifeng Hu}, year={2025}, eprint={2506.23077}, archivePrefix={arXiv}}"),
    descriptor_dim=lambda args: int(args.get("embed_dim", 512)),
    variants={
        "resnet50_512": Variant(
            args={"embed_dim": 512},
            weights=(WeightSource(
                "release", "authors' DA-Campus model after 20 epochs (Hub www0wwwjs1/dycl, dycl_20epoch.ckpt, "
                "revision main, not checksummed), converted on first use", file=RELEASE,
                licence="no licence stated"),),
            published=(
                *results("da_campus_drone_satellite", dict.fromkeys(_METRICS), _PAPER),
                *results("da_campus_drone_satellite+rerank", dict.fromkeys(_METRICS), _PAPER_RERANK),
                *results("da_campus_satellite_drone", dict.fromkeys(_METRICS), _PAPER),
                *results("da_campus_satellite_drone+rerank", dict.fromkeys(_METRICS), _PAPER_RERANK),
            ),
            recipe="dycl", table="da_campus",
            description="ResNet-50 + LayerNorm + 512-d projection trained on DA-Campus (the authors' release)"),
    },
    preprocessing=dycl_preprocessing,
    transforms=dycl_transforms,
    weights={
        "imagenet": WeightSource(
            "init", "ResNet-50 trunk from torchvision IMAGENET1K_V1 (timm resnet50.tv_in1k), for training",
            init_fn=imagenet_init, licence="BSD-3-Clause (torchvision weights)"),
    },
    converter=convert_dycl,
    summary="DyCL resnet_ln: shared ResNet-50 + LayerNorm + 512-d projection for drone/satellite hierarchical retrieval.",
))
