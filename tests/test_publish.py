"""``python -m zoo publish`` end to end against the loopback Hub, release server and Drive.

For one variant of each model with a release, the test writes a checkpoint in the authors'
format, publishes it (download, convert, self-check, model card, upload through huggingface_hub's
real client), pastes the printed registry lines into the card, and loads the variant back with
``torch.hub.load(..., source="local", pretrained=True)`` from the loopback Hub: its descriptors
must equal those of the original converted directly. Large files go up through Git LFS (the
``hub_server`` fixture disables Xet, which the loopback does not speak).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
import zoo.hub
from tests.fixtures.aml_reference import seeded_state_dict, to_cirtorch
from tests.fixtures.cvft_reference import seeded_tf_variables
from tests.fixtures.dycl_reference import to_original_key
from tests.fixtures.tf_checkpoint import write_tf_checkpoint
from zoo.__main__ import main
from zoo.errors import ChecksumError, SelfCheckError, ZooError
from zoo.export import export_pretrained
from zoo.models import get_model_info
from zoo.models.cards import HubFile, WeightSource
from zoo.publish import check_fingerprint, sample_descriptors

REPO_ROOT = Path(__file__).resolve().parents[1]
ORG = "zoo-test"


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo.hub, "_WARNED_UNPINNED", set())


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two of the bundled sample images (a query and its place's database image): a cheaper self-check."""
    root = tmp_path_factory.mktemp("samples")
    for side, names in (("queries", ["query_00_of_place_01.jpg"]), ("database", ["place_01.jpg"])):
        (root / side).mkdir()
        for name in names:
            shutil.copy(REPO_ROOT / "assets" / "samples" / side / name, root / side / name)
    return root


def _blob(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _publish(capsys: pytest.CaptureFixture, name: str, out: Path, samples: Path) -> tuple[str, str, str]:
    """Run ``publish`` for ``name``; (commit, sha256, printed output)."""
    assert main(["publish", name, "--org", ORG, "--out", str(out), "--token", "hf_test", "--samples", str(samples)]) == 0
    printed = capsys.readouterr().out
    found = re.search(r'HubFile\("([^"]+)", "model.safetensors", "([0-9a-f]{40})", "([0-9a-f]{64})"\)', printed)
    assert found, printed
    return found.group(2), found.group(3), printed


def _paste_registry_lines(monkeypatch: pytest.MonkeyPatch, name: str, printed: str) -> WeightSource:
    """Put the printed ``WeightSource(...)`` lines first in the variant's card, as a maintainer would."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith('WeightSource("zoo"'))
    block = ""
    for line in lines[start:]:  # up to the line that closes WeightSource(
        block += line.strip() + "\n"
        if block.count("(") == block.count(")"):
            break
    (source,) = eval(block, {"WeightSource": WeightSource, "HubFile": HubFile})  # our own printed code
    arch, tag = name.split(".")
    info = get_model_info(arch)
    card = info.variants[tag]
    monkeypatch.setitem(info.variants, tag, dataclasses.replace(card, weights=(source, *card.weights)))
    return source


def _hub_load(arch: str, tag: str) -> torch.nn.Module:
    return torch.hub.load(str(REPO_ROOT), arch, source="local", pretrained=True, variant=tag)


def _same_descriptors(a: torch.nn.Module, b: torch.nn.Module, samples: Path) -> None:
    for x, y in zip(sample_descriptors(a, samples), sample_descriptors(b, samples)):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)


def test_salad_published_through_lfs_loads_hub_first_refuses_a_changed_file_and_falls_back(
        hub_server, monkeypatch, tmp_path, capsys, isolated_caches, samples) -> None:
    torch.manual_seed(0)
    model = zoo.create_model("dinov2_salad.8192_256", pretrained=False, depth=1, num_trainable_blocks=1)
    original = {("backbone.model." + k[len("backbone."):] if k.startswith("backbone.") else k): v
                for k, v in model.state_dict().items()}
    original["backbone.model.mask_token"] = torch.zeros(1, 768)
    release = _blob(original)
    (tmp_path / "dino_salad.ckpt").write_bytes(release)
    monkeypatch.setenv("ZOO_SALAD_RELEASE_URL", hub_server.add_release("dino_salad.ckpt", release))

    commit, sha, printed = _publish(capsys, "dinov2_salad.8192_256", tmp_path / "out", samples)
    repo = f"{ORG}/dinov2_salad.8192_256"
    folder = tmp_path / "out" / "dinov2_salad.8192_256"
    assert sha == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert (folder / "model.safetensors").stat().st_size > hub_server.lfs_threshold
    assert ("PUT", f"/lfs-upload/{sha}?size={(folder / 'model.safetensors').stat().st_size}") in hub_server.requests
    assert hub_server.repos[repo][commit]["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    # the unpinned release's sha256 is printed ready to paste
    release_sha = hashlib.sha256(release).hexdigest()
    assert f'UrlFile("https://github.com/serizba/salad/releases/download/v1.0.0/dino_salad.ckpt", sha256="{release_sha}"' \
        in printed
    card = (folder / "README.md").read_text()
    for needed in ("visual place recognition", "GPL-3.0", "Izquierdo_CVPR_2024_SALAD", "msls_challenge", release_sha,
                   "dino_salad.ckpt", "no (unpinned)", "Self-check fingerprint", f"hf-hub:{repo}"):
        assert needed in card, needed

    _paste_registry_lines(monkeypatch, "dinov2_salad.8192_256", printed)
    hub_server.requests.clear()
    loaded = _hub_load("dinov2_salad", "8192_256")
    assert loaded.zoo_config["weights"] == f"hf-hub:{repo}@{commit}"
    assert not any(path.startswith("/releases/") for _, path in hub_server.requests)
    _same_descriptors(loaded, zoo.create_model("dinov2_salad.8192_256", pretrained=str(tmp_path / "dino_salad.ckpt")), samples)

    # A pinned repo answering with another file at that commit is refused, not used, and not passed over.
    hub_server.repos[repo][commit]["model.safetensors"] = (folder / "model.safetensors").read_bytes()[:-8] + b"\0" * 8
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "fresh-cache"))
    with pytest.raises(ChecksumError, match=f"{repo}/model.safetensors@{commit}: sha256 .* differs from the pinned {sha}"):
        _hub_load("dinov2_salad", "8192_256")

    # With our repo gone, the authors' release is used (converted), and its missing pin warns once.
    del hub_server.repos[repo]
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "fresh-cache-2"))
    zoo.hub._WARNED_UNPINNED.clear()  # publish above already used the file (and warned once) in this process
    with pytest.warns(UserWarning, match="dino_salad.ckpt.*unpinned"):
        fallback = _hub_load("dinov2_salad", "8192_256")
    assert "converted" in fallback.zoo_config["weights"]
    for key, value in loaded.state_dict().items():
        assert torch.equal(fallback.state_dict()[key], value), key


def test_dycl_release_on_the_hub_published_and_loaded_back(hub_server, monkeypatch, tmp_path, capsys, samples) -> None:
    torch.manual_seed(1)
    model = zoo.create_model("dycl_resnet.resnet50_512", pretrained=False)
    ckpt = {"net_state": {to_original_key(k): v for k, v in model.state_dict().items()}, "epoch": 20}
    blob = _blob(ckpt)
    authors_commit = hub_server.add_commit("www0wwwjs1/dycl", {"dycl_20epoch.ckpt": blob})
    (tmp_path / "dycl_20epoch.ckpt").write_bytes(blob)

    _, _, printed = _publish(capsys, "dycl_resnet.resnet50_512", tmp_path / "out", samples)
    # the authors' Hub file is pinned to a branch: the line to pin it names the commit main pointed to
    sha = hashlib.sha256(blob).hexdigest()
    assert f'HubFile("www0wwwjs1/dycl", "dycl_20epoch.ckpt", "{authors_commit}", "{sha}")' in printed
    _paste_registry_lines(monkeypatch, "dycl_resnet.resnet50_512", printed)
    loaded = _hub_load("dycl_resnet", "resnet50_512")
    assert loaded.zoo_config["weights"].startswith(f"hf-hub:{ORG}/dycl_resnet.resnet50_512@")
    # same weights as the original converted directly (publish itself compared the descriptors of its copy)
    direct = zoo.create_model("dycl_resnet", pretrained=str(tmp_path / "dycl_20epoch.ckpt"))
    for key, value in direct.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_aml_student_with_its_whitening_file(hub_server, monkeypatch, tmp_path, capsys, samples) -> None:
    from zoo.models.aml.cards import student_file, whitening_file

    model = zoo.create_model("aml_student.mobilenetv2_vgg16", pretrained=False)
    state = seeded_state_dict(model)
    fn = student_file("mobilenet_v2", "vgg16")
    meta = {"pooling": "gem", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "architecture": "mobilenet_v2"}
    rng = np.random.default_rng(0)
    whitening = {"m": rng.standard_normal((512, 1)).astype(np.float32),
                 "P": np.linalg.qr(rng.standard_normal((512, 512)))[0].astype(np.float32)}
    files = {fn: _blob({"meta": meta, "state_dict": to_cirtorch(state, "student")}), whitening_file(fn): _blob(whitening)}
    for name, data in files.items():
        monkeypatch.setenv("ZOO_AML_BASE_URL", hub_server.add_release(name, data))
        (tmp_path / name).write_bytes(data)

    _, _, printed = _publish(capsys, "aml_student.mobilenetv2_vgg16", tmp_path / "out", samples)
    assert "whitening:" in printed and printed.count("UNPINNED") >= 2
    _paste_registry_lines(monkeypatch, "aml_student.mobilenetv2_vgg16", printed)
    loaded = _hub_load("aml_student", "mobilenetv2_vgg16")
    assert torch.equal(loaded.whiten_ss.P, torch.from_numpy(whitening["P"]))
    # converted directly, the converter finds the whitening file beside the student's
    _same_descriptors(loaded, zoo.create_model("aml_student.mobilenetv2_vgg16", pretrained=str(tmp_path / fn)), samples)


def test_cvft_from_the_drive_archive_by_variant(hub_server, drive_server, monkeypatch, tmp_path, capsys, samples) -> None:
    from zoo.models.cvft.cards import DRIVE_FILE_ID

    # A small input size keeps the test fast; the two VGG16 stacks keep their real size (~118 MB).
    info = get_model_info("cvft_vgg")
    small = {"ground_size": (32, 160), "aerial_size": (64, 64)}
    for tag in ("cvusa", "cvact"):
        monkeypatch.setitem(info.variants, tag, dataclasses.replace(info.variants[tag], args=small))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for seed, dataset in enumerate(("CVUSA", "CVACT")):
            variables = seeded_tf_variables(seed)
            variables["ot_grd_branchot_fc/weights"] = variables["ot_grd_branchot_fc/weights"][:4, :16].copy()
            variables["ot_grd_branchot_fc/biases"] = np.eye(4, dtype=np.float32).reshape(-1)
            prefix = write_tf_checkpoint(tmp_path / dataset / "model.ckpt", variables)
            for f in Path(prefix).parent.iterdir():
                zf.write(f, f"Model/trained_model/{dataset}/CVFT/{f.name}")
    drive_server.add_file(DRIVE_FILE_ID, "Model.zip", archive.getvalue())

    _, _, printed = _publish(capsys, "cvft_vgg.cvact", tmp_path / "out", samples)
    assert [host for host, _ in drive_server.requests] == ["drive.google.com", "drive.usercontent.google.com"]
    archive_sha = hashlib.sha256(archive.getvalue()).hexdigest()
    assert f'DriveFile("{DRIVE_FILE_ID}", "trained_model/CVACT/CVFT/model.ckpt", sha256="{archive_sha}")' in printed
    _paste_registry_lines(monkeypatch, "cvft_vgg.cvact", printed)
    loaded = _hub_load("cvft_vgg", "cvact")
    direct = zoo.create_model("cvft_vgg.cvact", pretrained=str(tmp_path / "CVACT" / "model.ckpt"))
    _same_descriptors(loaded, direct, samples)
    # the other variant's checkpoint comes from the same (cached) archive: pretrained=True, no new download
    drive_server.requests.clear()
    cvusa = zoo.create_model("cvft_vgg.cvusa", pretrained=True)
    assert drive_server.requests == []
    direct = zoo.create_model("cvft_vgg.cvusa", pretrained=str(tmp_path / "CVUSA" / "model.ckpt"))
    for key, value in direct.state_dict().items():
        assert torch.equal(cvusa.state_dict()[key], value), key


def test_a_training_run_export_is_published_with_our_numbers(tmp_path, capsys, samples) -> None:
    torch.manual_seed(2)
    # a ResNet-18 run (as the ucdir-smoke recipe trains it) cannot be the ResNet-50 variant's weights
    small = export_pretrained(zoo.create_model("ucdir_moco.office_home_art_clipart", pretrained=False, arch="resnet18"),
                              tmp_path / "small" / "export", card=False)
    with pytest.raises(ZooError, match=r"differs from the card of ucdir_moco.office_home_art_clipart in arch='resnet18' "
                                       r"\(card: 'resnet50'\)"):
        from zoo.publish import publish_run
        publish_run(small, ORG, tmp_path / "out", dry_run=True, samples=samples)

    model = zoo.create_model("ucdir_moco.office_home_art_clipart", pretrained=False)
    run = tmp_path / "run"
    export = export_pretrained(model, run / "export", extra_config={
        "weights": "trained with recipe 'ucdir-office-home'", "training": {"recipe": "ucdir-office-home", "steps": 10}})
    rows = [{"kind": "train", "step": 5, "loss": 1.0},
            {"kind": "eval", "step": 10, "epoch": 0, "Art -> Clipart/P@1": 0.5, "Clipart -> Art/P@1": 0.25}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    assert main(["publish", str(export), "--org", ORG, "--out", str(tmp_path / "out"), "--dry-run",
                 "--samples", str(samples)]) == 0
    printed = capsys.readouterr().out
    assert "dry run: not uploaded" in printed and '"<commit printed by the upload>"' in printed
    folder = tmp_path / "out" / "ucdir_moco.office_home_art_clipart"
    card = (folder / "README.md").read_text()
    assert "Trained by us with retrieval-zoo (recipe `ucdir-office-home`), not by the authors" in card
    assert "## Our numbers (measured by us, not the authors': metrics.jsonl of the run, evaluation at step 10" in card
    assert "| Art -> Clipart/P@1 | 0.5 |" in card and "CC-BY-NC" in card
    config = json.loads((folder / "config.json").read_text())
    assert config["measured_by_us"]["metrics"] == {"Art -> Clipart/P@1": 0.5, "Clipart -> Art/P@1": 0.25}
    assert config["fingerprint"]["images"] == {"queries": ["query_00_of_place_01.jpg"], "database": ["place_01.jpg"]}
    assert "re-loaded copy within 0 of the fingerprint" in printed


def test_fingerprint_catches_other_weights_and_publish_errors_are_clear(tmp_path, capsys, samples, monkeypatch) -> None:
    torch.manual_seed(3)
    model = zoo.create_model("aml_student.mobilenetv2_vgg16", pretrained=False)
    from zoo.publish import fingerprint

    recorded = fingerprint(model, samples)
    assert check_fingerprint(model, recorded, samples) == 0
    other = zoo.create_model("aml_student.mobilenetv2_vgg16", pretrained=False)
    other.whiten_ss.P.data = torch.linalg.qr(torch.randn(512, 512))[0]     # other weights: a rotated whitening
    with pytest.raises(SelfCheckError, match="differ from the recorded ones"):
        check_fingerprint(other, recorded, samples)
    assert main(["publish", "ucdir_moco.office_home_art_clipart", "--org", ORG, "--dry-run"]) == 2
    assert "has no authors' release to publish" in capsys.readouterr().err
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(["publish", "dycl_resnet", "--org", ORG]) == 2             # refused before any download
    assert "needs a Hub token with write access: set HF_TOKEN" in capsys.readouterr().err
    with pytest.raises(ZooError, match="not a training run's export"):
        from zoo.publish import publish_run
        publish_run(tmp_path, ORG, tmp_path / "out", dry_run=True)
