"""ucdir_moco: equal to the original UCDIR key encoder on seeded weights; MoCo v2 / UCDIR checkpoints read safely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from tests.fixtures import ucdir_reference as R
from zoo.errors import CheckpointError, InputError, WeightsUnavailableError

REF = dict(np.load(Path(__file__).resolve().parents[2] / "fixtures" / "reference" / "ucdir_original.npz"))


@pytest.fixture(scope="module")
def weights() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    shapes = R.encoder_shapes("resnet50")
    return R.seeded_state_dict(shapes, R.Q_SEED), R.seeded_state_dict(shapes, R.K_SEED)


def _ucdir_checkpoint(path: Path, wq: dict, wk: dict) -> Path:
    """A UCDIR model's state dict as builder.UCDIR.state_dict() names it (saved from DataParallel)."""
    state = {f"module.encoder_q.{k}": v for k, v in wq.items()}
    state.update({f"module.encoder_k.{k}": v for k, v in wk.items()})
    state.update({"module.queue_A": torch.randn(128, 5), "module.queue_A_ptr": torch.zeros(1, dtype=torch.long),
                  "module.queue_B": torch.randn(128, 4), "module.queue_B_ptr": torch.zeros(1, dtype=torch.long)})
    torch.save({"epoch": 199, "arch": "resnet50", "state_dict": state}, path)
    return path


def test_key_encoder_equals_the_original(tmp_path: Path, weights) -> None:
    wq, wk = weights
    ckpt = _ucdir_checkpoint(tmp_path / "ucdir.pth.tar", wq, wk)
    model = zoo.create_model("ucdir_moco", pretrained=str(ckpt))
    assert "ucdir.pth.tar" in model.zoo_config["weights"]
    xa, xb = R.seeded_images(2, (224, 224), 1), R.seeded_images(2, (224, 224), 2)
    xs = R.seeded_images(2, (160, 192), 3)
    with torch.no_grad():
        # the original embeds both domains in one batch; in eval mode batching does not matter
        out = model.encode_query(torch.cat([xa, xb]))
        small = model.encode_database(xs)
    assert out.shape == (4, 128) and out.dtype == torch.float32
    diff = max(np.abs(out[:2].numpy() - REF["eval_A"]).max(), np.abs(out[2:].numpy() - REF["eval_B"]).max(),
               np.abs(small.numpy() - REF["eval_160x192"]).max())
    assert diff < 1e-4, diff
    torch.testing.assert_close(out.norm(dim=1), torch.ones(4))


def test_converter_picks_the_key_encoder_of_ucdir_and_the_query_encoder_of_moco(tmp_path: Path, weights) -> None:
    wq, wk = weights
    info = zoo.get_model_info("ucdir_moco")
    state, config = info.converter(_ucdir_checkpoint(tmp_path / "u.pth.tar", wq, wk))
    assert config["variant"] == {"arch": "resnet50", "dim": 128} and config["source"]["encoder"] == "encoder_k"
    assert torch.equal(state["encoder.fc.2.weight"], wk["fc.2.weight"])
    forced, _ = info.converter(tmp_path / "u.pth.tar", encoder="query")
    assert torch.equal(forced["encoder.layer4.2.bn3.running_var"], wq["layer4.2.bn3.running_var"])
    # MoCo v2 release: module.encoder_q.* + (training checkpoints) encoder_k and the queue
    moco = {f"module.encoder_q.{k}": v for k, v in wq.items()}
    moco.update({f"module.encoder_k.{k}": v for k, v in wk.items()})
    moco.update({"module.queue": torch.randn(128, 8), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": moco, "optimizer": {"state": {}}}, tmp_path / "m.tar")
    state, config = info.converter(tmp_path / "m.tar")
    assert config["source"] == {"encoder": "encoder_q", "format": "moco", "epoch": 800}
    assert torch.equal(state["encoder.conv1.weight"], wq["conv1.weight"])


def test_converter_rejects_other_checkpoints(tmp_path: Path, weights) -> None:
    info = zoo.get_model_info("ucdir_moco")
    torch.save({"state_dict": {"aggregator.x": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="aggregator.x"):
        info.converter(tmp_path / "other.ckpt")
    v1 = {f"module.encoder_q.{k}": v for k, v in weights[0].items() if not k.startswith("fc.")}
    v1["module.encoder_q.fc.weight"] = torch.zeros(128, 2048)
    torch.save({"state_dict": v1}, tmp_path / "moco_v1.tar")
    with pytest.raises(CheckpointError, match="MoCo v1"):
        info.converter(tmp_path / "moco_v1.tar")


def test_pretrained_true_explains_and_moco_v2_downloads(tmp_path: Path, weights, hub_server, monkeypatch) -> None:
    with pytest.raises(WeightsUnavailableError, match="no trained weights.*ucdir-office-home"):
        zoo.create_model("ucdir_moco", pretrained=True)
    moco = {f"module.encoder_q.{k}": v for k, v in weights[0].items()}
    blob = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    torch.save({"epoch": 800, "arch": "resnet50", "state_dict": moco}, blob)
    monkeypatch.setenv("ZOO_MOCO_BASE_URL", hub_server.add_release(blob.name, blob.read_bytes()))
    model = zoo.create_model("ucdir_moco", pretrained="moco_v2")
    assert torch.equal(model.encoder.layer1[0].conv2.weight, weights[0]["layer1.0.conv2.weight"])
    assert zoo.get_model_info("ucdir_moco").weights["moco_v2"].licence == "CC-BY-NC 4.0"


def test_transform_and_input_errors() -> None:
    q_tf, d_tf = zoo.get_transforms("ucdir_moco")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 512, 3), dtype=np.uint8))
    x = q_tf(img)
    assert x.shape == (3, 224, 224)
    # shorter side to 256 (aspect kept, long side int(256 * 512 / 300) = 436), centre crop 224, ImageNet mean/std
    resized = np.asarray(img.resize((436, 256), Image.BILINEAR), dtype=np.float32) / 255.0
    top, left = (256 - 224) // 2, int(round((436 - 224) / 2.0))
    ref = (resized[top:top + 224, left:left + 224] - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), ref, atol=1e-5)
    assert torch.equal(d_tf(img), x)
    model = zoo.create_model("ucdir_moco", pretrained=False, arch="resnet18")
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(1, 1, 32, 32))
