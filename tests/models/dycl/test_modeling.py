"""dycl_resnet: equal to the original resnet_ln network on seeded weights; released checkpoint read safely."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from tests.fixtures.dycl_reference import original_state_dict, seeded_inputs, to_original_key
from zoo.errors import CheckpointError, InputError

REFERENCE = Path(__file__).resolve().parents[2] / "fixtures" / "reference" / "dycl_network.npz"
THROWAWAY = '''
from pathlib import Path
MARKER = Path(__file__).with_name("executed")

class DictConfig:
    """Stands in for omegaconf.DictConfig; touching it at load time would leave a marker file."""
    def __init__(self, content):
        self.content = content
    def __setstate__(self, state):
        MARKER.write_text("unpickled")
        self.__dict__.update(state)
'''


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor], Path]:
    """A file of the released checkpoint's shape: net_state (original keys), an OmegaConf-like object
    of a module that no longer exists at load time, RNG states, optimiser state, epoch."""
    root = tmp_path_factory.mktemp("dycl_ckpt")
    pkg = root / "throwaway_omegaconf"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(THROWAWAY)
    sys.path.insert(0, str(root))
    import throwaway_omegaconf
    config = throwaway_omegaconf.DictConfig({"model": {"name": "RetrievalNet_two"}})
    model = zoo.create_model("dycl_resnet", pretrained=False)
    shapes = {to_original_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    net_state = original_state_dict(shapes)
    state = {
        "net_state": net_state,
        "optimizer_state": {"backbone": {"state": {}, "param_groups": [{"lr": 5e-5, "params": [0]}]}},
        "scheduler_on_epoch_state": [{"last_epoch": 20}], "criterion_state": [{"super": {"weight": torch.zeros(3, 2)}}],
        "epoch": 20, "config": config, "command": "python run_dycl.py", "metrics": None,
        "RANDOM_STATE": random.getstate(), "NP_STATE": np.random.get_state(),
        "TORCH_STATE": torch.random.get_rng_state(), "TORCH_CUDA_STATE": [],
    }
    path = root / "dycl_20epoch.ckpt"
    torch.save(state, path)
    sys.path.remove(str(root))
    del sys.modules["throwaway_omegaconf"]
    (pkg / "__init__.py").unlink()  # the class cannot be imported any more
    return path, net_state, pkg / "executed"


def _reference() -> dict[str, np.ndarray]:
    return dict(np.load(REFERENCE))


def test_equal_to_original_network(checkpoint) -> None:
    path, _, marker = checkpoint
    torch.manual_seed(0)
    model = zoo.create_model("dycl_resnet", pretrained=str(path))
    assert not marker.exists(), "the foreign config object was executed"
    ref = _reference()
    x224, x160 = seeded_inputs()
    with torch.no_grad():
        out224, out160 = model.encode_query(x224), model.encode_database(x160)
    assert out224.dtype == torch.float32 and out224.shape == (2, 512)
    diff = max((out224 - torch.from_numpy(ref["eval_224"])).abs().max().item(),
               (out160 - torch.from_numpy(ref["eval_160x192"])).abs().max().item())
    assert diff < 1e-4, diff
    torch.testing.assert_close(out224.norm(dim=1), torch.ones(2))
    # train(): BatchNorm statistics stay frozen (as the original's freeze_batch_norm), affine params train
    model.train()
    assert all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert model.backbone.bn1.weight.requires_grad
    with torch.no_grad():
        train224 = model(x224)
    assert (train224 - torch.from_numpy(ref["train_224"])).abs().max().item() < 1e-4
    running = model.backbone.bn1.running_mean.clone()
    model(x224[:1])
    assert torch.equal(running, model.backbone.bn1.running_mean)


def test_converter_reads_only_tensors(checkpoint) -> None:
    path, net_state, marker = checkpoint
    info = zoo.get_model_info("dycl_resnet")
    state, config = info.converter(path)
    assert not marker.exists()
    assert config["variant"] == {"embed_dim": 512} and config["source"]["epoch"] == 20
    assert torch.equal(state["backbone.layer3.2.conv2.weight"], net_state["backbone.6.2.conv2.weight"])
    assert torch.equal(state["fc.bias"], net_state["fc.bias"])
    # a DataParallel checkpoint ("module." prefix) converts to the same weights
    dp = path.with_name("dp.ckpt")
    torch.save({"net_state": {f"module.{k}": v for k, v in net_state.items()}, "epoch": 3}, dp)
    dp_state, _ = info.converter(dp)
    assert dp_state.keys() == state.keys()


def test_converter_rejects_other_checkpoints(tmp_path: Path) -> None:
    info = zoo.get_model_info("dycl_resnet")
    other = tmp_path / "salad.ckpt"
    torch.save({"state_dict": {"aggregator.x": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="net_state"):
        info.converter(other)
    three = tmp_path / "three.ckpt"
    torch.save({"net_state": {"backbone_1.0.weight": torch.zeros(1), "fc.weight": torch.zeros(512, 2048)}}, three)
    with pytest.raises(CheckpointError, match="backbone_1"):
        info.converter(three)


def test_pretrained_true_downloads_release_from_hub(checkpoint, hub_server, monkeypatch) -> None:
    path, net_state, marker = checkpoint
    hub_server.add_commit("www0wwwjs1/dycl", {"dycl_20epoch.ckpt": path.read_bytes()})
    model = zoo.create_model("dycl_resnet", pretrained=True)
    assert not marker.exists()
    assert torch.equal(model.backbone.conv1.weight, net_state["backbone.0.weight"])
    assert "dycl_20epoch.ckpt" in model.zoo_config["weights"]
    # converted once and cached: offline, a second build needs no request
    hub_server.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = zoo.create_model("dycl_resnet", pretrained=True)
    assert torch.equal(again.fc.weight, model.fc.weight)
    assert not [r for r in hub_server.requests if "dycl" in r[1]]


def test_transform_and_input_errors() -> None:
    q_tf, d_tf = zoo.get_transforms("dycl_resnet")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 512, 3), dtype=np.uint8))
    x = q_tf(img)
    assert x.shape == (3, 224, 224)
    # squash to 256x256 (not shorter side), then centre crop 224, ImageNet normalisation
    ref = np.asarray(img.resize((256, 256), Image.BILINEAR), dtype=np.float32)[16:240, 16:240] / 255.0
    ref = (ref - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), ref, atol=1e-5)
    assert torch.equal(d_tf(img), x)
    model = zoo.create_model("dycl_resnet", pretrained=False)
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(1, 1, 32, 32))


def test_amp_option_is_a_no_op_on_cpu() -> None:
    torch.manual_seed(0)
    model = zoo.create_model("dycl_resnet", pretrained=False, amp=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        model.amp = False
        assert torch.equal(out, model(x))


def test_cli_convert_writes_a_loadable_folder(checkpoint, tmp_path: Path) -> None:
    from zoo.__main__ import main

    path, net_state, marker = checkpoint
    out = tmp_path / "converted"
    assert main(["convert", "dycl_resnet", "--checkpoint", str(path), "--out", str(out)]) == 0
    assert not marker.exists()
    import json
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "dycl_resnet" and config["variant"] == {"embed_dim": 512}
    assert len(config["source"]["sha256"]) == 64
    model = zoo.create_model("dycl_resnet", pretrained=str(out))
    assert torch.equal(model.fc.weight, net_state["fc.weight"])


def test_imagenet_init_loads_torchvision_resnet50_weights(monkeypatch) -> None:
    """The 'imagenet' source asks timm for resnet50.tv_in1k (torchvision's IMAGENET1K_V1, which the
    original loads); the download is replaced by a seeded network here."""
    import timm

    calls = []
    real = timm.create_model

    def fake(name, pretrained=False, **kwargs):
        calls.append((name, pretrained))
        torch.manual_seed(123)
        return real("resnet50", pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake)
    model = zoo.create_model("dycl_resnet", pretrained="imagenet")
    assert ("resnet50.tv_in1k", True) in calls
    torch.manual_seed(123)
    expected = real("resnet50", pretrained=False, num_classes=0).state_dict()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, expected[k]), k
