"""dinov2_salad: equality with the original (frozen reference), shapes, errors, frozen blocks, weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import zoo
from tests.fixtures.salad_reference import seeded_images, seeded_state_dict
from zoo.errors import InputError, WeightsUnavailableError

REFERENCE = Path(__file__).resolve().parents[2] / "fixtures" / "reference" / "salad_depth2.safetensors"
FULL_REFERENCE = REFERENCE.with_name("salad_full224.safetensors")
VARIANTS = {"8192_256": 8448, "2048_64": 2112, "512_32": 544}


def _reference_model(tag: str) -> torch.nn.Module:
    model = zoo.create_model("dinov2_salad", pretrained=False, variant=tag, depth=2, num_trainable_blocks=1)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(seeded_state_dict(shapes))
    return model.eval()


@pytest.mark.parametrize("tag", list(VARIANTS))
def test_matches_original_reference(tag: str) -> None:
    model = _reference_model(tag)
    with safe_open(str(REFERENCE), "pt") as f:
        assert f.metadata()["depth"] == "2"
        keys = [k for k in f.keys() if k.startswith(tag + ".")]
        assert len(keys) == 3, keys
        for key in keys:
            h, w = (int(v) for v in key.split(".")[1].split("x"))
            expected = f.get_tensor(key)
            with torch.no_grad():
                ours = model(seeded_images(expected.shape[0], h, w))
            assert ours.shape == expected.shape == (2, VARIANTS[tag])
            assert (ours - expected).abs().max().item() < 1e-4, key
            # The check has teeth: the two images give different descriptors.
            assert (expected[0] - expected[1]).abs().max().item() > 1e-3


def test_full_depth_model_matches_original_reference() -> None:
    """All 12 blocks (8 frozen + 4 trainable) at 224x224: one image, the default variant."""
    model = zoo.create_model("dinov2_salad", pretrained=False)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(seeded_state_dict(shapes))
    with safe_open(str(FULL_REFERENCE), "pt") as f:
        assert f.metadata()["depth"] == "12" and f.metadata()["num_trainable_blocks"] == "4"
        expected = f.get_tensor("8192_256.224x224")
    with torch.no_grad():
        ours = model.eval()(seeded_images(1, 224, 224))
    assert (ours - expected).abs().max().item() < 1e-4


def test_reference_fails_with_timm_position_interpolation(monkeypatch: pytest.MonkeyPatch) -> None:
    """timm's own pos-embed resampling is not DINOv2's: the reference must catch the difference."""
    from timm.layers import resample_abs_pos_embed

    import zoo.models.salad.modeling as salad

    def timm_way(pos_embed, grid, num_prefix_tokens=1, **_):
        return resample_abs_pos_embed(pos_embed, new_size=list(grid), num_prefix_tokens=num_prefix_tokens)

    monkeypatch.setattr(salad, "resample_pos_embed_dinov2", timm_way)
    model = _reference_model("512_32")
    with safe_open(str(REFERENCE), "pt") as f:
        expected = f.get_tensor("512_32.322x322")
    with torch.no_grad():
        ours = model(seeded_images(2, 322, 322))
    assert (ours - expected).abs().max().item() > 1e-4


def test_registry_dims_and_normalised_output() -> None:
    info = zoo.get_model_info("dinov2_salad")
    assert list(info.variants) == list(VARIANTS)
    for tag, dim in VARIANTS.items():
        assert info.dim(info.variant_kwargs(tag)) == dim
    model = zoo.create_model("dinov2_salad.512_32", pretrained=False, depth=1, num_trainable_blocks=1)
    assert model.zoo_config["descriptor_dim"] == 544
    x = torch.randn(2, 3, 126, 154)           # non-square, 9x11 patches
    with torch.no_grad():
        q, d = model.encode_query(x), model.encode_database(x)
    assert q.shape == (2, 544) and torch.allclose(q, d)
    assert torch.allclose(q.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_clear_errors_for_bad_inputs() -> None:
    model = zoo.create_model("dinov2_salad", pretrained=False, depth=1, num_trainable_blocks=1)
    with pytest.raises(InputError, match="multiples of 14.*225x224"):
        model(torch.randn(1, 3, 225, 224))
    with pytest.raises(InputError, match=r"\(B, 3, H, W\)"):
        model(torch.randn(3, 224, 224))
    with pytest.raises(InputError, match="more than 64 patch tokens, got 64"):
        model(torch.randn(1, 3, 112, 112))     # 8x8 = 64 patches for 64 clusters


def test_frozen_blocks_get_no_gradient() -> None:
    model = zoo.create_model("dinov2_salad.512_32", pretrained=False, depth=3, num_trainable_blocks=1).train()
    out = model(torch.randn(2, 3, 70, 70))
    out.sum().backward()
    vit = model.backbone
    for name, p in model.named_parameters():
        frozen = name.startswith(("backbone.blocks.0.", "backbone.blocks.1.", "backbone.patch_embed",
                                  "backbone.cls_token", "backbone.pos_embed"))
        assert p.requires_grad is not frozen, name
        assert (p.grad is None) is frozen, name
    assert vit.blocks[2].attn.qkv.weight.grad.abs().sum() > 0
    assert model.aggregator.dust_bin.grad is not None


def test_transforms_resize_to_322_and_normalise() -> None:
    query_tf, db_tf = zoo.get_transforms("dinov2_salad")
    img = Image.fromarray(np.full((480, 640, 3), 255, dtype=np.uint8))
    x = query_tf(img)
    assert x.shape == (3, 322, 322)
    expected = (1.0 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(x[:, 0, 0], expected, atol=1e-5)
    assert torch.equal(db_tf(img), x)
    with pytest.raises(InputError, match="multiple of 14"):
        zoo.get_transforms("dinov2_salad", image_size=320)


def test_pretrained_true_downloads_and_converts_the_release(hub_server, monkeypatch, tmp_path) -> None:
    """``pretrained=True`` fetches dino_salad.ckpt (here a 1-block stand-in on a loopback server) and converts it."""
    model = _reference_model("2048_64")
    state = {("backbone.model." + k[len("backbone."):] if k.startswith("backbone.") else k): v
             for k, v in model.state_dict().items()}
    state["backbone.model.mask_token"] = torch.zeros(1, 768)
    path = tmp_path / "dino_salad.ckpt"
    torch.save(state, path)
    monkeypatch.setenv("ZOO_SALAD_RELEASE_URL", hub_server.add_release("dino_salad.ckpt", path.read_bytes()))
    loaded = zoo.create_model("dinov2_salad", pretrained=True)
    assert loaded.zoo_config["variant_tag"] == "2048_64"
    assert loaded.zoo_config["descriptor_dim"] == 2112
    x = seeded_images(1, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_backbone_source_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE once, at first import: import it before setting it so
    # that the offline state does not leak into later tests of this process.
    import huggingface_hub.constants  # noqa: F401

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="vit_base_patch14_dinov2.lvd142m"):
        zoo.create_model("dinov2_salad", pretrained="backbone", depth=1, num_trainable_blocks=1)


def test_backbone_source_loads_dinov2_weights_from_the_hub(hub_server) -> None:
    """``pretrained="backbone"``: timm's DINOv2 file (here a 1-block stand-in) fills the ViT, SALAD stays random."""
    from safetensors.torch import save

    donor = zoo.create_model("dinov2_salad", pretrained=False, depth=1, num_trainable_blocks=1)
    timm_file = {k[len("backbone."):]: v.clone() + 0.5 for k, v in donor.state_dict().items() if k.startswith("backbone.")}
    timm_file["mask_token"] = torch.zeros(1, 768)          # DINOv2 checkpoints may carry it; it is dropped
    hub_server.add_commit("timm/vit_base_patch14_dinov2.lvd142m", {"model.safetensors": save(timm_file)})
    model = zoo.create_model("dinov2_salad", pretrained="backbone", depth=1, num_trainable_blocks=1)
    assert torch.equal(model.backbone.pos_embed, timm_file["pos_embed"])
    assert torch.equal(model.backbone.blocks[0].attn.qkv.weight, timm_file["blocks.0.attn.qkv.weight"])


def test_bf16_autocast_gives_float32_unit_descriptors_close_to_fp32() -> None:
    model = _reference_model("512_32")
    x = seeded_images(2, 126, 126)
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(x)
    assert half.dtype == torch.float32
    assert torch.allclose(half.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert (half * full).sum(-1).min() > 0.99
