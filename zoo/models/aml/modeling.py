"""AML: asymmetric metric learning students and their cnnimageretrieval-pytorch teachers.

Budnik & Avrithis, "Asymmetric metric learning for knowledge transfer", CVPR 2021
(arXiv:2006.16331); code budnikm/aml, built on filipradenovic/cnnimageretrieval-pytorch
("cirtorch").

Networks (as ``init_network`` of both code bases builds them):

* teachers: cirtorch GeM networks. ResNet-101 = torchvision ``resnet101`` without avgpool/fc
  (2048-d); VGG16 = torchvision ``vgg16.features`` without the last max-pool (512-d).
* students: torchvision ``mobilenet_v2().features`` (1280 channels) or timm
  ``tf_efficientnet_b3`` without pooling/classifier (1536 channels), each followed by a 1x1 conv
  (no bias) to the teacher's size and a ReLU.
* head of every network: GeM (learnable ``p``) -> L2.

Evaluation as AML's ``test.py`` runs it: images resized so that the longer side is at most 1024
(PIL ``thumbnail``, never upsampled; a query cropped to its box is resized by the factor its full
image would get), ImageNet mean/std, optionally multi-scale (scales 1, 1/sqrt(2), 1/2 with
bilinear resizing; per-scale L2 descriptors combined by the power mean with exponent ``msp`` =
the student's GeM ``p``, then L2), then the learned whitening ``{m, P}``.

Asymmetric retrieval (``asymmetric=True``): ``encode_query`` runs the student and
``encode_database`` the teacher. Two quirks of AML's ``test.py`` are reproduced by default:

* the teacher's multi-scale power mean uses the *student's* GeM ``p``
  (``teacher_msp="student"``; ``"own"`` uses the teacher's ``p``);
* the teacher's whitening (cirtorch ``meta['Lw']['retrieval-SfM-120k']``) whitens both the
  student's queries and the teacher's database (the student's own whitening is not used).

The whitening buffers hold the single-scale (``whiten_ss``) and multi-scale (``whiten_ms``)
parameters; cirtorch teachers ship both, AML students one file used for both (as ``test.py``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from zoo.errors import InputError
from zoo.layers.gem import GeM
from zoo.layers.whitening import LearnedWhitening

TEACHER_DIMS = {"resnet101": 2048, "vgg16": 512}
STUDENT_CHANNELS = {"mobilenet_v2": 1280, "efficientnet_b3": 1536}
#: scales of cirtorch's ``-ms '[1, 1/2**(1/2), 1/2]'``
MULTISCALE = (1.0, 1.0 / 2 ** (1.0 / 2), 1.0 / 2)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _backbone(arch: str) -> nn.Module:
    """The convolutional trunk of ``arch`` (random init, nothing downloaded)."""
    import torchvision

    if arch == "resnet101":
        net = torchvision.models.resnet101(weights=None)
        net.avgpool, net.fc = nn.Identity(), nn.Identity()
        return _ResNetTrunk(net)
    if arch == "vgg16":
        # cirtorch drops the last max-pool so that the map ends with a ReLU.
        return torchvision.models.vgg16(weights=None).features[:-1]
    if arch == "mobilenet_v2":
        return torchvision.models.mobilenet_v2(weights=None).features
    if arch == "efficientnet_b3":
        import timm
        # AML builds timm's TF-ported B3 ('same' padding, BN eps 1e-3) and drops pool + classifier.
        return _TimmTrunk(timm.create_model("tf_efficientnet_b3", pretrained=False, num_classes=0, global_pool=""))
    raise ValueError(f"unknown AML architecture {arch!r}; known: {', '.join([*TEACHER_DIMS, *STUDENT_CHANNELS])}")


class _ResNetTrunk(nn.Module):
    """torchvision ResNet up to ``layer4`` (keys ``conv1``, ``bn1``, ``layer1``..``layer4``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class _TimmTrunk(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


class GeMNet(nn.Module):
    """One cirtorch-style network: ``(B, 3, H, W) -> (B, D)`` L2-normalised GeM descriptor.

    Args:
        arch: ``resnet101`` | ``vgg16`` (teachers) | ``mobilenet_v2`` | ``efficientnet_b3`` (students).
        dim: output size of a student's 1x1 projection (the teacher's size); ignored for teachers.
    """

    def __init__(self, arch: str, dim: int | None = None) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = _backbone(arch)
        if arch in STUDENT_CHANNELS:
            if dim is None:
                raise ValueError(f"student {arch} needs the teacher's descriptor size `dim`")
            self.proj = nn.Conv2d(STUDENT_CHANNELS[arch], dim, kernel_size=1, bias=False)
            self.out_dim = dim
        else:
            self.proj = None
            self.out_dim = TEACHER_DIMS[arch]
        self.pool = GeM()

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x)
        if self.proj is not None:
            x = F.relu(self.proj(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # cirtorch's L2N divides by (norm + 1e-6); kept for exactness of the multi-scale power mean.
        v = self.pool(self.feature_map(x)).flatten(1)
        return v / (v.norm(dim=1, keepdim=True) + 1e-6)


def multiscale_descriptor(net: nn.Module, x: torch.Tensor, scales: tuple[float, ...], p: float) -> torch.Tensor:
    """cirtorch's ``extract_ms``: power mean (exponent ``p``) of per-scale descriptors, then L2.

    ``(B, 3, H, W) -> (B, D)``; each scale other than 1 resizes the batch bilinearly
    (``align_corners=False``, ``scale_factor`` as given).
    """
    acc = None
    for s in scales:
        xs = x if s == 1 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        v = net(xs).pow(p)
        acc = v if acc is None else acc + v
    acc = (acc / len(scales)).pow(1.0 / p)
    return acc / acc.norm(dim=1, keepdim=True)


class AMLModel(nn.Module):
    """An AML student, alone (symmetric) or with its teacher (asymmetric), or a cirtorch teacher alone.

    Args:
        student: ``"mobilenet_v2"`` | ``"efficientnet_b3"`` | ``None`` (the teacher alone).
        teacher: ``"resnet101"`` (2048-d) | ``"vgg16"`` (512-d): sets the descriptor size, and is the
            database network when ``asymmetric``.
        asymmetric: build the teacher too; ``encode_database`` runs it.
        whitening: apply the learned whitening (identity until weights are loaded).
        multiscale: extract at scales 1, 1/sqrt(2), 1/2 (cirtorch ``extract_ms``).
        teacher_msp: ``"student"`` (AML test.py) or ``"own"``: whose GeM ``p`` is the teacher's
            multi-scale exponent in asymmetric mode.

    ``encode_query`` / ``encode_database``: ``(B, 3, H, W)`` -> ``(B, D)`` L2-normalised, D = 2048 or 512.
    """

    def __init__(self, student: str | None = "mobilenet_v2", teacher: str = "resnet101", asymmetric: bool = False,
                 whitening: bool = True, multiscale: bool = False, teacher_msp: str = "student") -> None:
        super().__init__()
        if teacher not in TEACHER_DIMS:
            raise ValueError(f"teacher must be one of {', '.join(TEACHER_DIMS)}, not {teacher!r}")
        if student is not None and student not in STUDENT_CHANNELS:
            raise ValueError(f"student must be one of {', '.join(STUDENT_CHANNELS)} or None, not {student!r}")
        if student is None and asymmetric:
            raise ValueError("asymmetric=True needs a student (student=None builds the teacher alone)")
        if teacher_msp not in ("student", "own"):
            raise ValueError(f"teacher_msp must be 'student' or 'own', not {teacher_msp!r}")
        self.dim = TEACHER_DIMS[teacher]
        self.student = GeMNet(student, self.dim) if student is not None else None
        self.teacher = GeMNet(teacher) if (asymmetric or student is None) else None
        self.whiten_ss = LearnedWhitening(self.dim) if whitening else None
        self.whiten_ms = LearnedWhitening(self.dim) if whitening else None
        self.multiscale = multiscale
        self.teacher_msp = teacher_msp

    @property
    def query_net(self) -> GeMNet:
        return self.student if self.student is not None else self.teacher

    @property
    def database_net(self) -> GeMNet:
        return self.teacher if self.teacher is not None else self.student

    def _describe(self, net: GeMNet, x: torch.Tensor, msp_net: GeMNet) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"aml_student expects images (B, 3, H, W), got {tuple(x.shape)}")
        if self.multiscale:
            v = multiscale_descriptor(net, x, MULTISCALE, float(msp_net.pool.p.item()))
            whiten = self.whiten_ms
        else:
            v = net(x)
            whiten = self.whiten_ss
        return whiten(v) if whiten is not None else v

    def encode_query(self, x: torch.Tensor) -> torch.Tensor:
        return self._describe(self.query_net, x, self.query_net)

    def encode_database(self, x: torch.Tensor) -> torch.Tensor:
        net = self.database_net
        msp_net = self.query_net if self.teacher_msp == "student" else net
        return self._describe(net, x, msp_net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_query(x)


# --------------------------------------------------------------------------- transforms


class ResizeLongest:
    """cirtorch ``ImagesFromList``: PIL ``thumbnail`` (Lanczos, never upsampling) to ``imsize``.

    A query cropped to its box is resized by the factor its *full* image would get
    (``imsize * max(crop) / max(full)``): call with ``box=`` on the full image, or pass an image
    cropped elsewhere that carries its full size in ``img.info["full_size"]``.
    """

    def __init__(self, imsize: int = 1024) -> None:
        self.imsize = imsize

    def __call__(self, img: Image.Image, box: tuple[float, float, float, float] | None = None) -> Image.Image:
        full = max(img.size)
        if box is not None:
            img = img.crop(tuple(box))
        elif "full_size" in img.info:
            full = max(img.info["full_size"])
        size = self.imsize * max(img.size) / full
        img = img.copy()
        img.thumbnail((size, size), Image.LANCZOS)
        return img

    def __repr__(self) -> str:
        return f"ResizeLongest(imsize={self.imsize})"


class AMLTransform:
    """PIL image -> ``(3, H, W)`` float tensor: :class:`ResizeLongest`, ``ToTensor``, normalisation."""

    def __init__(self, imsize: int = 1024, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> None:
        from torchvision import transforms as T
        self.resize = ResizeLongest(imsize)
        self.to_tensor = T.Compose([T.ToTensor(), T.Normalize(mean, std)])

    def __call__(self, img: Image.Image, box: tuple[float, float, float, float] | None = None) -> torch.Tensor:
        return self.to_tensor(self.resize(img, box))

    def __repr__(self) -> str:
        return f"AMLTransform(imsize={self.resize.imsize})"


def aml_preprocessing(args: dict[str, Any] | None = None) -> dict[str, Any]:
    """AML's test.py preprocessing record: longest side to ``imsize`` (1024) px, ImageNet mean/std."""
    return {"imsize": int((args or {}).get("imsize", 1024)), "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def aml_transforms(imsize: int = 1024, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> tuple[Callable, Callable]:
    """Query and database preprocessing (the same; queries are cropped to their box by the loader)."""
    tf = AMLTransform(imsize, mean, std)
    return tf, tf


def aml_student(student: str | None = "mobilenet_v2", teacher: str = "resnet101", asymmetric: bool = False,
                whitening: bool = True, multiscale: bool = False, teacher_msp: str = "student",
                imsize: int = 1024) -> AMLModel:
    """Build an AML model with random weights (no download). See :class:`AMLModel`.

    ``imsize`` is the evaluation preprocessing's longest side (default 1024, as AML's test.py); it goes
    into the model's preprocessing record, not into the network.
    """
    del imsize
    return AMLModel(student, teacher, asymmetric, whitening, multiscale, teacher_msp)


def imagenet_init(model: nn.Module) -> None:
    """The student's trunk from ImageNet (what AML trains from): torchvision MobileNetV2 V1 weights
    or timm ``tf_efficientnet_b3.aa_in1k`` (the weights timm's ``tf_efficientnet_b3`` loaded in 2020).
    The 1x1 projection and the teacher keep their initialisation."""
    student = getattr(model, "student", None)
    if student is None:
        raise ValueError("the 'imagenet' initialisation needs a model with a student")
    if student.arch == "mobilenet_v2":
        import torchvision
        state = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        student.backbone.load_state_dict({k[len("features."):]: v for k, v in state.items() if k.startswith("features.")})
    else:
        import timm
        net = timm.create_model("tf_efficientnet_b3.aa_in1k", pretrained=True, num_classes=0, global_pool="")
        student.backbone.net.load_state_dict(net.state_dict())
