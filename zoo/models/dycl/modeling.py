"""DyCL: one shared ResNet-50 for drone and satellite views, trained for hierarchical retrieval.

Zhang et al., "Dynamic Contrastive Learning for Hierarchical Retrieval: A Case Study of
Distance-Aware Cross-View Geo-Localization" (arXiv:2506.23077); code anocodetest1/DyCL, built
on elias-ramzi/HAPPIER. The released network is the ``resnet_ln`` configuration
(``config/model/resnet_ln.yaml``: ``RetrievalNet_two``, ``models/retrieval_net_two.py``):

    ResNet-50 trunk (torchvision layout) -> global average pool -> LayerNorm(2048, no affine)
    -> Linear(2048 -> 512) -> L2

The same weights embed drone images (queries) and satellite images (database). BatchNorm
layers stay in eval mode while training (``lib.freeze_batch_norm``), but, as in the original,
their affine parameters keep their gradients and are optimised with the backbone.

The original runs the network under ``torch.cuda.amp.autocast`` (fp16 on CUDA, nothing on CPU)
in training and evaluation; ``amp=True`` does the same, and descriptors are returned as float32.
Evaluation transform (``config/transform/da_campus.yaml`` ``test``): ``Resize([256, 256])``
(squash, PIL bilinear), ``CenterCrop(224)``, ImageNet mean/std.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import torch
from torch import nn

from zoo.errors import InputError
from zoo.layers.norm import l2n

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEATURE_DIM = 2048


class DyCLNet(nn.Module):
    """``resnet_ln``: ResNet-50 -> avg pool -> LayerNorm (no affine) -> Linear -> L2.

    Args:
        embed_dim: descriptor size (512 in the paper).
        amp: run under fp16 autocast when the input is on CUDA (as the original evaluates).
        freeze_bn: keep BatchNorm statistics frozen in ``train()`` (the original's setting).

    ``forward`` / ``encode_query`` (drone) / ``encode_database`` (satellite):
    ``(B, 3, H, W)`` -> ``(B, embed_dim)`` float32, unit L2 norm.
    """

    def __init__(self, embed_dim: int = 512, amp: bool = False, freeze_bn: bool = True) -> None:
        super().__init__()
        import timm

        # timm's resnet50 keys equal torchvision's; num_classes=0 keeps the global average pool.
        self.backbone = timm.create_model("resnet50", pretrained=False, num_classes=0)
        self.standardize = nn.LayerNorm(FEATURE_DIM, elementwise_affine=False)
        self.fc = nn.Linear(FEATURE_DIM, embed_dim)
        self.embed_dim = embed_dim
        self.amp = amp
        self.freeze_bn = freeze_bn

    def train(self, mode: bool = True) -> "DyCLNet":
        super().train(mode)
        if mode and self.freeze_bn:
            # Frozen statistics only: the original leaves the BN affine parameters trainable.
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def _autocast(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        if self.amp and x.is_cuda:
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"dycl_resnet expects images (B, 3, H, W), got {tuple(x.shape)}")
        with self._autocast(x):
            v = self.fc(self.standardize(self.backbone(x)))
        return l2n(v.float())

    def encode_query(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def encode_database(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


def dycl_resnet(embed_dim: int = 512, amp: bool = False, freeze_bn: bool = True) -> DyCLNet:
    """DyCL ``resnet_ln`` with random weights (nothing downloaded). ``(B,3,224,224) -> (B,512)``."""
    return DyCLNet(embed_dim, amp, freeze_bn)


def dycl_preprocessing(args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The original evaluation's preprocessing record (drone and satellite alike)."""
    return {"resize": [256, 256], "center_crop": 224, "interpolation": "bilinear",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def dycl_transforms(resize: Sequence[int] = (256, 256), center_crop: int = 224, interpolation: str = "bilinear",
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
                    ) -> tuple[Callable, Callable]:
    """Drone and satellite images alike, from the record: squash to ``resize``, centre-crop, normalise."""
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(tuple(resize), interpolation=T.InterpolationMode(interpolation)),
                    T.CenterCrop(center_crop), T.ToTensor(), T.Normalize(mean, std)])
    return tf, tf


def imagenet_init(model: nn.Module) -> None:
    """torchvision's ResNet-50 IMAGENET1K_V1 weights (= timm ``resnet50.tv_in1k``), which the
    original loads with ``models.resnet50(pretrained=True)``; LayerNorm/fc keep their init."""
    import timm

    net = timm.create_model("resnet50.tv_in1k", pretrained=True, num_classes=0)
    model.backbone.load_state_dict(net.state_dict())


