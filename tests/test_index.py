"""``python -m zoo index build | add | search``: faiss index folders, re-ranking, localisation."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision import transforms as T

from zoo.__main__ import main
from zoo.errors import DatasetError, InputError
from zoo.geo import EARTH_RADIUS_M
from zoo.index import (
    MapIndex,
    add_to_index,
    build_faiss_index,
    build_index,
    factory_string,
    ivfpq_params,
    read_image_list,
    rerank,
)
from zoo.models import MODELS
from zoo.models.cards import ModelInfo, Variant

MODEL = "tiny_colour_test"
METRES_PER_DEG_LAT = EARTH_RADIUS_M * math.pi / 180


class TinyColour(nn.Module):
    """Per-channel means over a 4x4 grid, times a learnable gain: a 48-d descriptor that finds an
    image's own place among blocky random pictures, with weights to hash."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.gain = nn.Parameter(torch.ones(48))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize((self.pool(x).flatten(1) - 0.5) * self.gain, dim=-1)

    encode_query = encode_database = forward


@pytest.fixture
def tiny_model(monkeypatch):
    tf = T.Compose([T.Resize((16, 16)), T.ToTensor()])
    info = ModelInfo(name=MODEL, builder=TinyColour, paper="-", arxiv=None, task="test", licence="MIT",
                     code_licence="MIT", original_code="-", citation="-", descriptor_dim=48,
                     variants={"default": Variant()}, preprocessing=lambda args: {}, transforms=lambda: (tf, tf))
    monkeypatch.setitem(MODELS._entries, MODEL, info)
    return info


def _place(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (4, 4, 3)).astype(np.uint8)


def _save(pixels: np.ndarray, path, brighten: int = 0) -> None:
    img = Image.fromarray(np.clip(pixels.astype(int) + brighten, 0, 255).astype(np.uint8))
    img.resize((32, 32), Image.NEAREST).save(path)


def _latlon(i: int) -> tuple[float, float]:
    # Places 0.001 deg of latitude (111 m) apart: farther than the 25 m consensus radius.
    return 45.0 + 0.001 * i, 7.0


@pytest.fixture
def city(tmp_path):
    return make_city(tmp_path)


def make_city(tmp_path):
    """``map/`` (places 0-15), ``more/`` (16-19), ``queries/`` (views of places 3, 9, 17), and a
    CSV with every map image's position and each query's, 0.0001 deg (11.12 m) north of its place."""
    for sub in ("map", "more", "queries"):
        (tmp_path / sub).mkdir()
    rows = ["path,lat,lon"]
    for i in range(20):
        path = tmp_path / ("map" if i < 16 else "more") / f"place_{i:02d}.png"
        _save(_place(i), path)
        rows.append(f"{path.relative_to(tmp_path)},{_latlon(i)[0]},{_latlon(i)[1]}")
    for i in (3, 9, 17):
        _save(_place(i), tmp_path / "queries" / f"query_of_{i:02d}.png", brighten=6)
        rows.append(f"queries/query_of_{i:02d}.png,{_latlon(i)[0] + 0.0001},{_latlon(i)[1]}")
    (tmp_path / "coords.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def _results(out):
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_ivfpq_parameter_rule():
    p = ivfpq_params(1_000_000, 256)
    assert (p["nlist"], p["m"], p["nbits"], p["opq"], p["nprobe"]) == (4096, 32, 8, False, 64)
    assert p["train_size"] == 64 * 4096
    assert factory_string("ivfpq", 256, p) == "IVF4096,PQ32x8"
    # SALAD's 8448-d: 64 code bytes, OPQ rotating and reducing to 512 dimensions.
    p = ivfpq_params(1_000_000, 8448)
    assert (p["m"], p["opq"], p["d_pq"]) == (64, True, 512)
    assert factory_string("ivfpq", 8448, p) == "OPQ64_512,IVF4096,PQ64x8"
    # A dimension M does not divide gets OPQ too; 100k images: nlist near 4 sqrt(n) = 1265.
    p = ivfpq_params(100_000, 100)
    assert (p["nlist"], p["m"], p["opq"], p["d_pq"]) == (1024, 12, True, 96)
    # Tiny maps: one list, fewer bits, so that every centroid has training points.
    p = ivfpq_params(48, 48)
    assert (p["nlist"], p["m"], p["nbits"], p["opq"], p["train_size"]) == (1, 6, 1, False, 48)
    p = ivfpq_params(5000, 256)
    assert p["nlist"] == 128 and p["nbits"] == 7 and p["nlist"] * 39 <= 5000
    with pytest.raises(InputError, match="flat"):
        ivfpq_params(1, 256)


def test_rerank_is_exact_search_within_the_shortlist():
    rng = np.random.default_rng(0)
    db = rng.standard_normal((300, 32)).astype(np.float32)
    q = rng.standard_normal((7, 32)).astype(np.float32)
    store = db.astype(np.float16)
    shortlist = np.stack([rng.choice(300, 40, replace=False) for _ in range(7)])
    shortlist[0, 30:] = -1  # faiss pads short lists with -1
    scores, rows = rerank(store, q, shortlist, 5, batch=3)
    exact = q @ store.astype(np.float32).T
    for i in range(7):
        cand = shortlist[i][shortlist[i] >= 0]
        best = cand[np.argsort(-exact[i, cand], kind="stable")[:5]]
        np.testing.assert_array_equal(rows[i], best)
        np.testing.assert_allclose(scores[i], exact[i, best], rtol=1e-6)


def test_ivfpq_with_rerank_over_whole_map_equals_flat():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:20] + 0.05 * rng.standard_normal((20, 64)).astype(np.float32)
    flat = build_faiss_index(x, "flat")
    _, exact = flat.search(q, 5)
    ivf = build_faiss_index(x, "ivfpq", ivfpq_params(500, 64))
    ivf.nprobe = ivfpq_params(500, 64)["nlist"]  # every list: the shortlist is the PQ ranking of all
    _, short = ivf.search(q, 500)
    _, rows = rerank(x.astype(np.float16), q, short, 5)
    np.testing.assert_array_equal(rows[:, 0], exact[:, 0])
    np.testing.assert_array_equal(rows[:, 0], np.arange(20))


@pytest.mark.parametrize("kind", ["flat", "ivfpq"])
def test_build_search_add_and_localise_end_to_end(tiny_model, city, capsys, kind):
    index_dir, out = city / "map.index", city / "out"
    assert main(["index", "build", "--model", MODEL, "--pretrained", "false", "--images", str(city / "map"),
                 "--out", str(index_dir), "--kind", kind, "--coords", str(city / "coords.csv"), "--quiet"]) == 0
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["count"] == 16 and manifest["dim"] == 48 and manifest["faiss"]["kind"] == kind
    assert manifest["model"]["name"] == MODEL and len(manifest["model"]["weights_sha256"]) == 64
    assert manifest["coords"]["kind"] == "latlon"
    store = np.load(index_dir / "descriptors.npy", mmap_mode="r")
    assert isinstance(store, np.memmap) and store.dtype == np.float16 and store.shape == (16, 48)

    assert main(["index", "add", "--index", str(index_dir), "--images", str(city / "more"),
                 "--coords", str(city / "coords.csv"), "--quiet"]) == 0
    assert json.loads((index_dir / "manifest.json").read_text())["count"] == 20
    assert main(["index", "add", "--index", str(index_dir), "--images", str(city / "more"), "--quiet"]) == 2
    assert "already in the index" in capsys.readouterr().err

    capsys.readouterr()
    assert main(["index", "search", "--index", str(index_dir), "--queries", str(city / "queries"), "--topk", "3",
                 "--rerank", "20", "--out", str(out), "--coords", str(city / "coords.csv"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "consensus median" in printed
    rows = _results(out)
    assert len(rows) == 3 * 3 and list(rows[0]) == ["query", "rank", "database", "similarity", "lat", "lon"]
    for row in rows:
        if row["rank"] == "1":  # each query finds its place, including the added place 17
            assert row["database"].endswith(f"place_{row['query'][-6:-4]}.png"), row
    # Every query lies 0.0001 deg of latitude north of its place; places are 111 m apart, so the
    # consensus holds the top match alone and both errors are R * pi/180 * 0.0001 = 11.1195 m.
    with open(out / "positions.csv") as f:
        positions = list(csv.DictReader(f))
    assert len(positions) == 3
    for p in positions:
        assert float(p["top1_error_m"]) == pytest.approx(METRES_PER_DEG_LAT * 0.0001, abs=1e-4)
        assert float(p["consensus_error_m"]) == pytest.approx(METRES_PER_DEG_LAT * 0.0001, abs=1e-4)
        assert p["inliers"] == "1"
    payload = json.loads((out / "results.json").read_text())
    assert payload["localisation"]["queries_with_truth"] == 3
    assert payload["localisation"]["top1_error_median_m"] == pytest.approx(11.1195, abs=1e-3)
    assert Image.open(out / "grid.png").width > 100 and Image.open(out / "map.png").width > 300


def test_search_refuses_another_model_in_one_line(tiny_model, city, tmp_path, capsys):
    from zoo.hub import save_pretrained

    index_dir = tmp_path / "idx"
    build_index(MODEL, index_dir, images=city / "map", kind="flat", pretrained=False, progress=False)
    other = save_pretrained(tmp_path / "other", {"gain": torch.full((48,), 2.0)}, {"architecture": MODEL})
    capsys.readouterr()
    code = main(["index", "search", "--index", str(index_dir), "--queries", str(city / "queries"),
                 "--out", str(tmp_path / "o"), "--pretrained", str(other), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    sha = json.loads((index_dir / "manifest.json").read_text())["model"]["weights_sha256"]
    assert f"weights sha256 {sha[:12]}" in err and str(index_dir) in err and "does not match" in err
    assert not (tmp_path / "o" / "results.csv").exists()


def test_interrupted_build_resumes_from_the_descriptor_cache(tiny_model, city, tmp_path, monkeypatch):
    calls = {"n": 0}
    forward = TinyColour.forward

    def dies_on_third_batch(self, x):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return forward(self, x)

    monkeypatch.setattr(TinyColour, "encode_database", dies_on_third_batch)
    index_dir = tmp_path / "idx"
    with pytest.raises(KeyboardInterrupt):
        build_index(MODEL, index_dir, images=city / "map", kind="flat", pretrained=False, batch_size=4,
                    shard_size=4, progress=False)
    assert not (index_dir / "manifest.json").exists()
    monkeypatch.setattr(TinyColour, "encode_database", forward)
    summary = build_index(MODEL, index_dir, images=city / "map", kind="flat", pretrained=False, batch_size=4,
                          shard_size=4, progress=False)
    # Two shards of 4 were complete before the third batch died: only the other 8 images are computed.
    assert (summary.cached_images, summary.computed_images, summary.count) == (8, 8, 16)
    again = build_index(MODEL, index_dir, images=city / "map", kind="flat", pretrained=False, batch_size=4,
                        shard_size=4, progress=False, overwrite=True)
    assert (again.cached_images, again.computed_images) == (16, 0)


def test_bad_inputs_name_the_file(tiny_model, city, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# map\nmap/place_00.png\n\nmap/missing.png\n")
    with pytest.raises(DatasetError, match=r"list.txt line 4: image not found"):
        read_image_list(listing)
    listing.write_text("map/place_00.png\nmap/place_01.png\n")
    assert [p.name for p in read_image_list(listing)] == ["place_00.png", "place_01.png"]
    index_dir = tmp_path / "idx"
    build_index(MODEL, index_dir, list_file=listing, kind="flat", pretrained=False, progress=False)
    with pytest.raises(InputError, match="already holds an index"):
        build_index(MODEL, index_dir, list_file=listing, kind="flat", pretrained=False, progress=False)
    with pytest.raises(DatasetError, match="place_00.png: file name does not start with @UTM"):
        build_index(MODEL, tmp_path / "i2", images=city / "map", coords="names", pretrained=False, progress=False)
    elsewhere = tmp_path / "elsewhere.csv"
    elsewhere.write_text("path,lat,lon\nunrelated.jpg,45,7\n")
    with pytest.raises(InputError, match="no coordinates found for any of the 4 images"):
        add_to_index(index_dir, images=city / "more", coords=str(elsewhere), progress=False)
    # A folder whose files disagree (a crash between renames) is refused, naming the file.
    np.save(index_dir / "descriptors.npy", np.zeros((3, 48), np.float16))
    with pytest.raises(DatasetError, match="descriptors.npy holds 3 images"):
        MapIndex.open(index_dir)
    with pytest.raises(DatasetError, match="not an index folder"):
        MapIndex.open(tmp_path)


def test_retrieve_localises_with_coords(tiny_model, city):
    out = city / "retrieved"
    assert main(["retrieve", "--model", MODEL, "--pretrained", "false", "--queries", str(city / "queries"),
                 "--database", str(city / "map"), "--out", str(out), "--topk", "2", "--coords",
                 str(city / "coords.csv")]) == 0
    with open(out / "positions.csv") as f:
        positions = {row["query"].rsplit("/", 1)[1]: row for row in csv.DictReader(f)}
    # Places 3 and 9 are in the map (error 11.12 m); place 17 is not, its estimate is another place's.
    assert float(positions["query_of_03.png"]["top1_error_m"]) == pytest.approx(11.1195, abs=1e-3)
    assert float(positions["query_of_09.png"]["consensus_error_m"]) == pytest.approx(11.1195, abs=1e-3)
    assert float(positions["query_of_17.png"]["top1_error_m"]) > 100
    assert json.loads((out / "results.json").read_text())["localisation"]["radius_m"] == 25.0
    assert (out / "map.png").is_file()


def test_a_zoo_model_builds_and_searches_an_hnsw_index(city):
    # The cheapest real network: AML's MobileNetV2 student, random weights (seeded by the index
    # commands), on 32 px images, which its transform never upsamples.
    name, index_dir, out = "aml_student.mobilenetv2_vgg16", city / "hnsw.index", city / "out"
    assert main(["index", "build", "--model", name, "--pretrained", "false", "--images", str(city / "map"),
                 "--out", str(index_dir), "--kind", "hnsw", "--coords", str(city / "coords.csv"), "--quiet"]) == 0
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["model"]["variant_tag"] == "mobilenetv2_vgg16" and manifest["dim"] == 512
    assert manifest["faiss"]["factory"] == "HNSW32"
    assert main(["index", "search", "--index", str(index_dir), "--queries", str(city / "queries"), "--topk", "2",
                 "--out", str(out), "--quiet"]) == 0
    # Random weights make near-constant descriptors: the test checks the plumbing, not the ranking.
    rows = _results(out)
    assert len(rows) == 6 and all(-1.001 <= float(r["similarity"]) <= 1.001 for r in rows)
    assert {r["database"] for r in rows} <= {str(p) for p in sorted((city / "map").iterdir())}
    assert json.loads((out / "results.json").read_text())["settings"]["ef"] == 128
    # Positions come from the index; without query coordinates there are no errors.
    with open(out / "positions.csv") as f:
        assert [row["top1_error_m"] for row in csv.DictReader(f)] == ["", "", ""]


def test_retrieve_localises_with_utm_names_in_metres(tiny_model, tmp_path):
    # VPR-benchmark names: places 100 m apart along the easting; each query 3 m east, 4 m north of its place.
    (tmp_path / "db").mkdir()
    (tmp_path / "q").mkdir()
    for i in range(6):
        _save(_place(i), tmp_path / "db" / f"@{500000 + 100 * i:.2f}@{4400000:.2f}@17@T@place{i}@.png")
    for i in (1, 4):
        _save(_place(i), tmp_path / "q" / f"@{500003 + 100 * i:.2f}@{4400004:.2f}@17@T@query{i}@.png", brighten=6)
    out = tmp_path / "out"
    assert main(["retrieve", "--model", MODEL, "--pretrained", "false", "--queries", str(tmp_path / "q"),
                 "--database", str(tmp_path / "db"), "--out", str(out), "--topk", "3", "--coords", "names"]) == 0
    with open(out / "positions.csv") as f:
        positions = list(csv.DictReader(f))
    assert list(positions[0])[1:3] == ["top1_east", "top1_north"]
    assert [float(p["top1_error_m"]) for p in positions] == [5.0, 5.0]
    assert [float(p["consensus_error_m"]) for p in positions] == [5.0, 5.0]
