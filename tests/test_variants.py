"""A weights folder's config.json is checked against the cards before anything is built."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

import zoo
from zoo.errors import CheckpointError, InputError, UnknownNameError
from zoo.export import export_pretrained
from zoo.variants import check_builder_args, check_config


@pytest.fixture(scope="module")
def ucdir_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small exported ucdir_moco (ResNet-18 backbone) and its config."""
    model = zoo.create_model("ucdir_moco", pretrained=False, arch="resnet18")
    return export_pretrained(model, tmp_path_factory.mktemp("ucdir") / "export")


def _with_config(folder: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``folder`` whose config.json is ``edit(config)`` (or the text ``edit`` returns)."""
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.safetensors").symlink_to(folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    result = edit(config)
    (copy / "config.json").write_text(result if isinstance(result, str) else json.dumps(config))
    return copy


def test_exported_folder_loads_back(ucdir_folder):
    assert zoo.create_model("ucdir_moco", pretrained=str(ucdir_folder)).zoo_config["variant"]["arch"] == "resnet18"


def test_huge_head_is_refused_before_building(ucdir_folder, tmp_path):
    folder = _with_config(ucdir_folder, tmp_path, lambda c: c["variant"].update(dim=1_500_000))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"copy \(config.json\): variant.dim=1500000 is outside \[1, 128\]"):
            zoo.create_model("ucdir_moco", pretrained=str(folder))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A 2048 x 1.5M head alone is 12 GB; the refusal allocates nothing of the sort.
    assert peak < 200 * 2**20, peak


@pytest.mark.parametrize("edit, error, message", [
    (lambda c: c.update(variant_tag="bogus"), UnknownNameError, "variant_tag 'bogus'.*Known variants: resnet50_128"),
    (lambda c: c.update(variant="resnet50"), InputError, "variant: expected an object"),
    (lambda c: c["variant"].update(dim="128"), InputError, r"variant.dim='128' is a str; ucdir_moco expects int"),
    (lambda c: c["variant"].update(depth=12), InputError, "has no argument 'depth'"),
    (lambda c: c["preprocessing"].update(center_crop=100_000), InputError, "preprocessing.center_crop=100000"),
    (lambda c: c["preprocessing"].update(resize=256), InputError, "preprocessing has no field 'resize'"),
    (lambda c: "{not json", CheckpointError, "config.json: not valid JSON"),
    (lambda c: "[1, 2]", CheckpointError, "config.json: expected a JSON object, got list"),
])
def test_malformed_config_is_named(ucdir_folder, tmp_path, edit, error, message):
    folder = _with_config(ucdir_folder, tmp_path, edit)
    with pytest.raises(error, match=message):
        zoo.create_model("ucdir_moco", pretrained=str(folder))


def test_explicit_arguments_replace_the_config_and_are_not_bounded():
    info = zoo.get_model_info("ucdir_moco")
    config = {"architecture": "ucdir_moco", "variant": {"arch": "resnet18", "dim": 4096}}
    with pytest.raises(InputError, match="dim=4096"):
        check_config(info, config, "x")
    check_config(info, config, "x", asked={"dim"})
    assert check_builder_args(info, {"dim": 4096}, "args", bounded=False) == {"dim": 4096}


def test_unknown_or_mistyped_keyword_argument_is_named():
    with pytest.raises(InputError, match="dycl_resnet has no argument 'embed'. Did you mean embed_dim"):
        zoo.create_model("dycl_resnet", pretrained=False, embed=64)
    with pytest.raises(InputError, match="embed_dim='64' is a str"):
        zoo.create_model("dycl_resnet", pretrained=False, embed_dim="64")


def test_builder_forwarding_kwargs_takes_its_class_arguments():
    info = zoo.get_model_info("cvft_vgg")
    assert check_builder_args(info, {"ground_size": [32, 160], "dropout": 0.0}, "args") == \
        {"ground_size": [32, 160], "dropout": 0.0}
    with pytest.raises(InputError, match=r"aerial_size\[0\]=4096 is outside \[1, 256\]"):
        check_builder_args(info, {"aerial_size": [4096, 4096]}, "args")
    with pytest.raises(InputError, match=r"dropout=5 is outside \[0, 1\]"):
        check_builder_args(info, {"dropout": 5}, "args")
