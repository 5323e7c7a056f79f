"""aml_student pretrained=True: the authors' files for the variant built, from a loopback server."""

from __future__ import annotations

import io

import numpy as np
import torch

import zoo
from tests.fixtures.aml_reference import seeded_state_dict, to_cirtorch
from zoo.models.aml.cards import TEACHER_FILES, student_file, whitening_file


def _blob(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_release_for_each_variant(hub_server, monkeypatch, isolated_caches) -> None:
    model = zoo.create_model("aml_student.mobilenetv2_vgg16_asym", pretrained=False)
    state = seeded_state_dict(model)
    lw = {k: {"m": state[f"whiten_{k}.m"].numpy()[:, None], "P": state[f"whiten_{k}.P"].numpy()} for k in ("ss", "ms")}
    meta = {"pooling": "gem", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    fn = student_file("mobilenet_v2", "vgg16")
    base = hub_server.add_release(fn, _blob({"meta": {**meta, "architecture": "mobilenet_v2"},
                                             "state_dict": to_cirtorch(state, "student")}))
    # the student's own whitening file differs from the teacher's: symmetric use must pick it
    own = {"m": np.zeros((512, 1), np.float32), "P": np.eye(512, dtype=np.float32)[::-1].copy()}
    hub_server.add_release(whitening_file(fn), _blob(own))
    hub_server.add_release(TEACHER_FILES["vgg16"], _blob({"meta": {**meta, "architecture": "vgg16", "Lw": {"retrieval-SfM-120k": lw}},
                                                          "state_dict": to_cirtorch(state, "teacher")}))
    monkeypatch.setenv("ZOO_AML_BASE_URL", base)
    monkeypatch.setenv("ZOO_CIRTORCH_BASE_URL", base)

    asym = zoo.create_model("aml_student.mobilenetv2_vgg16_asym", pretrained=True)
    for k, v in asym.state_dict().items():
        torch.testing.assert_close(v.float(), state[k].float(), atol=0, rtol=0)

    sym = zoo.create_model("aml_student.mobilenetv2_vgg16", pretrained=True)
    assert torch.equal(sym.whiten_ss.P, torch.from_numpy(own["P"])) and torch.equal(sym.whiten_ms.P, sym.whiten_ss.P)
    assert torch.equal(sym.student.proj.weight, state["student.proj.weight"])

    alone = zoo.create_model("aml_student", pretrained="teacher_vgg16")
    assert alone.student is None and torch.equal(alone.whiten_ms.P, state["whiten_ms.P"])

    # converted once: a second build makes no request, even offline
    hub_server.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    zoo.create_model("aml_student.mobilenetv2_vgg16_asym", pretrained=True)
    assert hub_server.requests == []
