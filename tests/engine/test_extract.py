"""Descriptor extraction: equal to the model's own forward, cached shards, resume, corrupt images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import tests.fixtures.tiny_eval_plugin as plugin
from tests.fixtures.eval_data import make_tiny_eval
from zoo.data.base import ImageRecord
from zoo.engine.extract import DescriptorCache, _is_cnn, extract_descriptors, transform_id, weights_hash
from zoo.errors import DatasetError, InputError
from zoo.io import list_images


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_tiny_eval(tmp_path_factory.mktemp("tiny") / "tiny", n_database=11)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return plugin.tiny_eval_cnn().eval()


def _records(data: Path, side="database"):
    return [ImageRecord(p) for p in list_images(data / side)]


def _direct(model, records, side):
    tf = plugin.tiny_transforms()[0]
    x = torch.stack([tf(Image.open(r.path).convert("RGB")) for r in records])
    with torch.no_grad():
        return (model.encode_query if side == "query" else model.encode_database)(x)


@pytest.mark.parametrize("side", ["query", "database"])
def test_equals_direct_forward(data, model, side):
    records = _records(data, "queries" if side == "query" else "database")
    ex = extract_descriptors(model, records, plugin.tiny_transforms()[0], side=side, batch_size=4, shard_size=5,
                             precision="fp32", progress=False)
    torch.testing.assert_close(ex.descriptors, _direct(model, records, side), atol=1e-6, rtol=1e-5)
    assert ex.computed_images == len(records) and ex.cached_images == 0 and ex.skipped == []
    other = "database" if side == "query" else "query"
    assert not torch.allclose(ex.descriptors, _direct(model, records, other), atol=1e-6)  # the side matters


class _Interrupt(RuntimeError):
    pass


class _FailAfter:
    """The tiny transform, raising after ``n`` images (a run killed part-way)."""

    def __init__(self, n: int) -> None:
        self.n, self.tf = n, plugin.tiny_transforms()[0]

    def __call__(self, img):
        if self.n == 0:
            raise _Interrupt("killed")
        self.n -= 1
        return self.tf(img)

    def __repr__(self) -> str:  # the cache key: same transform as the uninterrupted run
        return transform_id(self.tf)


def test_cache_resume_gives_identical_results(data, model, tmp_path):
    records = _records(data)
    key = {"model": "tiny", "weights": weights_hash(model), "transform": transform_id(plugin.tiny_transforms()[0])}
    full = extract_descriptors(model, records, plugin.tiny_transforms()[0], batch_size=3, shard_size=4,
                               progress=False).descriptors
    cache = DescriptorCache(tmp_path, key)
    # Killed after 6 images: shard 0 (images 0-3) is complete on disk, shard 1 is not.
    with pytest.raises(InputError, match="transform failed"):
        extract_descriptors(model, records, _FailAfter(6), batch_size=3, shard_size=4, cache=cache, progress=False)
    assert sorted(p.name for p in cache.dir.glob("shard_*")) == ["shard_000000.safetensors"]
    assert not list(cache.dir.glob("*.part"))
    resumed = extract_descriptors(model, records, plugin.tiny_transforms()[0], batch_size=3, shard_size=4,
                                  cache=cache, progress=False)
    assert resumed.cached_images == 4 and resumed.computed_images == 7
    assert torch.equal(resumed.descriptors, full)
    again = extract_descriptors(model, records, plugin.tiny_transforms()[0], batch_size=3, shard_size=4,
                                cache=cache, progress=False)
    assert again.computed_images == 0 and torch.equal(again.descriptors, full)


def test_weights_and_transform_identity(model):
    h = weights_hash(model)
    assert h == weights_hash(model)
    with torch.no_grad():
        model.head.weight[0, 0] += 1e-3
    assert weights_hash(model) != h
    assert " at 0x" not in transform_id(lambda x: x)


def test_corrupt_image_named_or_skipped(tmp_path, model):
    root = make_tiny_eval(tmp_path / "bad", n_database=6, corrupt=("database/db_002.png",))
    records = _records(root)
    with pytest.raises(InputError, match=r"db_002\.png.*--skip-corrupt"):
        extract_descriptors(model, records, plugin.tiny_transforms()[0], batch_size=4, progress=False)
    ex = extract_descriptors(model, records, plugin.tiny_transforms()[0], batch_size=4, progress=False, precision="fp32",
                             skip_corrupt=True, num_workers=1)
    assert [i for i, _ in ex.skipped] == [2] and "db_002.png" in ex.skipped[0][1]
    assert torch.equal(ex.descriptors[2], torch.zeros(8))
    good = [r for i, r in enumerate(records) if i != 2]
    torch.testing.assert_close(ex.descriptors[[0, 1, 3, 4, 5]], _direct(model, good, "database"),
                               atol=1e-6, rtol=1e-5)


def test_missing_file_is_a_dataset_error(data, model):
    records = _records(data)[:2] + [ImageRecord(data / "database" / "nope.png")]
    with pytest.raises(DatasetError, match="nope.png"):
        extract_descriptors(model, records, plugin.tiny_transforms()[0], progress=False, num_workers=1)


def test_precision_and_arguments(data, model):
    records = _records(data)[:4]
    with pytest.raises(InputError, match="fp16 needs a CUDA"):
        extract_descriptors(model, records, plugin.tiny_transforms()[0], precision="fp16", progress=False)
    with pytest.raises(InputError, match="side"):
        extract_descriptors(model, records, plugin.tiny_transforms()[0], side="both", progress=False)
    fp32 = extract_descriptors(model, records, plugin.tiny_transforms()[0], precision="fp32", progress=False).descriptors
    bf16 = extract_descriptors(model, records, plugin.tiny_transforms()[0], precision="bf16", progress=False)
    assert bf16.descriptors.dtype == torch.float32
    assert (bf16.descriptors - fp32).abs().max() < 5e-2


def test_boxes_and_mixed_sizes(data, model, tmp_path):
    src = _records(data)[0].path
    Image.open(src).crop((4, 2, 20, 30)).save(tmp_path / "crop.png")
    Image.open(src).resize((40, 24)).save(tmp_path / "wide.png")
    records = [ImageRecord(src, box=(4, 2, 20, 30)), ImageRecord(tmp_path / "crop.png"), ImageRecord(tmp_path / "wide.png")]
    from torchvision import transforms as T
    keep_aspect = T.Compose([T.Resize(16), T.ToTensor()])  # 16x28 crop, 16x26 wide: shapes differ
    ex = extract_descriptors(model, records, keep_aspect, batch_size=3, progress=False, precision="fp32")
    torch.testing.assert_close(ex.descriptors[0], ex.descriptors[1])
    with torch.no_grad():
        wide = model.encode_database(keep_aspect(Image.open(tmp_path / "wide.png").convert("RGB"))[None])[0]
    torch.testing.assert_close(ex.descriptors[2], wide, atol=1e-6, rtol=1e-5)


def test_channels_last_rule():
    import timm
    assert _is_cnn(plugin.tiny_eval_cnn())
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=1)
    assert not _is_cnn(vit)  # a ViT's only convolution is its patch embedding


def test_cropped_record_carries_its_full_image_size(tmp_path):
    """AML/cirtorch scale a cropped query by its full image's factor: the transform must see that size."""
    from zoo.engine.extract import ImageListDataset
    Image.new("RGB", (200, 100), (10, 20, 30)).save(tmp_path / "a.png")
    seen = []

    def transform(img):
        seen.append((img.size, img.info.get("full_size")))
        return torch.zeros(3, 2, 2)
    ImageListDataset([ImageRecord(tmp_path / "a.png", (10, 10, 60, 40))], transform)[0]
    assert seen == [((50, 30), (200, 100))]


@pytest.mark.parametrize("side", ["query", "database"])
def test_non_finite_descriptors_name_the_images(data, model, side):
    from zoo.errors import NonFiniteDescriptorError
    records = _records(data)
    with torch.no_grad():
        next(p for p in model.parameters() if p.ndim > 1).fill_(float("nan"))  # broken weights
    with pytest.raises(NonFiniteDescriptorError, match=rf"{side} descriptors: 11 of 11 images") as err:
        extract_descriptors(model, records, plugin.tiny_transforms()[0], side=side, batch_size=4, progress=False)
    assert str(records[0].path) in str(err.value) and err.value.rows == [0, 1, 2, 3, 4]
