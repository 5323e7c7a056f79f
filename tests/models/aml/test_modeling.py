"""aml_student against frozen outputs of the original AML/cirtorch code (tests/fixtures/reference/aml_original.safetensors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import zoo
from tests.fixtures.aml_reference import IMSIZE, seeded_images, seeded_state_dict, to_cirtorch
from zoo.errors import CheckpointError, InputError
from zoo.models.aml.convert import convert_aml
from zoo.models.aml.modeling import aml_transforms

REF = Path(__file__).resolve().parents[2] / "fixtures" / "reference" / "aml_original.safetensors"
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


def _write_cirtorch(path: Path, state: dict[str, torch.Tensor], prefix: str, arch: str, lw: dict | None = None) -> Path:
    meta = {"architecture": arch, "pooling": "gem", "local_whitening": False, "regional": False, "whitening": False,
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    if lw is not None:
        meta["Lw"] = lw
    torch.save({"meta": meta, "state_dict": to_cirtorch(state, prefix)}, path)
    return path


def _numpy_whitening(state: dict[str, torch.Tensor], kind: str) -> dict[str, np.ndarray]:
    # as cirtorch's whitenlearn leaves them: m (D, 1), P (D, D) float64
    return {"m": state[f"whiten_{kind}.m"].numpy()[:, None], "P": state[f"whiten_{kind}.P"].double().numpy()}


@pytest.mark.parametrize("student,teacher,short", PAIRS)
def test_equals_original(student, teacher, short, reference, inputs, tmp_path: Path) -> None:
    """Seeded weights, written in the original checkpoint formats and converted, give the original's descriptors."""
    queries, database = inputs
    model = zoo.create_model(f"aml_student.{short}_{teacher}_asym", pretrained=False)
    state = seeded_state_dict(model)
    lw = {"retrieval-SfM-120k": {k: _numpy_whitening(state, k) for k in ("ss", "ms")}}
    t_path = _write_cirtorch(tmp_path / f"teacher_{teacher}.pth", state, "teacher", teacher, lw)
    s_path = _write_cirtorch(tmp_path / f"{student}_gem_contr_{teacher}.pth.tar", state, "student", student)
    torch.save(_numpy_whitening(state, "ss"), tmp_path / f"{student}_gem_contr_{teacher}_whitening.pth")

    sd, cfg = convert_aml(s_path, teacher_checkpoint=t_path)
    assert cfg["variant"] == {"student": student, "teacher": teacher, "asymmetric": True, "whitening": True}
    assert cfg["variant_tag"] == f"{short}_{teacher}_asym" and sd.keys() == state.keys()
    for k in state:
        torch.testing.assert_close(sd[k].float(), state[k].float(), atol=1e-7, rtol=0)
    model.load_state_dict(sd)
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

    # symmetric: the student with its own whitening file (found beside it; one {m, P} for both scales)
    sd, cfg = convert_aml(s_path)
    assert cfg["variant_tag"] == f"{short}_{teacher}" and not any(k.startswith("teacher.") for k in sd)
    sym = zoo.create_model("aml_student", pretrained=False, **cfg["variant"])
    sym.load_state_dict(sd)
    for ms in ("ss", "ms"):
        sym.multiscale = ms == "ms"
        torch.testing.assert_close(_encode(sym.encode_query, queries), reference[f"{short}_{teacher}.{ms}.sym.query"], atol=1e-5, rtol=0)
        torch.testing.assert_close(_encode(sym.encode_database, database), reference[f"{short}_{teacher}.{ms}.sym.database"], atol=1e-5, rtol=0)

    # the teacher alone (cirtorch's own test: multi-scale exponent = its own p)
    sd, cfg = convert_aml(t_path)
    assert cfg["variant_tag"] == f"teacher_{teacher}"
    alone = zoo.create_model("aml_student", pretrained=False, **cfg["variant"], multiscale=True)
    alone.load_state_dict(sd)
    torch.testing.assert_close(_encode(alone.encode_database, database), reference[f"teacher_{teacher}.ms.database"], atol=1e-5, rtol=0)


def test_converter_checks_the_teacher_fits(tmp_path: Path) -> None:
    model = zoo.create_model("aml_student.mobilenetv2_vgg16", pretrained=False)
    student = _write_cirtorch(tmp_path / "s.pth", seeded_state_dict(model), "student", "mobilenet_v2")
    fake_resnet = tmp_path / "r.pth"
    torch.save({"meta": {"architecture": "resnet101"}, "state_dict": {"features.4.0.conv1.weight": torch.zeros(1), "pool.p": torch.ones(1)}}, fake_resnet)
    with pytest.raises(CheckpointError, match="does not fit"):
        convert_aml(student, teacher_checkpoint=fake_resnet)
    with pytest.raises(CheckpointError, match="is a teacher"):
        convert_aml(fake_resnet, teacher_checkpoint=student)


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
    # the same when the crop was made elsewhere and carries its full image's size
    crop = big.crop((0, 0, 1000, 750))
    crop.info["full_size"] = big.size
    assert tf(crop).shape == (3, 384, 512)


def test_wrong_input_shape() -> None:
    model = zoo.create_model("aml_student.mobilenetv2_vgg16", pretrained=False)
    with pytest.raises(InputError, match="B, 3, H, W"):
        model.encode_query(torch.zeros(1, 1, 32, 32))
