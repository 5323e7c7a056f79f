"""DINOv2 SALAD: DINOv2 ViT-B/14 + Sinkhorn Algorithm for Locally Aggregated Descriptors.

Izquierdo & Civera, "Optimal Transport Aggregation for Visual Place Recognition", CVPR 2024
(arXiv:2311.15937); original code https://github.com/serizba/salad (GPL-3.0). This is our own
implementation of the same computation; it loads the authors' checkpoints through
:func:`zoo.models.salad.convert.convert_salad_checkpoint`.

Pipeline for an image ``(B, 3, H, W)`` (H, W multiples of 14):

1. DINOv2 ViT-B/14 (timm ``vit_base_patch14_dinov2``) with DINOv2's own position-embedding
   interpolation; the first ``depth - num_trainable_blocks`` blocks (and the embeddings) are frozen
   and run without autograd, as in the original fine-tuning; the final LayerNorm is applied to
   every token. Output: patch map ``(B, 768, H/14, W/14)`` and class token ``(B, 768)``.
2. SALAD: per-patch features ``f_i`` (1×1 conv MLP to ``l`` dims) and scores ``s_i`` (to ``m``
   clusters); an extra dustbin row with a learned constant score; log-domain Sinkhorn (3
   iterations) with mass ``1/(n+m)`` per cluster and per patch and ``(n-m)/(n+m)`` for the
   dustbin; the assignment, rescaled by ``n+m``, weighs the features into ``m`` cluster vectors
   of ``l`` dims. Each cluster vector is L2-normalised; the class token's MLP output (``g`` dims,
   L2-normalised) is prepended; the whole ``g + m*l`` vector is L2-normalised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torchvision.transforms as T
from torch import nn

from zoo.errors import InputError
from zoo.io import load_state_dict_strict
from zoo.layers.norm import l2n
from zoo.layers.pos_embed import resample_pos_embed_dinov2
from zoo.layers.sinkhorn import log_sinkhorn

__all__ = ["DINOv2SALAD", "SALADAggregator", "dinov2_salad", "salad_preprocessing", "salad_transforms"]

PATCH_SIZE = 14
EMBED_DIM = 768
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Evaluation resolution of the paper and README (``eval.py --image_size 322 322``).
EVAL_SIZE = 322
TIMM_ARCH = "vit_base_patch14_dinov2"
TIMM_BACKBONE_WEIGHTS = "vit_base_patch14_dinov2.lvd142m"


class SALADAggregator(nn.Module):
    """Optimal-transport aggregation of patch features into ``token_dim + num_clusters*cluster_dim`` dims.

    Parameter names follow the original module (``token_features``, ``cluster_features``,
    ``score``, ``dust_bin``) so that checkpoints convert by renaming prefixes only.
    """

    def __init__(self, in_dim: int = EMBED_DIM, num_clusters: int = 64, cluster_dim: int = 128,
                 token_dim: int = 256, hidden_dim: int = 512, dropout: float = 0.3,
                 sinkhorn_iters: int = 3) -> None:
        super().__init__()
        self.num_clusters = num_clusters
        self.cluster_dim = cluster_dim
        self.token_dim = token_dim
        self.sinkhorn_iters = sinkhorn_iters
        # The original shares one Dropout instance between both branches; dropout keeps no
        # state and draws a fresh mask per call, so two instances compute the same thing.
        self.token_features = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, token_dim))
        self.cluster_features = nn.Sequential(
            nn.Conv2d(in_dim, hidden_dim, 1), nn.Dropout(dropout), nn.ReLU(), nn.Conv2d(hidden_dim, cluster_dim, 1))
        self.score = nn.Sequential(
            nn.Conv2d(in_dim, hidden_dim, 1), nn.Dropout(dropout), nn.ReLU(), nn.Conv2d(hidden_dim, num_clusters, 1))
        self.dust_bin = nn.Parameter(torch.tensor(1.0))

    @property
    def out_dim(self) -> int:
        return self.token_dim + self.num_clusters * self.cluster_dim

    def assignment(self, scores: torch.Tensor) -> torch.Tensor:
        """``(B, m, n)`` scores -> ``(B, m, n)`` transport plan scaled so each patch carries mass ≤ 1."""
        batch, m, n = scores.shape
        # Sinkhorn in float32: three log-sum-exps over a few hundred entries are cheap and
        # lose precision in bf16/fp16.
        scores = scores.float()
        dustbin = self.dust_bin.float().expand(batch, 1, n)
        log_scores = torch.cat((scores, dustbin), dim=1)
        # The marginals are tensors computed from the patch count, not Python floats: an exported
        # (ONNX) graph then recomputes them for each input size instead of freezing the export's.
        total = torch.scalar_tensor(n + m, dtype=scores.dtype, device=scores.device)
        log_norm = -total.log()
        log_a = log_norm.expand(batch, m + 1).clone()
        log_a[:, m] += (total - 2 * m).log()  # the dustbin absorbs the mass (n - m) clusters do not take
        log_b = log_norm.expand(batch, n)
        log_plan = log_sinkhorn(log_scores, log_a, log_b, num_iters=self.sinkhorn_iters, reg=1.0)
        return (log_plan[:, :m] - log_norm).exp()

    def forward(self, feature_map: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` patch map + ``(B, C)`` class token -> ``(B, g + m*l)`` L2-normalised descriptor."""
        n = feature_map.shape[-2] * feature_map.shape[-1]
        if n <= self.num_clusters:
            raise InputError(
                f"SALAD with {self.num_clusters} clusters needs more than {self.num_clusters} patch tokens, "
                f"got {n} ({feature_map.shape[-2]}x{feature_map.shape[-1]} patches); use a larger input image")
        features = self.cluster_features(feature_map).flatten(2)      # (B, l, n)
        scores = self.score(feature_map).flatten(2)                   # (B, m, n)
        plan = self.assignment(scores).to(features.dtype)             # (B, m, n)
        clusters = torch.bmm(features, plan.transpose(1, 2))          # (B, l, m)
        # Normalise each cluster's l-dim vector, then flatten l-major (index = j*m + k) as the original.
        clusters = l2n(clusters, dim=1).flatten(1)
        global_token = l2n(self.token_features(token), dim=-1)
        # Descriptors are float32 even under autocast: a bf16 vector of 8448 entries is only
        # normalised to about 1e-3.
        return l2n(torch.cat((global_token.float(), clusters.float()), dim=-1), dim=-1)


class DINOv2SALAD(nn.Module):
    """DINOv2 ViT-B/14 backbone + :class:`SALADAggregator` (see the module docstring).

    Attributes:
        backbone: timm ``VisionTransformer`` (keys equal DINOv2's except its unused ``mask_token``).
        aggregator: :class:`SALADAggregator`.
    """

    def __init__(self, num_clusters: int = 64, cluster_dim: int = 128, token_dim: int = 256,
                 num_trainable_blocks: int = 4, depth: int = 12, dropout: float = 0.3) -> None:
        super().__init__()
        import timm

        if not 0 <= num_trainable_blocks <= depth:
            raise ValueError(f"num_trainable_blocks must be in [0, {depth}], got {num_trainable_blocks}")
        self.backbone = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=0, depth=depth,
                                          dynamic_img_size=True)
        self.aggregator = SALADAggregator(self.backbone.embed_dim, num_clusters, cluster_dim, token_dim,
                                          dropout=dropout)
        self.num_frozen_blocks = depth - num_trainable_blocks
        # Frozen parts get no gradients at all (so optimisers and DDP skip them), as in the
        # original where they run under no_grad and the result is detached.
        frozen = [self.backbone.patch_embed, *self.backbone.blocks[:self.num_frozen_blocks]]
        for module in frozen:
            module.requires_grad_(False)
        self.backbone.cls_token.requires_grad_(False)
        self.backbone.pos_embed.requires_grad_(False)

    @property
    def out_dim(self) -> int:
        return self.aggregator.out_dim

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"dinov2_salad expects images (B, 3, H, W), got a tensor of shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % PATCH_SIZE or w % PATCH_SIZE:
            raise InputError(
                f"dinov2_salad needs height and width that are multiples of {PATCH_SIZE}, got {h}x{w}; "
                f"resize first (the evaluation transform resizes to {EVAL_SIZE}x{EVAL_SIZE}), "
                f"e.g. to {round(h / PATCH_SIZE) * PATCH_SIZE}x{round(w / PATCH_SIZE) * PATCH_SIZE}")

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 3, H, W)`` -> patch map ``(B, C, H/14, W/14)`` and class token ``(B, C)``, both after the final norm."""
        self.check_input(x)
        vit = self.backbone
        batch = x.shape[0]
        grid = (x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE)
        with torch.no_grad():
            tokens = vit.patch_embed(x).reshape(batch, grid[0] * grid[1], -1)   # NHWC -> (B, n, C)
            tokens = torch.cat((vit.cls_token.expand(batch, -1, -1).to(tokens.dtype), tokens), dim=1)
            tokens = tokens + resample_pos_embed_dinov2(vit.pos_embed, grid).to(tokens.dtype)
            for block in vit.blocks[:self.num_frozen_blocks]:
                tokens = block(tokens)
        for block in vit.blocks[self.num_frozen_blocks:]:
            tokens = block(tokens)
        tokens = vit.norm(tokens)
        # Contiguous NCHW: a permuted (channels-last) map would give the 1x1 convs' weight gradients
        # channels-last strides, which DDP's gradient buckets copy on every step.
        feature_map = tokens[:, 1:].reshape(batch, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous()
        return feature_map, tokens[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` ImageNet-normalised RGB (H, W multiples of 14) -> ``(B, g + m*l)`` L2-normalised."""
        feature_map, token = self.forward_features(x)
        return self.aggregator(feature_map, token)

    def encode_query(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)

    def encode_database(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)


def dinov2_salad(num_clusters: int = 64, cluster_dim: int = 128, token_dim: int = 256,
                 num_trainable_blocks: int = 4, depth: int = 12, dropout: float = 0.3) -> DINOv2SALAD:
    """Build DINOv2 SALAD with random weights (nothing is downloaded).

    Args:
        num_clusters: ``m``. cluster_dim: ``l``. token_dim: ``g``. The descriptor has ``g + m*l`` dims.
        num_trainable_blocks: last ViT blocks trained during fine-tuning (4 in the paper).
        depth: ViT depth (12 for ViT-B; smaller only for tests).
        dropout: dropout in the cluster and score MLPs (training only).

    Returns:
        :class:`DINOv2SALAD` mapping ``(B, 3, H, W)`` (H, W multiples of 14) to ``(B, g + m*l)``.
    """
    return DINOv2SALAD(num_clusters, cluster_dim, token_dim, num_trainable_blocks, depth, dropout)


def salad_preprocessing(args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evaluation preprocessing record of the original ``eval.py`` (the same for every variant)."""
    return {"image_size": [EVAL_SIZE, EVAL_SIZE], "interpolation": "bilinear",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def salad_transforms(image_size: int | Sequence[int] = EVAL_SIZE, interpolation: str = "bilinear",
                     mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
                     ) -> tuple[Callable, Callable]:
    """Evaluation preprocessing from its record: resize (squash) to ``image_size`` (multiples of 14),
    ``ToTensor``, normalise with ``mean``/``std``. Same for queries and database."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if size[0] % PATCH_SIZE or size[1] % PATCH_SIZE:
        raise InputError(f"image_size {size} is not a multiple of {PATCH_SIZE}")
    tf = T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode(interpolation)),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])
    return tf, tf


def load_dinov2_backbone(model: nn.Module, weights: Path) -> None:
    """Training start: DINOv2 LVD-142M weights (timm's Hub copy, ``weights``) into the backbone;
    SALAD stays random. Reduced-depth models take the first blocks."""
    from safetensors.torch import load_file

    state = {k: v for k, v in load_file(str(weights)).items() if k != "mask_token"}
    if len(model.backbone.blocks) != 12:
        state = {k: v for k, v in state.items()
                 if not k.startswith("blocks.") or int(k.split(".")[1]) < len(model.backbone.blocks)}
    load_state_dict_strict(model.backbone, state, f"timm/{TIMM_BACKBONE_WEIGHTS}")
