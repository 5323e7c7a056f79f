"""The cards of CVFT: one per training set of the authors' models (CVUSA, CVACT)."""

from __future__ import annotations

from zoo.models import MODELS
from zoo.models.cards import DriveFile, ModelInfo, Variant, WeightSource, results
from zoo.models.cvft.convert import convert_cvft_checkpoint
from zoo.models.cvft.modeling import (
    cvft_preprocessing,
    cvft_transforms,
    cvft_vgg,
    descriptor_dim,
    init_from_imagenet_vgg16,
)

#: The authors' trained models (README "Models": one public Google Drive archive for CVUSA and CVACT).
DRIVE_FILE_ID = "1c_T8vkUY72EoqR7vzzm6wXBSfC9r3SBG"
DRIVE = f"https://drive.google.com/file/d/{DRIVE_FILE_ID}/view?usp=sharing"
_README = "YujiaoShi/cross_view_localization_CVFT README.md, Results table"


def _release(dataset: str) -> WeightSource:
    # The member is where the authors' test_cvusa.py / test_cvact.py restore it from
    # ('../Model/trained_model/<dataset>/CVFT/model.ckpt'), matched as a path suffix inside the archive.
    # Unpinned: the archive could not be fetched here to hash it.
    return WeightSource(
        "release", f"authors' trained {dataset} model (Google Drive archive {DRIVE_FILE_ID}, "
        f"trained_model/{dataset}/CVFT/model.ckpt), converted on first use",
        file=DriveFile(DRIVE_FILE_ID, f"trained_model/{dataset}/CVFT/model.ckpt", sha256=None),
        licence="none stated by the authors")

MODEL = MODELS.register("cvft_vgg", ModelInfo(
    name="cvft_vgg",
    builder=cvft_vgg,
    paper="Optimal Feature Transport for Cross-View Image Geo-Localization (AAAI 2020)",
    arxiv="1907.05021",
    task="cross-view geo-localization (ground panorama -> aerial image)",
    licence="unspecified: the authors' repository and weights carry no licence",
    code_licence="none (no licence file in YujiaoShi/cross_view_localization_CVFT)",
    original_code="https://github.com/YujiaoShi/cross_view_localization_CVFT",
    # The authors' BibTeX (their README), which cites the arXiv version of the AAAI 2020 paper.
    citation=("@inproceedings{shi2019optimal,\n"
              "  title={Optimal Feature Transport for Cross-View Image Geo-Localization},\n"
              "  author={Shi, Yujiao and Yu, Xin and Liu, Liu and Zhang, Tong and Li, Hongdong},\n"
              "  booktitle={arXiv preprint arXiv:1907.05021},\n"
              "  year={2019}\n}"),
    descriptor_dim=descriptor_dim,
    variants={
        "cvusa": Variant(
            weights=(_release("CVUSA"),),
            published=results("cvusa", {"R@1": 61.43, "R@5": 84.69, "R@10": 90.49, "R@1%": 99.02},
                              f"{_README} (CVUSA row); the abstract in the same README quotes top-1 61.43 and "
                              "top-10 90.49"),
            recipe="cvft", table="cvusa",
            description="trained on CVUSA (the authors' Model/CVUSA checkpoint)"),
        "cvact": Variant(
            weights=(_release("CVACT"),),
            published=results("cvact_val", {"R@1": 61.05, "R@5": 81.33, "R@10": 86.52, "R@1%": 95.93},
                              f"{_README} (CVACT_val row)"),
            recipe="cvft-cvact", table="cvact",
            description="trained on CVACT (the authors' Model/CVACT checkpoint)"),
    },
    preprocessing=cvft_preprocessing,
    transforms=cvft_transforms,
    weights={
        "vgg16_imagenet": WeightSource(
            kind="init",
            description="both VGG16 stacks from timm vgg16.tv_in1k (ImageNet); transport and 64-channel convs random",
            init_fn=init_from_imagenet_vgg16,
            licence="BSD-3-Clause (torchvision weights)"),
    },
    converter=convert_cvft_checkpoint,
    summary="Two VGG16 stacks; ground features transported onto the aerial layout by a learned Sinkhorn plan; 4096-d.",
))
