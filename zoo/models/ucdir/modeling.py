"""UCDIR: unsupervised cross-domain image retrieval on a MoCo v2 ResNet-50.

Hu & Lee, "Feature Representation Learning for Unsupervised Cross-domain Image Retrieval"
(ECCV 2022, arXiv:2207.09721); code conghui1002/UCDIR, built on facebookresearch/moco.

The network (``builder.py``: ``UCDIR`` with ``mlp=True``) is a torchvision ResNet whose ``fc`` is
replaced by MoCo v2's projection head, and the descriptor is its L2-normalised output:

    ResNet-50 trunk -> global average pool -> Linear(2048, 2048) -> ReLU -> Linear(2048, 128) -> L2

Training keeps two copies, a query encoder trained by SGD and a momentum key encoder; the
original evaluates with the *key* encoder (``forward(..., is_eval=True)`` runs ``encoder_k``),
so the retrieval model here is the key encoder with its head. Both domains use the same
network: ``encode_query`` = ``encode_database`` = ``forward``. State dict keys are torchvision's
under ``encoder.`` (``encoder.layer1.0.conv1.weight`` ..., head ``encoder.fc.0.*`` / ``encoder.fc.2.*``).

Evaluation transform (``loader.py`` ``EvalDataset``): ``Resize(256)`` of the shorter side (PIL
bilinear), ``CenterCrop(224)``, ImageNet mean/std; similarity is the cosine.

Weights: the authors published none. ``pretrained="moco_v2"`` starts from MoCo v2's 800-epoch
ImageNet checkpoint (the original's ``--clean-model``), which is CC-BY-NC 4.0; train a UCDIR
model with ``python training/train.py --recipe ucdir-office-home`` (or ``ucdir-domainnet``).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, Sequence

import torch
from torch import nn

from zoo.errors import InputError
from zoo.layers.norm import l2n
from zoo.layers.split_bn import SplitBatchNorm2d

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")


class UCDIRNet(nn.Module):
    """ResNet + MoCo v2 MLP head, L2-normalised.

    Args:
        arch: torchvision ResNet (``resnet50`` in the paper; the original's ``-a`` accepts others).
        dim: output dimension (``--low-dim``, 128).
        bn_splits: >1 builds :class:`~zoo.layers.split_bn.SplitBatchNorm2d` layers whose training
            statistics come from that many interleaved groups (the key encoder's shuffled BN);
            the same keys and the same eval-mode output as plain BatchNorm.

    ``forward`` / ``encode_query`` / ``encode_database``: ``(B, 3, H, W)`` -> ``(B, dim)`` float32, unit L2 norm.
    """

    def __init__(self, arch: str = "resnet50", dim: int = 128, bn_splits: int = 1) -> None:
        super().__init__()
        import torchvision

        if arch not in ARCHS:
            raise InputError(f"ucdir_moco: arch must be one of {', '.join(ARCHS)}, got {arch!r}")
        norm_layer = partial(SplitBatchNorm2d, num_splits=bn_splits) if bn_splits > 1 else None
        encoder = getattr(torchvision.models, arch)(weights=None, num_classes=dim, norm_layer=norm_layer)
        hidden = encoder.fc.weight.shape[1]
        # MoCo v2's head: the classifier becomes Linear-ReLU-Linear (keys fc.0.*, fc.2.*).
        encoder.fc = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), encoder.fc)
        self.encoder = encoder
        self.arch, self.dim = arch, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"ucdir_moco expects images (B, 3, H, W), got {tuple(x.shape)}")
        return l2n(self.encoder(x).float(), dim=1)

    def encode_query(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def encode_database(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


def ucdir_moco(arch: str = "resnet50", dim: int = 128, bn_splits: int = 1) -> UCDIRNet:
    """UCDIR encoder with random weights (nothing downloaded). ``(B,3,224,224) -> (B,128)``."""
    return UCDIRNet(arch, dim, bn_splits)


def ucdir_preprocessing(args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The original evaluation's preprocessing record (both domains alike)."""
    return {"resize_shorter": 256, "center_crop": 224, "interpolation": "bilinear",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def ucdir_transforms(resize_shorter: int = 256, center_crop: int = 224, interpolation: str = "bilinear",
                     mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
                     ) -> tuple[Callable, Callable]:
    """Both domains alike, from the record: shorter side to ``resize_shorter``, centre crop, normalise."""
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(resize_shorter, interpolation=T.InterpolationMode(interpolation)),
                    T.CenterCrop(center_crop), T.ToTensor(), T.Normalize(mean, std)])
    return tf, tf
