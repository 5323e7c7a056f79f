"""Recall@K (salad's validation) and cross-view rank recall (CVFT's test script): hand-worked
examples and frozen outputs of the original code on random data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.data.base import RetrievalSet
from zoo.errors import InputError
from zoo.metrics.base import get_protocol
from zoo.metrics.retrieval import correct_matrix, rank_recall, recall_at_k, top1_percent_threshold

REFERENCE = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "retrieval_reference.npz"


def _set(gt, protocol):
    return RetrievalSet(name="toy", root=Path("."), queries=[], database=[], ground_truth=gt, protocol=protocol)


def test_recall_hand_worked():
    pred = [[3, 1, 2], [0, 5, 4], [7, 8, 9]]
    gt = [np.array([1]), np.array([4, 6]), np.array([], dtype=np.int64)]
    correct = correct_matrix(pred, gt)
    assert correct.tolist() == [[False, True, False], [False, False, True], [False, False, False]]
    r = recall_at_k(correct, (1, 2, 3))
    # q0 is found at 2, q1 at 3, q2 (no positives) never; the denominator is all 3 queries.
    assert r == pytest.approx({1: 0.0, 2: 100 / 3, 3: 200 / 3})


def test_recall_needs_enough_predictions():
    with pytest.raises(InputError, match="recall@5"):
        recall_at_k(torch.zeros(2, 3, dtype=torch.bool), (1, 5))
    with pytest.raises(InputError, match="3 queries"):
        correct_matrix([[0], [1]], [[0], [1], [2]])


def test_rank_recall_hand_worked():
    ranks = np.array([0, 3, 0, 12, 99, 5])
    assert rank_recall(ranks, 1) == pytest.approx(100 * 2 / 6)
    assert rank_recall(ranks, 5) == pytest.approx(100 * 3 / 6)
    assert rank_recall(ranks, 10) == pytest.approx(100 * 4 / 6)
    assert rank_recall(ranks, 13) == pytest.approx(100 * 5 / 6)


def test_top1_percent_threshold_rounding():
    # CVUSA test set: 8884 aerial images -> rank < 88 in test_cvusa.py, < 89 in train_cvusa.py.
    assert top1_percent_threshold(8884) == 88
    assert top1_percent_threshold(8884, "train") == 89
    assert top1_percent_threshold(700) == 7      # 700 * 0.01 = 7.000000000000001
    assert top1_percent_threshold(99) == 0       # fewer than 100 images: the original's top-1% is 0
    with pytest.raises(InputError, match="top1_percent_rule"):
        top1_percent_threshold(10, "paper")


def test_cross_view_protocol_hand_worked():
    # Four aerial descriptors on a circle; query i's true match is i.
    db = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    q = torch.tensor([[1.0, 0.1], [0.9, 0.5], [0.0, -1.0], [0.0, -1.0]])
    q = q / q.norm(dim=1, keepdim=True)
    res = get_protocol("cross_view_rank")(q, db, _set([0, 1, 2, 3], "cross_view_rank"), k_values=(1, 2), topk=2)
    # q0 -> 0 beat it; q1 = (0.87, 0.49) scores 0.87 with item 0 > 0.49 with item 1 -> 1;
    # q2 = (0, -1) scores (0, 0, 0, 1): item 3 beats item 2, items 0 and 1 only tie -> 1; q3 -> 0.
    assert res.extra["ranks"].tolist() == [0, 1, 1, 0]
    assert res.metrics["R@1"] == pytest.approx(50.0)
    assert res.metrics["R@2"] == pytest.approx(100.0)
    assert res.metrics["R@1%"] == 0.0  # int(4 * 0.01) = 0: no query has rank < 0
    assert res.topk[:, 0].tolist() == [0, 0, 3, 3]
    assert res.correct[:, 0].tolist() == [True, False, False, True]


def test_skipped_queries_count_as_misses():
    db = torch.eye(3)
    q = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # query 0: the zero row of an unreadable image
    cross = get_protocol("cross_view_rank")(q, db, _set([0, 1], "cross_view_rank"), k_values=(1,),
                                            skipped_queries=[0])
    assert cross.extra["ranks"].tolist() == [3, 0] and cross.metrics["R@1"] == 50.0
    assert cross.correct[0].sum() == 0
    vpr = get_protocol("vpr_recall")(q, db, _set([np.array([0]), np.array([1])], "vpr_recall"), k_values=(1, 3),
                                     skipped_queries=[0])
    assert vpr.metrics == {"R@1": 50.0, "R@3": 50.0}


def test_vpr_protocol_wrong_ground_truth_length():
    with pytest.raises(InputError, match="ground truth for 1 queries"):
        get_protocol("vpr_recall")(torch.eye(2), torch.eye(2), _set([np.array([0])], "vpr_recall"))


@pytest.fixture(scope="module")
def ref():
    return np.load(REFERENCE)


def test_vpr_recall_matches_salad_original(ref):
    lengths = ref["salad_gt_len"]
    gt = np.split(ref["salad_gt_flat"], np.cumsum(lengths)[:-1])
    k_values = (1, 5, 10, 15, 20, 25)
    res = get_protocol("vpr_recall")(torch.from_numpy(ref["salad_q"]), torch.from_numpy(ref["salad_db"]),
                                     _set(gt, "vpr_recall"), k_values=k_values)
    assert torch.equal(res.topk, torch.from_numpy(ref["salad_pred"]))  # same ranking as faiss.IndexFlatL2
    assert [res.metrics[f"R@{k}"] for k in k_values] == pytest.approx(100 * ref["salad_recall"])
    # A random ranking (not from a search) through the counting alone.
    r = recall_at_k(correct_matrix(ref["salad_random_pred"], gt), k_values)
    assert [r[k] for k in k_values] == pytest.approx(100 * ref["salad_random_recall"])
    assert res.extra["recall_curve"]["recall"][0] == pytest.approx(res.metrics["R@1"])


@pytest.mark.parametrize("chunk", [None, 97])
def test_cross_view_rank_matches_cvft_original(ref, chunk):
    sat, grd = torch.from_numpy(ref["cvft_sat"]), torch.from_numpy(ref["cvft_grd"])
    n = sat.shape[0]
    protocol = get_protocol("cross_view_rank")
    options = {} if chunk is None else {"query_chunk": chunk, "db_chunk": chunk}
    from zoo.search import count_closer
    ranks = count_closer(grd, sat, torch.arange(n), **options)
    # Rank by rank, including aerial duplicates (which tie with the true match and do not count).
    assert torch.equal(ranks, torch.from_numpy(ref["cvft_ranks"]))
    res = protocol(grd, sat, _set(list(range(n)), "cross_view_rank"))
    ours = [res.metrics[m] for m in ("R@1", "R@5", "R@10", "R@1%")]
    assert ours == pytest.approx(100 * ref["cvft_test"])
    assert res.extra["top1_percent_k"] == 12
    train = protocol(grd, sat, _set(list(range(n)), "cross_view_rank"), top1_percent_rule="train")
    assert train.metrics["R@1%"] == pytest.approx(100 * float(ref["cvft_train_top1pct"]))
