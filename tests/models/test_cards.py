"""Weights belong to variants: cards, pretrained=True per variant, preprocessing records."""

from __future__ import annotations

import json

import pytest
import torch

import zoo
import zoo.hub
from zoo.errors import UnknownNameError, WeightsUnavailableError
from zoo.models import get_model_info


@pytest.fixture
def no_network(monkeypatch):
    """Any download attempt fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(zoo.hub, "download_hub_file", refuse)
    monkeypatch.setattr(zoo.hub, "download_url", refuse)


def test_a_variant_without_weights_fails_at_once_naming_those_with_weights(no_network):
    with pytest.raises(WeightsUnavailableError, match=r"dinov2_salad\.2048_64 has no published weights.*dinov2_salad\.8192_256"):
        zoo.create_model("dinov2_salad.2048_64", pretrained=True)
    with pytest.raises(WeightsUnavailableError, match="published no trained weights"):
        zoo.create_model("ucdir_moco.office_home_art_clipart")


def test_list_pretrained_names_the_variants_with_weights():
    pretrained = zoo.list_pretrained()
    assert "dinov2_salad.8192_256" in pretrained and "dycl_resnet.resnet50_512" in pretrained
    assert "dinov2_salad.2048_64" not in pretrained and not any(p.startswith("ucdir_moco.") for p in pretrained)
    for name in pretrained:
        arch, _, tag = name.partition(".")
        assert get_model_info(arch).variant(tag).weights


def test_each_weight_source_loads_into_its_own_variant():
    # SALAD's release is the 8192+256 model: only that variant lists it.
    info = get_model_info("dinov2_salad")
    assert [s.file.url.rsplit("/", 1)[-1] for s in info.variant("8192_256").weights] == ["dino_salad.ckpt"]
    # AML: every student variant loads its own student file; asymmetric ones add their teacher.
    aml = get_model_info("aml_student")
    sym, asym = aml.variant("mobilenetv2_vgg16").weights[0], aml.variant("mobilenetv2_vgg16_asym").weights[0]
    assert sym.file.url.endswith("mobilenet_v2_gem_contr_vgg16.pth.tar") and set(sym.extra_files) == {"whitening"}
    assert asym.file == sym.file and set(asym.extra_files) == {"teacher_checkpoint"}


def test_unknown_variant_names_the_known_ones():
    with pytest.raises(UnknownNameError, match="unknown variant 'bogus'.*Known variants: cvusa, cvact"):
        zoo.create_model("cvft_vgg.bogus", pretrained=False)


def test_transforms_come_from_the_preprocessing_record():
    model, (query_tf, database_tf) = zoo.create_model_and_transforms("dycl_resnet", pretrained=False)
    record = model.zoo_config["preprocessing"]
    assert record == get_model_info("dycl_resnet").preprocessing_record()
    assert repr(query_tf) == repr(zoo.get_transforms("dycl_resnet")[0])
    # a field of the record changes the transform
    small, _ = zoo.get_transforms("dycl_resnet", center_crop=112)
    from PIL import Image
    assert small(Image.new("RGB", (300, 200))).shape == (3, 112, 112)


def test_an_exported_folder_carries_its_preprocessing(tmp_path):
    from zoo.export import export_pretrained

    model = zoo.create_model("dycl_resnet", pretrained=False)
    model.zoo_config["preprocessing"] = {**model.zoo_config["preprocessing"], "center_crop": 160}
    export_pretrained(model, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["preprocessing"]["center_crop"] == 160
    loaded, (query_tf, _) = zoo.create_model_and_transforms("dycl_resnet", pretrained=str(tmp_path / "out"))
    from PIL import Image
    assert query_tf(Image.new("RGB", (300, 300))).shape == (3, 160, 160)
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_domain_pairs_and_training_sets_are_variants():
    ucdir = get_model_info("ucdir_moco")
    assert "office_home_clipart_product" in ucdir.variants and "domainnet_real_sketch" in ucdir.variants
    pair = ucdir.variant("office_home_clipart_product")
    assert {r.benchmark for r in pair.published} == {"Clipart -> Product", "Product -> Clipart"}
    assert pair.recipe == "ucdir-office-home" and pair.table == "office_home"
    cvft = get_model_info("cvft_vgg")
    assert list(cvft.variants) == ["cvusa", "cvact"]
    assert {r.benchmark for r in cvft.variant("cvact").published} == {"cvact_val"}
