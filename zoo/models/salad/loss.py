"""SALAD's training loss: Multi-Similarity loss on online-mined pairs (pytorch-metric-learning).

serizba/salad (``utils/losses.py``, ``vpr_model.py``) uses
``MultiSimilarityLoss(alpha=1.0, beta=50, base=0.0, distance=DotProductSimilarity())`` on the
pairs chosen by ``MultiSimilarityMiner(epsilon=0.1, distance=CosineSimilarity())``, and logs the
fraction of images that took part in no mined pair ("b_acc").
"""

from __future__ import annotations

import torch
from torch import nn


class MultiSimilarityWithMiner(nn.Module):
    """``loss(descriptors (B, D), labels (B,)) -> (loss, fraction of images without a mined pair)``."""

    def __init__(self, alpha: float = 1.0, beta: float = 50.0, base: float = 0.0, epsilon: float = 0.1) -> None:
        super().__init__()
        try:
            from pytorch_metric_learning import distances, losses, miners
        except ImportError as err:  # a [train] extra
            raise ImportError("SALAD training needs pytorch-metric-learning: pip install 'retrieval-zoo[train]'") from err
        self.loss = losses.MultiSimilarityLoss(alpha=alpha, beta=beta, base=base,
                                               distance=distances.DotProductSimilarity())
        self.miner = miners.MultiSimilarityMiner(epsilon=epsilon, distance=distances.CosineSimilarity())

    def forward(self, descriptors: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        # Mixed precision: the similarities and exponentials of the loss run in float32.
        descriptors = descriptors.float()
        pairs = self.miner(descriptors, labels)
        loss = self.loss(descriptors, labels, pairs)
        mined = torch.unique(pairs[0]).numel()
        return loss, 1.0 - mined / descriptors.shape[0]
