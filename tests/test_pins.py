"""Pins: every file a card downloads carries a sha256 (and, on the Hub, a commit). The files that do
not yet are listed here, frozen, so that the list can only shrink: a new unpinned source fails this
test, and so does a newly pinned one until it is struck off the list. Loading an unpinned file warns
once per file and process."""

from __future__ import annotations

import warnings

import pytest

import zoo.hub
from zoo.models.cards import DriveFile, HubFile, UrlFile, describe_file, is_pinned
from zoo.publish import unpinned_sources

AML = "http://files.inria.fr/aml/"
CIRTORCH = "http://cmp.felk.cvut.cz/cnnimageretrieval/data/networks/retrieval-SfM-120k/"

#: Files that could not be fetched from where the zoo was built, so nobody could hash them yet
#: (`python -m zoo publish` prints each one's sha256 and the line that pins it).
UNPINNED = {
    "hf-hub:timm/vit_base_patch14_dinov2.lvd142m/model.safetensors@main",
    "hf-hub:www0wwwjs1/dycl/dycl_20epoch.ckpt@main",
    CIRTORCH + "retrievalSfM120k-resnet101-gem-b80fb85.pth",
    CIRTORCH + "retrievalSfM120k-vgg16-gem-b4dcdc6.pth",
    AML + "efficientnet_b3_gem_contr_plus_resnet101.pth.tar",
    AML + "efficientnet_b3_gem_contr_plus_resnet101_whitening.pth",
    AML + "efficientnet_b3_gem_contr_plus_vgg16.pth.tar",
    AML + "efficientnet_b3_gem_contr_plus_vgg16_whitening.pth",
    AML + "efficientnet_b3_gem_contr_resnet101.pth.tar",
    AML + "efficientnet_b3_gem_contr_resnet101_whitening.pth",
    AML + "efficientnet_b3_gem_contr_vgg16.pth.tar",
    AML + "efficientnet_b3_gem_contr_vgg16_whitening.pth",
    AML + "efficientnet_b3_gem_dark_resnet101.pth.tar",
    AML + "efficientnet_b3_gem_dark_resnet101_whitening.pth",
    AML + "efficientnet_b3_gem_dark_vgg16.pth.tar",
    AML + "efficientnet_b3_gem_dark_vgg16_whitening.pth",
    AML + "efficientnet_b3_gem_ms_resnet101.pth.tar",
    AML + "efficientnet_b3_gem_ms_resnet101_whitening.pth",
    AML + "efficientnet_b3_gem_ms_vgg16.pth.tar",
    AML + "efficientnet_b3_gem_ms_vgg16_whitening.pth",
    AML + "efficientnet_b3_gem_reg_resnet101.pth.tar",
    AML + "efficientnet_b3_gem_reg_resnet101_whitening.pth",
    AML + "efficientnet_b3_gem_reg_vgg16.pthaa.tar",
    AML + "efficientnet_b3_gem_reg_vgg16_whitening.pth",
    AML + "efficientnet_b3_gem_rkd_resnet101.pth.tar",
    AML + "efficientnet_b3_gem_rkd_resnet101_whitening.pth",
    AML + "efficientnet_b3_gem_rkd_vgg16.pth.tar",
    AML + "efficientnet_b3_gem_rkd_vgg16_whitening.pth",
    AML + "efficientnet_b3_gem_triplet_resnet101.pth.tar",
    AML + "efficientnet_b3_gem_triplet_resnet101_whitening.pth",
    AML + "efficientnet_b3_gem_triplet_vgg16.pth.tar",
    AML + "efficientnet_b3_gem_triplet_vgg16_whitening.pth",
    AML + "mobilenet_v2_gem_contr_plus_resnet101.pth.tar",
    AML + "mobilenet_v2_gem_contr_plus_resnet101_whitening.pth",
    AML + "mobilenet_v2_gem_contr_plus_vgg16.pth.tar",
    AML + "mobilenet_v2_gem_contr_plus_vgg16_whitening.pth",
    AML + "mobilenet_v2_gem_contr_resnet101.pth.tar",
    AML + "mobilenet_v2_gem_contr_resnet101_whitening.pth",
    AML + "mobilenet_v2_gem_contr_vgg16.pth.tar",
    AML + "mobilenet_v2_gem_contr_vgg16_whitening.pth",
    AML + "mobilenet_v2_gem_dark_resnet101.pth.tar",
    AML + "mobilenet_v2_gem_dark_resnet101_whitening.pth",
    AML + "mobilenet_v2_gem_dark_vgg16.pth.tar",
    AML + "mobilenet_v2_gem_dark_vgg16_whitening.pth",
    AML + "mobilenet_v2_gem_ms_resnet101.pth.tar",
    AML + "mobilenet_v2_gem_ms_resnet101_whitening.pth",
    AML + "mobilenet_v2_gem_ms_vgg16.pth.tar",
    AML + "mobilenet_v2_gem_ms_vgg16_whitening.pth",
    AML + "mobilenet_v2_gem_reg_resnet101.pth.tar",
    AML + "mobilenet_v2_gem_reg_resnet101_whitening.pth",
    AML + "mobilenet_v2_gem_reg_vgg16.pth.tar",
    AML + "mobilenet_v2_gem_reg_vgg16_whitening.pth",
    AML + "mobilenet_v2_gem_rkd_resnet101.pth.tar",
    AML + "mobilenet_v2_gem_rkd_resnet101_whitening.pth",
    AML + "mobilenet_v2_gem_rkd_vgg16.pth.tar",
    AML + "mobilenet_v2_gem_rkd_vgg16_whitening.pth",
    AML + "mobilenet_v2_gem_triplet_resnet101.pth.tar",
    AML + "mobilenet_v2_gem_triplet_resnet101_whitening.pth",
    AML + "mobilenet_v2_gem_triplet_vgg16.pth.tar",
    AML + "mobilenet_v2_gem_triplet_vgg16_whitening.pth",
    "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/moco_v2_800ep/moco_v2_800ep_pretrain.pth.tar",
    "https://drive.google.com/file/d/1c_T8vkUY72EoqR7vzzm6wXBSfC9r3SBG/view :: trained_model/CVACT/CVFT/model.ckpt",
    "https://drive.google.com/file/d/1c_T8vkUY72EoqR7vzzm6wXBSfC9r3SBG/view :: trained_model/CVUSA/CVFT/model.ckpt",
    "https://github.com/serizba/salad/releases/download/v1.0.0/dino_salad.ckpt",
}


def test_the_unpinned_files_are_exactly_the_frozen_list() -> None:
    found = {f.removesuffix(" (unpinned)") for _, f in unpinned_sources()}
    new = sorted(found - UNPINNED)
    pinned = sorted(UNPINNED - found)
    assert not new, f"sources without a sha256 pin (and a Hub commit): pin them; {new}"
    assert not pinned, f"pinned now, strike them off UNPINNED in this test: {pinned}"


def test_pin_state_of_each_kind_of_file() -> None:
    sha = "a" * 64
    assert is_pinned(HubFile("o/r", "m.safetensors", "0123456789abcdef0123456789abcdef01234567", sha))
    assert not is_pinned(HubFile("o/r", "m.safetensors", "main", sha))          # a branch moves
    assert not is_pinned(HubFile("o/r", "m.safetensors", "0123456789abcdef0123456789abcdef01234567"))
    assert is_pinned(UrlFile("https://x/y.ckpt", sha)) and not is_pinned(UrlFile("https://x/y.ckpt"))
    assert is_pinned(DriveFile("id", "a/b.ckpt", sha)) and not is_pinned(DriveFile("id", "a/b.ckpt"))
    assert describe_file(UrlFile("https://x/y.ckpt")) == "https://x/y.ckpt (unpinned)"


def test_an_unpinned_file_warns_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo.hub, "_WARNED_UNPINNED", set())
    ref = UrlFile("https://example.invalid/w.ckpt")
    with pytest.warns(UserWarning, match=r"example.invalid/w.ckpt \(unpinned\)"):
        zoo.hub.warn_unpinned(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zoo.hub.warn_unpinned(ref)                                   # second time: silent
        zoo.hub.warn_unpinned(UrlFile("https://example.invalid/w.ckpt", "b" * 64))  # pinned: silent


def test_publish_pins_prints_the_source_order_of_every_variant(capsys: pytest.CaptureFixture) -> None:
    from zoo.__main__ import main

    assert main(["publish", "--pins"]) == 0
    rows = capsys.readouterr().out.splitlines()
    cvact = [r for r in rows if r.startswith("cvft_vgg.cvact ")]
    assert len(cvact) == 1 and "1. authors' release" in cvact[0] and "trained_model/CVACT/CVFT/model.ckpt (unpinned)" in cvact[0]
    assert any(r.startswith("ucdir_moco.resnet50_128 ") and "no published weights" in r for r in rows)
