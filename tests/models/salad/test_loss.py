"""SALAD's loss: pytorch-metric-learning's MultiSimilarity loss on MultiSimilarity-miner pairs."""

import pytest
import torch

pytest.importorskip("pytorch_metric_learning")

from pytorch_metric_learning import distances, losses, miners  # noqa: E402

from zoo.models.salad.loss import MultiSimilarityWithMiner  # noqa: E402


def test_equals_the_original_configuration() -> None:
    torch.manual_seed(0)
    desc = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    labels = torch.arange(4).repeat_interleave(4)
    ours, trivial = MultiSimilarityWithMiner()(desc, labels)
    # serizba/salad utils/losses.py: loss with DotProductSimilarity, miner with CosineSimilarity
    miner = miners.MultiSimilarityMiner(epsilon=0.1, distance=distances.CosineSimilarity())
    loss = losses.MultiSimilarityLoss(alpha=1.0, beta=50, base=0.0, distance=distances.DotProductSimilarity())
    pairs = miner(desc, labels)
    assert torch.allclose(ours, loss(desc, labels, pairs))
    assert trivial == pytest.approx(1 - len(set(pairs[0].tolist())) / 16)
    assert ours.item() > 0


def test_separated_places_give_no_pairs_and_zero_loss() -> None:
    desc = torch.eye(4).repeat_interleave(2, dim=0)       # two identical views per place, places orthogonal
    value, trivial = MultiSimilarityWithMiner()(desc, torch.arange(4).repeat_interleave(2))
    assert value.item() == 0.0 and trivial == 1.0
