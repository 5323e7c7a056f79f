"""The cards of AML: every student/teacher pair, symmetric and asymmetric, and the two cirtorch teachers.

A symmetric student loads AML's released contrastive student with its whitening file; an
asymmetric one adds the cirtorch teacher that encodes the database; a teacher variant loads the
cirtorch network alone. Other released students (other losses) are named weight sources.
"""

from __future__ import annotations

from typing import Any

from zoo.models import MODELS
from zoo.models.aml.convert import convert_aml
from zoo.models.aml.modeling import (
    STUDENT_CHANNELS,
    TEACHER_DIMS,
    aml_preprocessing,
    aml_student,
    aml_transforms,
    imagenet_init,
)
from zoo.models.cards import ModelInfo, UrlFile, Variant, WeightSource, results

AML_BASE_URL = "http://files.inria.fr/aml/"
CIRTORCH_BASE_URL = "http://cmp.felk.cvut.cz/cnnimageretrieval/data/networks/retrieval-SfM-120k/"
#: cirtorch's PRETRAINED table (cirtorch/examples/test.py); AML's test.py downloads the same files.
TEACHER_FILES = {
    "resnet101": "retrievalSfM120k-resnet101-gem-b80fb85.pth",
    "vgg16": "retrievalSfM120k-vgg16-gem-b4dcdc6.pth",
}
#: AML's released students (test.py PRETRAINED); whitening = same name + "_whitening.pth".
STUDENT_LOSSES = ("contr", "contr_plus", "reg", "rkd", "triplet", "dark", "ms")
_SHORT = {"mobilenet_v2": "mobilenetv2", "efficientnet_b3": "efficientnetb3"}
_AML_LICENCE = "no licence file (budnikm/aml)"
_CIRTORCH_LICENCE = "MIT (cnnimageretrieval-pytorch)"
_CIRTORCH = ("filipradenovic/cnnimageretrieval-pytorch README.md, 'Testing our pretrained networks' table, "
             "{net}-GeM (PyTorch), multi-scale [1, 1/2**(1/2), 1/2] + learned whitening retrieval-SfM-120k; "
             "Easy not reported (null)")
_PAPER = "not yet transcribed: Budnik & Avrithis, CVPR 2021 (arXiv:2006.16331) tables could not be read here"
_NOT_TRANSCRIBED = {"mAP-E": None, "mAP-M": None, "mAP-H": None}


def student_file(student: str, teacher: str, loss: str = "contr") -> str:
    name = f"{student}_gem_{loss}_{teacher}"
    # as released: one archive carries a stray "aa" in its name
    return name + (".pthaa.tar" if name == "efficientnet_b3_gem_reg_vgg16" else ".pth.tar")


def whitening_file(student_filename: str) -> str:
    return student_filename.split(".")[0] + "_whitening.pth"


def teacher_url(teacher: str) -> UrlFile:
    return UrlFile(CIRTORCH_BASE_URL + TEACHER_FILES[teacher], env_base="ZOO_CIRTORCH_BASE_URL")


def student_url(filename: str) -> UrlFile:
    return UrlFile(AML_BASE_URL + filename, env_base="ZOO_AML_BASE_URL")


def _teacher_source(teacher: str) -> WeightSource:
    return WeightSource("release", f"cirtorch retrieval-SfM-120k GeM {teacher} with learned whitening",
                        file=teacher_url(teacher), licence=_CIRTORCH_LICENCE)


def _student_source(student: str, teacher: str, asymmetric: bool, loss: str = "contr") -> WeightSource:
    filename = student_file(student, teacher, loss)
    if asymmetric:
        return WeightSource(
            "release", f"AML {loss} student {filename} with the cirtorch {teacher} teacher (database side) and "
            "its whitening", file=student_url(filename), extra_files={"teacher_checkpoint": teacher_url(teacher)},
            licence=f"{_AML_LICENCE}; teacher: {_CIRTORCH_LICENCE}")
    return WeightSource(
        "release", f"AML {loss} student {filename} with its whitening file",
        file=student_url(filename), extra_files={"whitening": student_url(whitening_file(filename))},
        licence=_AML_LICENCE)


def _variants() -> dict[str, Variant]:
    out: dict[str, Variant] = {}
    for teacher in TEACHER_DIMS:
        for student, short in _SHORT.items():
            for asym in (False, True):
                args: dict[str, Any] = {"student": student, "teacher": teacher, **({"asymmetric": True} if asym else {})}
                side = ("asymmetric: student queries, teacher database" if asym else "symmetric")
                out[f"{short}_{teacher}" + ("_asym" if asym else "")] = Variant(
                    args=args, weights=(_student_source(student, teacher, asym),),
                    published=(*results("roxford5k", _NOT_TRANSCRIBED, _PAPER),
                               *results("rparis6k", _NOT_TRANSCRIBED, _PAPER)),
                    recipe=f"aml-{short}-{teacher}", table="roxford_rparis",
                    description=f"{student} student of the {teacher} GeM teacher ({side})")
    # The teachers' published numbers (cirtorch README, multi-scale + whitening).
    teacher_numbers = {"resnet101": ("ResNet101", (65.4, 40.1), (76.7, 55.2)),
                       "vgg16": ("VGG16", (60.9, 32.9), (69.3, 44.2))}
    for teacher, (net, oxford, paris) in teacher_numbers.items():
        source = _CIRTORCH.format(net=net)
        out[f"teacher_{teacher}"] = Variant(
            args={"student": None, "teacher": teacher}, weights=(_teacher_source(teacher),),
            published=(*results("roxford5k", {"mAP-E": None, "mAP-M": oxford[0], "mAP-H": oxford[1]}, source),
                       *results("rparis6k", {"mAP-E": None, "mAP-M": paris[0], "mAP-H": paris[1]}, source)),
            table="roxford_rparis", description=f"the cirtorch retrieval-SfM-120k {teacher} GeM teacher alone")
    return out


def _named_sources() -> dict[str, WeightSource]:
    named = {
        "imagenet": WeightSource(
            "init", "student trunk pre-trained on ImageNet (torchvision MobileNetV2 IMAGENET1K_V1 / timm "
            "tf_efficientnet_b3.aa_in1k), for training", init_fn=imagenet_init),
    }
    for teacher in TEACHER_DIMS:
        named[f"teacher_{teacher}"] = _teacher_source(teacher)
    for student in STUDENT_CHANNELS:
        for teacher in TEACHER_DIMS:
            for loss in STUDENT_LOSSES:
                named[student_file(student, teacher, loss).split(".")[0]] = _student_source(student, teacher, False, loss)
    return named


MODEL = MODELS.register("aml_student", ModelInfo(
    name="aml_student",
    builder=aml_student,
    paper="Asymmetric metric learning for knowledge transfer (Budnik & Avrithis, CVPR 2021)",
    arxiv="2006.16331",
    task="image retrieval (symmetric and asymmetric: student queries, teacher database)",
    licence="no licence stated for the AML weights; cirtorch teachers MIT",
    code_licence="budnikm/aml: no licence file; filipradenovic/cnnimageretrieval-pytorch: MIT",
    original_code="https://github.com/budnikm/aml",
    citation=("@inproceedings{budnik2021asymmetric, title={Asymmetric metric learning for knowledge transfer}, "
              "author={Budnik, Mateusz and Avrithis, Yannis}, booktitle={CVPR}, year={2021}}"),
    descriptor_dim=lambda args: TEACHER_DIMS[args.get("teacher", "resnet101")],
    variants=_variants(),
    preprocessing=aml_preprocessing,
    transforms=aml_transforms,
    weights=_named_sources(),
    converter=convert_aml,
    summary="AML students (MobileNetV2, EfficientNet-B3) of cirtorch GeM teachers (ResNet-101, VGG16); "
            "asymmetric variants encode queries with the student and the database with the teacher.",
))
