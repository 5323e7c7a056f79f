"""UCDIR losses and training step equal the original's (frozen outputs of conghui1002/UCDIR builder.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures import ucdir_reference as R
from zoo.models.ucdir.loss import (
    UCDIRLossWeights,
    cluster_contrast,
    cwcon_weight,
    distance_of_distance,
    instance_contrast,
    self_entropy,
    ucdir_loss,
)

REF = dict(np.load(Path(__file__).resolve().parents[2] / "fixtures" / "reference" / "ucdir_original.npz"))


def _losses(clusterings_a, clusterings_b):
    L = R.loss_inputs()
    qa, qb = L["q_A"].clone().requires_grad_(), L["q_B"].clone().requires_grad_()
    return (qa, qb), {
        "inst_A": instance_contrast(qa, L["k_A"], L["id_A"], L["bank_A"], 0.2),
        "inst_B": instance_contrast(qb, L["k_B"], L["id_B"], L["bank_B"], 0.2),
        "cwcon_A": cluster_contrast(qa, L["k_A"], L["id_A"], L["bank_A"], clusterings_a, 0.2, 0.2),
        "cwcon_B": cluster_contrast(qb, L["k_B"], L["id_B"], L["bank_B"], clusterings_b, 0.2, 0.2),
        "selfentropy": self_entropy(qa, qb, clusterings_a, clusterings_b, 0.01),
        "distofdist": distance_of_distance(qa, qb, clusterings_a, clusterings_b),
    }


@pytest.mark.parametrize("tag", ["", "_k3"])
def test_four_losses_equal_the_original(tag: str) -> None:
    L = R.loss_inputs()
    ca, cb = L["clusters_A"], L["clusters_B"]
    if tag == "_k3":
        ca, cb = ca[:1], cb[:1]
    (qa, qb), ours = _losses(ca, cb)
    for name, value in ours.items():
        assert abs(value.item() - float(REF[f"loss{tag}_{name}"])) < 1e-5, (name, float(value))
        grads = torch.autograd.grad(value, [qa, qb], retain_graph=True, allow_unused=True)
        for side, g in zip("AB", grads):
            key = f"grad{tag}_{name}_{side}"
            if key in REF:  # the original cannot backpropagate its cluster loss with two clusterings
                g = torch.zeros_like(qa) if g is None else g
                assert np.abs(g.numpy() - REF[key]).max() < 1e-5, key
    if tag:
        return
    # the confidence filter keeps some queries and drops others: the check covers both branches
    p = torch.cat([torch.softmax(L[f"k_{d}"] @ cen.t() / 0.2, 1).gather(1, im2c[L[f"id_{d}"]].view(-1, 1))
                   for d, clus in (("A", ca), ("B", cb)) for im2c, cen in clus])
    assert (p > 0.2).any() and (p <= 0.2).any()


def test_cluster_weight_ramp_follows_main_py() -> None:
    w = UCDIRLossWeights()  # office-home.sh: 0 -> 0.5 between epochs 20 and 100
    assert cwcon_weight(20, w) == 0.0 and cwcon_weight(21, w) == pytest.approx(0.5 / 80)
    assert cwcon_weight(60, w) == pytest.approx(0.25) and cwcon_weight(100, w) == 0.5 and cwcon_weight(199, w) == 0.5
    with pytest.raises(ValueError, match="selfentro_startepoch"):
        UCDIRLossWeights(cluster_start_epoch=30, selfentro_startepoch=10)


def test_loss_terms_switch_on_at_their_epochs() -> None:
    L = R.loss_inputs()
    args = ((L["q_A"], L["q_B"]), (L["k_A"], L["k_B"]), (L["id_A"], L["id_B"]), (L["bank_A"], L["bank_B"]))
    clus = (L["clusters_A"][:1], L["clusters_B"][:1])
    w = UCDIRLossWeights()
    _, early = ucdir_loss(*args, None, 5, w)
    assert sorted(early) == ["inst_A", "inst_B"]
    _, mid = ucdir_loss(*args, clus, 50, w)
    assert sorted(mid) == ["cwcon_A", "cwcon_B", "inst_A", "inst_B"]
    total, late = ucdir_loss(*args, clus, 150, w)
    expected = (late["inst_A"] + late["inst_B"]) / 2 + 0.5 * (late["cwcon_A"] + late["cwcon_B"]) / 2 \
        + 1.0 * late["selfentropy"] + 0.5 * late["distofdist"]
    assert float(total) == pytest.approx(float(expected), abs=1e-6)
    with pytest.raises(ValueError, match="k-means"):
        ucdir_loss(*args, None, 25, w)


def test_training_step_equals_the_original_forward() -> None:
    """Momentum update, shuffled split-BN keys, bank update before the losses, all four losses, backward."""
    from zoo.models.ucdir.modeling import UCDIRNet
    from zoo.models.ucdir.task import UCDIRModel, ucdir_step

    S = R.step_inputs()
    shapes = R.encoder_shapes("resnet18")
    q = UCDIRNet("resnet18", 128)
    q.encoder.load_state_dict(R.seeded_state_dict(shapes, R.Q_SEED))
    model = UCDIRModel(q, 0.999, key_bn_splits=2)
    model.encoder_k.encoder.load_state_dict(R.seeded_state_dict(shapes, R.K_SEED))
    model.train()
    banks = [S["bank_A"].clone(), S["bank_B"].clone()]
    batch = {k: S[k] for k in ("q_A", "k_A", "id_A", "q_B", "k_B", "id_B")}
    torch.manual_seed(R.STEP_SEED)
    total, parts = ucdir_step(model, batch, banks, (S["clusters_A"], S["clusters_B"]), R.STEP_EPOCH,
                              UCDIRLossWeights(**R.STEP_ARGS))
    total.backward()
    diffs = {"total": abs(total.item() - float(REF["step_total"]))}
    diffs.update({n: abs(float(v) - float(REF[f"step_{n}"])) for n, v in parts.items()})
    diffs["bank_A"] = np.abs(banks[0].numpy() - REF["step_bank_A"]).max()
    diffs["bank_B"] = np.abs(banks[1].numpy() - REF["step_bank_B"]).max()
    k = model.encoder_k.encoder
    diffs["k_bn1_mean"] = np.abs(k.bn1.running_mean.numpy() - REF["step_k_bn1_mean"]).max()
    diffs["k_bn1_var"] = np.abs(k.bn1.running_var.numpy() - REF["step_k_bn1_var"]).max()
    diffs["k_fc2"] = np.abs(k.fc[2].weight.detach().numpy() - REF["step_k_fc2_weight"]).max()
    diffs["q_fc2_grad"] = np.abs(q.encoder.fc[2].weight.grad.numpy() - REF["step_q_fc2_grad"]).max()
    diffs["q_conv1_grad"] = np.abs(q.encoder.conv1.weight.grad.numpy() - REF["step_q_conv1_grad"]).max()
    assert sorted(parts) == ["cwcon_A", "cwcon_B", "distofdist", "inst_A", "inst_B", "selfentropy"]
    assert max(diffs.values()) < 1e-4, diffs
