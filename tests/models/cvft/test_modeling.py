"""cvft_vgg: equal to the TensorFlow original on frozen outputs, input checks, preprocessing, weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from tests.fixtures.cvft_reference import seeded_inputs, seeded_tf_variables
from tests.fixtures.tf_checkpoint import write_tf_checkpoint
from zoo.errors import InputError, WeightsUnavailableError
from zoo.models.cvft.modeling import CAFFE_BGR_MEAN, FeatureTransport

REFERENCE = Path(__file__).resolve().parents[2] / "fixtures" / "reference" / "cvft_tf_outputs.npz"


def test_converted_checkpoint_matches_the_tensorflow_original(tmp_path: Path) -> None:
    """Seeded weights written as a real TF checkpoint, converted by `python -m zoo convert`, give the
    descriptors the original ot_net.CVFT graph computed for them (tests/fixtures/reference/README.md)."""
    from zoo.__main__ import main

    prefix = write_tf_checkpoint(tmp_path / "model.ckpt", seeded_tf_variables(0))
    assert main(["convert", "cvft_vgg", "--checkpoint", str(prefix), "--out", str(tmp_path / "converted")]) == 0
    model = zoo.create_model("cvft_vgg", pretrained=str(tmp_path / "converted"))
    ground, aerial = seeded_inputs(0, batch=2)
    reference = np.load(REFERENCE)
    with torch.no_grad():
        g = model.encode_query(torch.from_numpy(ground[:1]).permute(0, 3, 1, 2).contiguous())
        a = model.encode_database(torch.from_numpy(aerial[:1]).permute(0, 3, 1, 2).contiguous())
    assert g.shape == a.shape == (1, 4096)
    assert float(np.abs(g.numpy() - reference["ground"]).max()) < 1e-4
    assert float(np.abs(a.numpy() - reference["aerial"]).max()) < 1e-4
    torch.testing.assert_close(g.norm(dim=1), torch.ones(1))


def test_wrong_input_sizes_are_named() -> None:
    model = zoo.create_model("cvft_vgg", pretrained=False)
    with pytest.raises(InputError, match=r"ground \(query\) images must be \(B, 3, 112, 616\).*got \(1, 3, 224, 1232\)"):
        model.encode_query(torch.zeros(1, 3, 224, 1232))
    with pytest.raises(InputError, match=r"aerial \(database\) images must be \(B, 3, 256, 256\)"):
        model.encode_database(torch.zeros(1, 3, 750, 750))
    with pytest.raises(InputError, match="aerial"):
        model.encode_database(torch.zeros(3, 256, 256))


def test_small_variant_shapes() -> None:
    model = zoo.create_model("cvft_vgg", pretrained=False, ground_size=(32, 160), aerial_size=(64, 64)).eval()
    with torch.no_grad():
        g, a = model(torch.randn(2, 3, 32, 160), torch.randn(2, 3, 64, 64))
    assert g.shape == a.shape == (2, 2 * 2 * 64)


def test_transport_plan_is_doubly_stochastic() -> None:
    torch.manual_seed(0)
    layer = FeatureTransport(channels=8, positions=16)
    plan = layer.plan(torch.rand(3, 8, 4, 4))
    torch.testing.assert_close(plan.sum(1), torch.ones(3, 16))               # exact after the last column step
    torch.testing.assert_close(plan.sum(2), torch.ones(3, 16), atol=1e-3, rtol=0)


def test_pretrained_true_offline_explains_where_the_weights_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match=r"(?s)drive.google.com/file/d/.*trained_model/CVACT/CVFT/model.ckpt"):
        zoo.create_model("cvft_vgg.cvact", pretrained=True)


def test_transforms_equal_the_original_opencv_pipeline(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:224, 0:1232]
    rgb = np.clip(np.stack([x % 256, y, (x + y) % 256], -1) + rng.normal(0, 10, (224, 1232, 3)), 0, 255).astype(np.uint8)
    path = tmp_path / "pano.jpg"
    Image.fromarray(rgb).save(path, quality=90)
    # PIL and cv2.imread decode the same JPEG to the same pixels (both libjpeg-turbo, same IDCT/upsampling)
    original = cv2.imread(str(path))
    with Image.open(path) as image:
        pil_rgb = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(pil_rgb[:, :, ::-1], original)
    # input_data_cvusa.py: INTER_AREA to 616x112, float32, minus Caffe BGR means
    expected = cv2.resize(original, (616, 112), interpolation=cv2.INTER_AREA).astype(np.float32)
    expected -= np.asarray(CAFFE_BGR_MEAN, dtype=np.float32)
    ground_tf, aerial_tf = zoo.get_transforms("cvft_vgg")
    with Image.open(path) as image:
        ours = ground_tf(image)
    assert ours.shape == (3, 112, 616) and ours.dtype == torch.float32
    np.testing.assert_array_equal(ours.permute(1, 2, 0).numpy(), expected)
    # CVACT_val files already have the network's size: the resize leaves them unchanged
    tile = np.ascontiguousarray(rgb[:, :256][np.arange(256) % 224])
    np.testing.assert_array_equal(aerial_tf(Image.fromarray(tile)).permute(1, 2, 0).numpy(),
                                  tile[:, :, ::-1].astype(np.float32) - np.asarray(CAFFE_BGR_MEAN, np.float32))


def test_vgg16_imagenet_init_copies_torchvision_layout_into_both_stacks(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    torch.manual_seed(0)
    source = timm.create_model("vgg16.tv_in1k", pretrained=False)
    calls = []

    def fake_create_model(name: str, pretrained: bool = False, **kwargs):  # no download in tests
        calls.append((name, pretrained))
        return source
    monkeypatch.setattr(timm, "create_model", fake_create_model)
    model = zoo.create_model("cvft_vgg", pretrained="vgg16_imagenet")
    assert calls == [("vgg16.tv_in1k", True)]
    for stack in (model.grd_vgg, model.sat_vgg):
        torch.testing.assert_close(stack.conv1_1.weight, source.features[0].weight)
        torch.testing.assert_close(stack.conv3_3.bias, source.features[14].bias)
        torch.testing.assert_close(stack.conv5_3.weight, source.features[28].weight)
