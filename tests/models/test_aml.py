"""aml_student against frozen outputs of the original AML/cirtorch code (tests/fixtures/reference/aml_original.safetensors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import zoo
from tests.fixtures.aml_reference import IMSIZE, seeded_images, seeded_state_dict, to_cirtorch
from zoo.convert.aml import convert_aml
from zoo.errors import CheckpointError, InputError
from zoo.models.aml import aml_transforms

REF = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "aml_original.safetensors"
PAIRS = [("mobilenet_v2", "resnet101", "mobilenetv2"), ("efficientnet_b3", "vgg16", "efficientnetb3")]


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(str(REF))


@pytest.fixture(scope="module")
def inputs() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    images, boxes = seeded_images()
    tf, _ = aml_transforms(IMSIZE)
    return [tf(im, box)[None] for im, box in zip(images, boxes)], [tf(im)[None] for im in images]


def _encode(fn, xs: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x) for x in xs])


@pytest.mark.parametrize("student,teacher,short", PAIRS)
def test_equals_original(student, teacher, short, reference, inputs) -> None:
    queries, database = inputs
    model = zoo.create_model(f"aml_student.{short}_{teacher}_asym", pretrained=False)
    state = seeded_state_dict(model)
    model.load_state_dict(state)
    for ms in ("ss", "ms"):
        model.multiscale = ms == "ms"
        # asymmetric: student queries, teacher database (student's p), teacher whitening on both sides
        q, db = _encode(model.encode_query, queries), _encode(model.encode_database, database)
        torch.testing.assert_close(q, reference[f"{short}_{teacher}.{ms}.asym.query"], atol=1e-5, rtol=0)
        torch.testing.assert_close(db, reference[f"{short}_{teacher}.{ms}.asym.database"], atol=1e-5, rtol=0)
        assert (db[0] - db[1]).abs().max() > 1e-3  # the images are told apart (well above atol)
        if ms == "ms":
            model.teacher_msp = "own"
            own = _encode(model.encode_database, database)
            model.teacher_msp = "student"
            assert (own - reference[f"{short}_{teacher}.ms.asym.database"]).abs().max() > 1e-4
    # symmetric: the student with its own whitening file (one {m, P} for single- and multi-scale)
    sym = zoo.create_model(f"aml_student.{short}_{teacher}", pretrained=False)
    sym_state = {k: v for k, v in state.items() if not k.startswith("teacher.")}
    sym_state["whiten_ms.m"], sym_state["whiten_ms.P"] = state["whiten_ss.m"], state["whiten_ss.P"]
    sym.load_state_dict(sym_state)
    for ms in ("ss", "ms"):
        sym.multiscale = ms == "ms"
        torch.testing.assert_close(_encode(sym.encode_query, queries), reference[f"{short}_{teacher}.{ms}.sym.query"], atol=1e-5, rtol=0)
        torch.testing.assert_close(_encode(sym.encode_database, database), reference[f"{short}_{teacher}.{ms}.sym.database"], atol=1e-5, rtol=0)


def _write_cirtorch(path: Path, state: dict[str, torch.Tensor], prefix: str, arch: str, lw: dict | None = None) -> Path:
    meta = {"architecture": arch, "pooling": "gem", "local_whitening": False, "regional": False, "whitening": False,
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    if lw is not None:
        meta["Lw"] = lw
    torch.save({"meta": meta, "state_dict": to_cirtorch(state, prefix)}, path)
    return path


def test_converter_roundtrip(tmp_path: Path) -> None:
    model = zoo.create_model("aml_student.mobilenetv2_resnet101_asym", pretrained=False)
    state = seeded_state_dict(model)
    np_w = {k: {"m": state[f"whiten_{k}.m"].numpy()[:, None], "P": state[f"whiten_{k}.P"].double().numpy()} for k in ("ss", "ms")}
    teacher = _write_cirtorch(tmp_path / "teacher.pth", state, "teacher", "resnet101", {"retrieval-SfM-120k": np_w})
    student = _write_cirtorch(tmp_path / "mobilenet_v2_gem_contr_resnet101.pth.tar", state, "student", "mobilenet_v2")

    sd, cfg = convert_aml(student, teacher_checkpoint=teacher)
    assert cfg["variant"] == {"student": "mobilenet_v2", "teacher": "resnet101", "asymmetric": True, "whitening": True}
    assert cfg["variant_tag"] == "mobilenetv2_resnet101_asym"
    assert sd.keys() == state.keys()
    for k in state:
        torch.testing.assert_close(sd[k].float(), state[k].float(), atol=1e-7, rtol=0)

    # symmetric student: its whitening file is found beside it and serves both scales
    torch.save(np_w["ss"], tmp_path / "mobilenet_v2_gem_contr_resnet101_whitening.pth")
    sd, cfg = convert_aml(student)
    assert cfg["variant_tag"] == "mobilenetv2_resnet101" and cfg["variant"]["whitening"]
    torch.testing.assert_close(sd["whiten_ms.P"], state["whiten_ss.P"])
    assert not any(k.startswith("teacher.") for k in sd)

    # the teacher alone
    sd, cfg = convert_aml(teacher)
    assert cfg["variant_tag"] == "teacher_resnet101"
    m = zoo.create_model("aml_student", pretrained=False, **cfg["variant"])
    m.load_state_dict(sd)

    # a teacher passed as the student's teacher must fit its size
    vgg = zoo.create_model("aml_student.teacher_vgg16", pretrained=False)
    vgg_path = _write_cirtorch(tmp_path / "vgg.pth", seeded_state_dict(vgg), "teacher", "vgg16")
    with pytest.raises(CheckpointError, match="does not fit"):
        convert_aml(student, teacher_checkpoint=vgg_path)


def test_converter_refuses_other_checkpoints(tmp_path: Path) -> None:
    torch.save({"state_dict": {"backbone.weight": torch.zeros(3)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="pool.p"):
        convert_aml(tmp_path / "other.pth")
    torch.save({"meta": {"architecture": "efficientnet_b3_new"}, "state_dict": {"pool.p": torch.ones(1)}}, tmp_path / "e.pth")
    with pytest.raises(CheckpointError, match="efficientnet_b3_new"):
        convert_aml(tmp_path / "e.pth")


def test_transform_never_upsamples_and_crops_like_cirtorch() -> None:
    from PIL import Image
    tf, _ = aml_transforms(1024)
    small = Image.fromarray(np.zeros((300, 200, 3), np.uint8))
    assert tf(small).shape == (3, 300, 200)
    big = Image.fromarray(np.zeros((1500, 2000, 3), np.uint8))
    assert tf(big).shape == (3, 768, 1024)
    # a 1000x750 box of a 2000-px-wide image gets the full image's factor (1024/2000)
    assert tf(big, (0, 0, 1000, 750)).shape == (3, 384, 512)


def test_wrong_input_shape() -> None:
    model = zoo.create_model("aml_student.mobilenetv2_vgg16", pretrained=False)
    with pytest.raises(InputError, match="B, 3, H, W"):
        model.encode_query(torch.zeros(1, 1, 32, 32))
