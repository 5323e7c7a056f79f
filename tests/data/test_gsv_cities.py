"""GSV-Cities reader (real layout, original file names) and the P×K place batch sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zoo.data.gsv_cities import GSVCities, PlaceBatchSampler, image_name
from zoo.data.synthetic import make_gsv_cities
from zoo.errors import DatasetError


def test_image_name_follows_the_original_loader() -> None:
    row = {"place_id": "17", "year": "2016", "month": "3", "northdeg": "45", "city_id": "London",
           "lat": "51.50120", "lon": "-0.1", "panoid": "abcDEF_12"}
    # place id zero-padded to 7, year to 4, month to 2, heading to 3; lat/lon printed as floats
    assert image_name(row) == "London_0000017_2016_03_045_51.5012_-0.1_abcDEF_12.jpg"


def test_reader_keeps_places_with_enough_images(tmp_path: Path) -> None:
    root = make_gsv_cities(tmp_path, places_per_city=3)
    ds = GSVCities(root, min_images_per_place=4)
    assert ds.cities == ["Boston", "London"]
    assert len(ds) == 2 * 3 * 4                   # the 2-image place of each city is dropped
    assert all(p.is_file() for p in ds.paths)
    assert sorted(ds.places) == [0, 1, 2, 100000, 100001, 100002]   # city prefix as the original
    assert ds.city_places == [[0, 1, 2], [100000, 100001, 100002]]
    image, label = ds[5]
    assert label == ds.labels[5] and image.size == (48, 48)
    assert len(GSVCities(root, cities=["London"], min_images_per_place=2).places) == 4


def test_reader_errors_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Dataframes"):
        GSVCities(tmp_path)
    root = make_gsv_cities(tmp_path, places_per_city=1)
    with pytest.raises(DatasetError, match="Paris.csv"):
        GSVCities(root, cities=["Boston", "Paris"])
    (root / "Images" / "London" / next(iter(sorted(p.name for p in (root / "Images" / "London").iterdir())))).unlink()
    ds = GSVCities(root)
    with pytest.raises(DatasetError, match="image not found"):
        [ds[i] for i in range(len(ds))]


def _sampler(ds: GSVCities, **kw) -> PlaceBatchSampler:
    args = dict(places_per_batch=2, images_per_place=4, seed=3)
    args.update(kw)
    return PlaceBatchSampler(ds.city_places, ds.places, **args)


def test_sampler_yields_p_by_k_batches_deterministically(tmp_path: Path) -> None:
    ds = GSVCities(make_gsv_cities(tmp_path, places_per_city=4))
    s = _sampler(ds)
    assert len(s) == 4
    batches = list(s)
    assert len(batches) == 4
    for batch in batches:
        labels = ds.labels[batch]
        assert len(batch) == 8 and len(set(batch)) == 8
        assert all((labels[i * 4:(i + 1) * 4] == labels[i * 4]).all() for i in range(2))
        assert labels[0] != labels[4]
    # Every place once per epoch; cities stay in order (shuffle_all=False, as the original).
    seen = [int(ds.labels[b[i]]) for b in batches for i in (0, 4)]
    assert sorted(seen) == sorted(ds.places) and all(x < 100000 for x in seen[:4])
    assert batches == list(_sampler(ds))
    s.set_epoch(1)
    assert list(s) != batches
    all_shuffled = _sampler(ds, shuffle_all=True, seed=5)
    assert sorted(int(ds.labels[b[i]]) for b in all_shuffled for i in (0, 4)) == sorted(ds.places)


def test_sampler_shards_global_batches_over_ranks(tmp_path: Path) -> None:
    ds = GSVCities(make_gsv_cities(tmp_path, places_per_city=4))
    single = list(_sampler(ds, places_per_batch=4))
    ranks = [list(_sampler(ds, places_per_batch=2, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 2
    for b in range(2):   # the two ranks' micro-batches together are the single-process batch
        assert ranks[0][b] + ranks[1][b] == single[b]
    assert not set(np.concatenate(ranks[0])) & set(np.concatenate(ranks[1]))
