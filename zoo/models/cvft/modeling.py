"""CVFT: Cross-View Feature Transport (Shi et al., AAAI 2020), a port of the TensorFlow 1 original.

Two separate VGG16 conv stacks (ground panorama and aerial image), each followed by a 3x3
stride-2 conv to 64 channels. The ground map (4x20 for a 112x616 panorama) is resized with TF1's
legacy bilinear sampling to the aerial map's size (8x8 for 256x256), then *transported* onto the
aerial layout: a 1x1 conv + ReLU scores each ground position, a fully connected layer turns the
64 scores into a 64x64 cost matrix, log-domain Sinkhorn (20 iterations) on ``-100 * cost`` gives a
transport plan ``P`` and the ground features become ``X' = X P``. Both maps are flattened in
``(h, w, c)`` order (TF's NHWC reshape) to 4096-d and L2-normalised.

Original: https://github.com/YujiaoShi/cross_view_localization_CVFT (``script/ot_net.py``,
``script/VGG.py``; no licence). The authors' trained weights are a Google Drive folder, read by
:mod:`zoo.models.cvft.convert`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from zoo.errors import InputError
from zoo.layers.norm import l2n
from zoo.layers.sinkhorn import log_sinkhorn
from zoo.layers.tf_compat import Conv2dSame, resize_bilinear_tf1

#: VGG16 conv layers in order, with a 2x2 max pool after the marked ones (VGG.py has no pool after conv5_3).
VGG16_LAYERS: tuple[tuple[str, int, int, bool], ...] = (
    ("conv1_1", 3, 64, False), ("conv1_2", 64, 64, True),
    ("conv2_1", 64, 128, False), ("conv2_2", 128, 128, True),
    ("conv3_1", 128, 256, False), ("conv3_2", 256, 256, False), ("conv3_3", 256, 256, True),
    ("conv4_1", 256, 512, False), ("conv4_2", 512, 512, False), ("conv4_3", 512, 512, True),
    ("conv5_1", 512, 512, False), ("conv5_2", 512, 512, False), ("conv5_3", 512, 512, False),
)
#: torchvision/timm ``vgg16`` ``features`` index of each conv (for the ImageNet initialisation).
TORCHVISION_FEATURE_INDEX = dict(zip((name for name, *_ in VGG16_LAYERS),
                                     (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)))
#: layers the original never trains (``trainable=False`` in VGG16_conv) and that have no dropout
FROZEN_LAYERS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3")

CAFFE_BGR_MEAN = (103.939, 116.779, 123.6)  # the loaders' constants (123.6, not Caffe's 123.68)
GROUND_SIZE = (112, 616)
AERIAL_SIZE = (256, 256)


class VGG16Conv(nn.Module):
    """VGG16 conv1_1 .. conv5_3 with ReLUs, four 2x2 max pools, and dropout after conv4_1 .. conv5_3.

    Max pools use ``ceil_mode=True``: TF's 'SAME' pooling of an odd size (the ground map is 77
    wide after three pools) keeps a last, one-pixel-wide window. ``(B, 3, H, W)`` ->
    ``(B, 512, ceil(H/16), ceil(W/16))``.
    """

    def __init__(self, dropout: float = 0.2) -> None:
        super().__init__()
        self.names = [name for name, *_ in VGG16_LAYERS]
        self.pool_after = {name for name, _, _, pool in VGG16_LAYERS if pool}
        for name, c_in, c_out, _ in VGG16_LAYERS:
            self.add_module(name, nn.Conv2d(c_in, c_out, 3, padding=1))
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.names:
            x = torch.relu(getattr(self, name)(x))
            if name not in FROZEN_LAYERS:
                x = self.dropout(x)
            if name in self.pool_after:
                x = self.pool(x)
        return x


class FeatureTransport(nn.Module):
    """CVFT's transport layer: ``(B, C, H, W)`` -> ``(B, C, H, W)`` features moved by a learned plan.

    ``n = H*W`` positions; the plan ``P`` (``(B, n, n)``) is the Sinkhorn normalisation of
    ``-scale * (fc(relu(conv1x1(x))))``; output position ``o`` is ``sum_i x[:, i] * P[i, o]``.
    """

    def __init__(self, channels: int = 64, positions: int = 64, num_iters: int = 20, scale: float = 100.0) -> None:
        super().__init__()
        self.positions, self.num_iters, self.scale = positions, num_iters, scale
        self.conv = nn.Conv2d(channels, 1, 1)
        self.fc = nn.Linear(positions, positions * positions)
        nn.init.normal_(self.fc.weight, std=0.005)
        with torch.no_grad():  # the original's bias starts as the flattened identity matrix
            self.fc.bias.copy_(torch.eye(positions).flatten())

    def plan(self, x: torch.Tensor) -> torch.Tensor:
        """Transport plan ``(B, n, n)`` (rows: source positions, columns: destinations)."""
        scores = torch.relu(self.conv(x)).flatten(1)
        cost = self.fc(scores).view(-1, self.positions, self.positions)
        return log_sinkhorn(-self.scale * cost, num_iters=self.num_iters).exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h * w != self.positions:
            raise InputError(f"FeatureTransport expects {self.positions} positions, got a {h}x{w} map")
        # Always float32: the cost is multiplied by 100 before Sinkhorn, so bf16/fp16 rounding of
        # the cost (~0.4% near 1) would become an error of ~0.4 in the log plan.
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            moved = torch.bmm(x.flatten(2), self.plan(x))
        return moved.view(b, c, h, w)


def _map_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """Spatial size after VGG16Conv (four ceil-mode pools) and the stride-2 'SAME' conv."""
    h, w = image_size
    for _ in range(4):
        h, w = -(-h // 2), -(-w // 2)
    return -(-h // 2), -(-w // 2)


class CVFT(nn.Module):
    """Ground panorama -> 4096-d query descriptor; aerial image -> 4096-d database descriptor.

    Inputs are BGR, Caffe-mean-subtracted, unscaled float tensors (see :func:`cvft_transforms`):
    ground ``(B, 3, 112, 616)``, aerial ``(B, 3, 256, 256)``.
    """

    def __init__(self, ground_size: tuple[int, int] = GROUND_SIZE, aerial_size: tuple[int, int] = AERIAL_SIZE,
                 channels: int = 64, dropout: float = 0.2, sinkhorn_iters: int = 20) -> None:
        super().__init__()
        self.ground_size, self.aerial_size = tuple(ground_size), tuple(aerial_size)
        self.map_size = _map_size(self.aerial_size)
        positions = self.map_size[0] * self.map_size[1]
        self.grd_vgg = VGG16Conv(dropout)
        self.sat_vgg = VGG16Conv(dropout)
        self.grd_conv = Conv2dSame(512, channels, 3, stride=2)
        self.sat_conv = Conv2dSame(512, channels, 3, stride=2)
        self.transport = FeatureTransport(channels, positions, sinkhorn_iters)
        self.descriptor_dim = channels * positions
        # torchvision's VGG initialisation: PyTorch's default conv init shrinks the signal ~3x per
        # layer, so a random 15-conv stack would output (nearly) constant descriptors.
        for module in (self.grd_vgg, self.sat_vgg, self.grd_conv, self.sat_conv, self.transport.conv):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)

    def _check(self, x: torch.Tensor, size: tuple[int, int], what: str) -> None:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != size:
            raise InputError(
                f"cvft_vgg {what} images must be (B, 3, {size[0]}, {size[1]}) (BGR, Caffe-mean-subtracted, "
                f"from zoo.get_transforms('cvft_vgg')), got {tuple(x.shape)}")

    def encode_query(self, ground: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 112, 616)`` ground panoramas -> ``(B, 4096)`` L2-normalised descriptors."""
        self._check(ground, self.ground_size, "ground (query)")
        x = torch.relu(self.grd_conv(self.grd_vgg(ground)))
        x = self.transport(resize_bilinear_tf1(x, self.map_size))
        return l2n(x.permute(0, 2, 3, 1).flatten(1))

    def encode_database(self, aerial: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 256, 256)`` aerial images -> ``(B, 4096)`` L2-normalised descriptors."""
        self._check(aerial, self.aerial_size, "aerial (database)")
        x = torch.relu(self.sat_conv(self.sat_vgg(aerial)))
        return l2n(x.permute(0, 2, 3, 1).flatten(1))

    def forward(self, ground: torch.Tensor, aerial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ground descriptors, aerial descriptors)``, each ``(B, 4096)``."""
        return self.encode_query(ground), self.encode_database(aerial)


def descriptor_dim(variant: dict[str, Any]) -> int:
    """64 channels x the aerial map's positions (8 x 8 = 4096 for 256 x 256 aerial images)."""
    h, w = _map_size(tuple(variant.get("aerial_size", AERIAL_SIZE)))
    return variant.get("channels", 64) * h * w


def cvft_vgg(**kwargs: Any) -> CVFT:
    """CVFT with two VGG16 stacks; ground ``(B,3,112,616)`` and aerial ``(B,3,256,256)`` -> ``(B, 4096)``."""
    return CVFT(**kwargs)


# --------------------------------------------------------------------------- preprocessing


def _require_cv2() -> Any:
    try:
        import cv2
    except ImportError as err:  # optional: only evaluation and conversion need it
        raise ImportError(
            "cvft_vgg preprocessing resizes with OpenCV's INTER_AREA, as the original loaders do; "
            "install it with `pip install retrieval-zoo[eval]` (opencv-python-headless)") from err
    return cv2


class CaffeBGRTransform:
    """PIL image -> ``(3, H, W)`` float tensor the way CVFT's loaders prepare ``cv2.imread`` output:
    BGR channel order, ``cv2.resize(..., INTER_AREA)`` to ``size``, ``mean_bgr`` subtracted, no scaling.

    ``cv2.imread`` and PIL both decode JPEG with libjpeg(-turbo) and PNG losslessly, so the PIL
    image reversed to BGR holds the same pixels the original read from disk.
    """

    def __init__(self, size: Sequence[int], mean_bgr: Sequence[float] = CAFFE_BGR_MEAN) -> None:
        self.size = tuple(size)
        self.mean_bgr = tuple(mean_bgr)

    def __call__(self, image: Any) -> torch.Tensor:
        cv2 = _require_cv2()
        rgb = np.asarray(image.convert("RGB"))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        bgr = cv2.resize(bgr, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        out = bgr.astype(np.float32) - np.asarray(self.mean_bgr, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return f"CaffeBGRTransform(size={self.size}, interpolation=INTER_AREA, mean_bgr={self.mean_bgr})"


def cvft_preprocessing(args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The original loaders' preprocessing record at the sizes the model is built for."""
    args = args or {}
    return {"ground_size": list(args.get("ground_size", GROUND_SIZE)),
            "aerial_size": list(args.get("aerial_size", AERIAL_SIZE)),
            "channel_order": "BGR", "interpolation": "area", "mean_bgr": list(CAFFE_BGR_MEAN)}


def cvft_transforms(ground_size: Sequence[int] = GROUND_SIZE, aerial_size: Sequence[int] = AERIAL_SIZE,
                    channel_order: str = "BGR", interpolation: str = "area",
                    mean_bgr: Sequence[float] = CAFFE_BGR_MEAN) -> tuple[Callable, Callable]:
    """``(ground transform, aerial transform)`` from the record. CVUSA panoramas (1232x224) are resized to
    616x112 and aerial images (750x750) to 256x256; CVACT_val files already have those sizes (the resize
    is then the identity). Only the original's BGR order and OpenCV area resampling are implemented."""
    if channel_order != "BGR" or interpolation != "area":
        raise InputError(f"cvft_vgg preprocessing: channel_order={channel_order!r}, interpolation={interpolation!r}; "
                         "only 'BGR' with 'area' (cv2.INTER_AREA), as the original loaders, is implemented")
    return CaffeBGRTransform(ground_size, mean_bgr), CaffeBGRTransform(aerial_size, mean_bgr)


# --------------------------------------------------------------------------- weights


def init_from_imagenet_vgg16(model: nn.Module) -> None:
    """Copy timm's ``vgg16.tv_in1k`` (torchvision's ImageNet VGG16) conv weights into both stacks.

    The original initialised from a Caffe VGG16 (BGR input); these weights expect RGB in [0, 1]
    with ImageNet statistics, so fine-tuning with CVFT's BGR/Caffe-mean inputs starts further away.
    """
    import timm

    features = timm.create_model("vgg16.tv_in1k", pretrained=True).features.state_dict()
    for stack in (model.grd_vgg, model.sat_vgg):
        for name, index in TORCHVISION_FEATURE_INDEX.items():
            conv = getattr(stack, name)
            conv.weight.data.copy_(features[f"{index}.weight"])
            conv.bias.data.copy_(features[f"{index}.bias"])


