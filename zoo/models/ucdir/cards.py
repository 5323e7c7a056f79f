"""The cards of UCDIR: the architecture, and one variant per domain pair of the paper's benchmarks.

UCDIR is trained without labels on one pair of domains, so each pair is its own model. The
authors released no trained weights: every pair variant names the recipe that trains it, and the
evaluation table whose two rows (both retrieval directions) check it.
"""

from __future__ import annotations

from itertools import combinations

from zoo.models import MODELS
from zoo.models.cards import ModelInfo, UrlFile, Variant, WeightSource, results
from zoo.models.ucdir.convert import convert_ucdir
from zoo.models.ucdir.modeling import ucdir_moco, ucdir_preprocessing, ucdir_transforms

#: MoCo v2, 800 epochs on ImageNet (facebookresearch/moco README); the original's --clean-model.
MOCO_V2_800EP = UrlFile(
    "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
    sha256=None, env_base="ZOO_MOCO_BASE_URL")

OFFICE_HOME_DOMAINS = ("Art", "Clipart", "Product", "Real World")
DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
_PAPER = "Hu & Lee, ECCV 2022 (arXiv:2207.09721), results table: not yet transcribed"
_ARGS = {"arch": "resnet50", "dim": 128}


def _pair_tag(benchmark: str, a: str, b: str) -> str:
    return f"{benchmark}_{a.lower().replace(' ', '')}_{b.lower().replace(' ', '')}"


def _pair_variants(benchmark: str, domains: tuple[str, ...], metrics: tuple[str, ...], recipe: str) -> dict[str, Variant]:
    variants = {}
    for a, b in combinations(domains, 2):
        variants[_pair_tag(benchmark, a, b)] = Variant(
            args=_ARGS,
            published=(*results(f"{a} -> {b}", dict.fromkeys(metrics), _PAPER),
                       *results(f"{b} -> {a}", dict.fromkeys(metrics), _PAPER)),
            recipe=recipe, table=benchmark,
            description=f"trained without labels on {benchmark} {a} + {b} (task_args.domains=[{a}, {b}])")
    return variants


NO_WEIGHTS = (
    "ucdir_moco: the UCDIR authors (conghui1002/UCDIR) published no trained weights. Train a model per domain "
    "pair with `python -m zoo train --recipe ucdir-office-home --data-root DIR task_args.domains=[Product,Clipart]` "
    "(or --recipe ucdir-domainnet); it starts from MoCo v2 (pretrained='moco_v2', CC-BY-NC 4.0) and exports "
    "OUT/export, which loads with pretrained='OUT/export' and is published to the Hub like the authors' releases of "
    "the other models with `python -m zoo publish OUT/export --org ORG` (the card marks its numbers as measured by us). "
    "pretrained='moco_v2' alone gives the untrained starting point.")

MODEL = MODELS.register("ucdir_moco", ModelInfo(
    name="ucdir_moco",
    builder=ucdir_moco,
    paper="Feature Representation Learning for Unsupervised Cross-domain Image Retrieval (Hu & Lee, ECCV 2022)",
    arxiv="2207.09721",
    task="unsupervised cross-domain category-level image retrieval (Office-Home, DomainNet)",
    licence="no UCDIR weights released; MoCo v2 initialisation: CC-BY-NC 4.0 (facebookresearch/moco)",
    code_licence="conghui1002/UCDIR: MIT",
    original_code="https://github.com/conghui1002/UCDIR",
    citation=("@inproceedings{hu2022feature, title={Feature Representation Learning for Unsupervised Cross-domain "
              "Image Retrieval}, author={Hu, Conghui and Lee, Gim Hee}, booktitle={Proceedings of the European "
              "Conference on Computer Vision (ECCV)}, year={2022}}"),
    descriptor_dim=lambda args: int(args.get("dim", 128)),
    variants={
        "resnet50_128": Variant(args=_ARGS, recipe="ucdir-office-home",
                                description="the architecture (ResNet-50 + 2048-2048-128 head), no domain pair"),
        **_pair_variants("office_home", OFFICE_HOME_DOMAINS, ("P@1", "P@5", "P@15"), "ucdir-office-home"),
        **_pair_variants("domainnet", DOMAINNET_DOMAINS, ("P@50", "P@100", "P@200"), "ucdir-domainnet"),
    },
    preprocessing=ucdir_preprocessing,
    transforms=ucdir_transforms,
    weights={
        "moco_v2": WeightSource(
            "release", "MoCo v2 800-epoch ImageNet checkpoint (facebookresearch/moco, moco_v2_800ep_pretrain.pth.tar, "
            "not checksummed), query encoder + MLP head: UCDIR's starting point, not a trained UCDIR model",
            file=MOCO_V2_800EP, licence="CC-BY-NC 4.0"),
    },
    converter=convert_ucdir,
    no_weights_reason=NO_WEIGHTS,
    summary="UCDIR: MoCo v2 ResNet-50 + 2048-2048-128 head (key encoder), trained without labels on two domains.",
))
