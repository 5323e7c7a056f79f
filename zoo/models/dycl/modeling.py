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
from typing import Any, Callable

import torch
from torch import nn

from zoo.errors import InputError
from zoo.layers.norm import l2n
from zoo.registry import HubFile, ModelInfo, WeightSource, register_model

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


def dycl_transforms(**_: Any) -> tuple[Callable, Callable]:
    """Drone and satellite images alike: squash to 256x256 (PIL bilinear), centre-crop 224, ImageNet mean/std."""
    from torchvision import transforms as T

    tf = T.Compose([T.Resize((256, 256), interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(224),
                    T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return tf, tf


def _imagenet_init(model: nn.Module) -> None:
    """torchvision's ResNet-50 IMAGENET1K_V1 weights (= timm ``resnet50.tv_in1k``), which the
    original loads with ``models.resnet50(pretrained=True)``; LayerNorm/fc keep their init."""
    import timm

    net = timm.create_model("resnet50.tv_in1k", pretrained=True, num_classes=0)
    model.backbone.load_state_dict(net.state_dict())


#: The authors' checkpoint on the Hub. Its commit sha and sha256 could not be looked up from here:
#: the revision is the branch ``main`` and the file is not checksummed until someone pins both.
RELEASE = HubFile("www0wwwjs1/dycl", "dycl_20epoch.ckpt", revision="main", sha256=None)


def _converter(path: Any, **options: Any) -> Any:
    from zoo.models.dycl.convert import convert_dycl
    return convert_dycl(path, **options)


INFO = register_model(ModelInfo(
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
    descriptor_dim=lambda kw: int(kw.get("embed_dim", 512)),
    variants={"resnet50_512": {"embed_dim": 512}},
    transforms=dycl_transforms,
    weights={
        "default": WeightSource(
            "release", "authors' DA-Campus model after 20 epochs (Hub www0wwwjs1/dycl, dycl_20epoch.ckpt, "
            "revision main, not checksummed), converted on first use", file=RELEASE,
            licence="no licence stated"),
        "release": WeightSource(
            "release", "same as default: www0wwwjs1/dycl dycl_20epoch.ckpt", file=RELEASE, licence="no licence stated"),
        "imagenet": WeightSource(
            "init", "ResNet-50 trunk from torchvision IMAGENET1K_V1 (timm resnet50.tv_in1k), for training",
            init_fn=_imagenet_init, licence="BSD-3-Clause (torchvision weights)"),
    },
    converter=_converter,
    published=[],
    summary="DyCL resnet_ln: shared ResNet-50 + LayerNorm + 512-d projection for drone/satellite hierarchical retrieval.",
))
