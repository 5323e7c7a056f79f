"""GSV-Cities (Ali-bey et al., Neurocomputing 2022), the training set of MixVPR and SALAD.

Real layout::

    ROOT/Dataframes/<City>.csv     columns place_id, year, month, northdeg, city_id, lat, lon, panoid
    ROOT/Images/<City>/<city_id>_<place_id:07d>_<year:04d>_<month:02d>_<northdeg:03d>_<lat>_<lon>_<panoid>.jpg

Image names are built from the CSV rows exactly as the original data loader builds them
(``GSVCitiesDataset.get_img_name`` of amaralibey/gsv-cities and serizba/salad). Place labels
are ``place_id + city_index * 10**5``, unique across cities as in the original, and only places
with at least ``min_images_per_place`` images are kept.

:class:`GSVCities` is a data set of *images* ``(image, place_label)``; the P×K structure of the
original (a batch of P places with K images each) comes from :class:`PlaceBatchSampler`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from zoo.errors import DatasetError
from zoo.io import load_image

#: The 23 cities serizba/salad trains on (dataloaders/GSVCitiesDataloader.py, TRAIN_CITIES), in its order.
TRAIN_CITIES = (
    "Bangkok", "BuenosAires", "LosAngeles", "MexicoCity", "OSL", "Rome", "Barcelona", "Chicago", "Madrid",
    "Miami", "Phoenix", "TRT", "Boston", "Lisbon", "Medellin", "Minneapolis", "PRG", "WashingtonDC",
    "Brussels", "London", "Melbourne", "Osaka", "PRS",
)
_COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")
_CITY_OFFSET = 10**5


def image_name(row: dict[str, str]) -> str:
    """File name of one CSV row, as the original loader builds it (numbers re-printed, not copied)."""
    place = str(int(row["place_id"]) % _CITY_OFFSET).zfill(7)
    return (f"{row['city_id']}_{place}_{str(int(row['year'])).zfill(4)}_{str(int(row['month'])).zfill(2)}_"
            f"{str(int(row['northdeg'])).zfill(3)}_{float(row['lat'])!s}_{float(row['lon'])!s}_{row['panoid']}.jpg")


def check_gsv_cities(root: Path, cities: Sequence[str] | None = None) -> list[str]:
    """Check the layout; returns the cities to use (``cities`` or every CSV in ``Dataframes``)."""
    root = Path(root)
    for sub in ("Dataframes", "Images"):
        if not (root / sub).is_dir():
            raise DatasetError(f"GSV-Cities: folder {root / sub} not found (expected ROOT/Dataframes/<City>.csv "
                               "and ROOT/Images/<City>/...)")
    if cities is None:
        cities = sorted(p.stem for p in (root / "Dataframes").glob("*.csv"))
        if not cities:
            raise DatasetError(f"GSV-Cities: no <City>.csv in {root / 'Dataframes'}")
    missing = [c for c in cities if not (root / "Dataframes" / f"{c}.csv").is_file()]
    if missing:
        raise DatasetError(f"GSV-Cities: missing {', '.join(str(root / 'Dataframes' / (c + '.csv')) for c in missing)}")
    missing = [c for c in cities if not (root / "Images" / c).is_dir()]
    if missing:
        raise DatasetError(f"GSV-Cities: missing image folders {', '.join(str(root / 'Images' / c) for c in missing)}")
    return list(cities)


class GSVCities(Dataset):
    """GSV-Cities images: item ``i`` -> ``(transform(image), place_label)``.

    Attributes:
        paths: image paths. labels: ``(N,)`` int64 place labels.
        places: place label -> indices of its images (sorted). city_places: per city (in
        ``cities`` order), its place labels in CSV order.
    """

    def __init__(self, root: str | Path, cities: Sequence[str] | None = None, min_images_per_place: int = 4,
                 transform: Callable | None = None) -> None:
        self.root = Path(root)
        self.cities = check_gsv_cities(self.root, cities)
        self.transform = transform
        paths: list[Path] = []
        labels: list[int] = []
        city_places: list[list[int]] = []
        for city_index, city in enumerate(self.cities):
            csv_path = self.root / "Dataframes" / f"{city}.csv"
            with open(csv_path, newline="") as f:
                reader = csv.DictReader(f)
                absent = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
                if absent:
                    raise DatasetError(f"{csv_path}: missing column(s) {', '.join(absent)}")
                rows = list(reader)
            counts: dict[int, int] = {}
            for row in rows:
                counts[int(row["place_id"])] = counts.get(int(row["place_id"]), 0) + 1
            seen: dict[int, None] = {}
            for row in rows:
                place = int(row["place_id"])
                if counts[place] < min_images_per_place:
                    continue
                seen.setdefault(place + city_index * _CITY_OFFSET, None)
                paths.append(self.root / "Images" / row["city_id"] / image_name(row))
                labels.append(place + city_index * _CITY_OFFSET)
            city_places.append(list(seen))
        if not paths:
            raise DatasetError(f"GSV-Cities: no place with at least {min_images_per_place} images under {self.root}")
        self.paths = paths
        self.labels = np.asarray(labels, dtype=np.int64)
        self.city_places = city_places
        self.places: dict[int, np.ndarray] = {}
        order = np.argsort(self.labels, kind="stable")
        bounds = np.flatnonzero(np.diff(self.labels[order])) + 1
        for group in np.split(order, bounds):
            self.places[int(self.labels[group[0]])] = np.sort(group)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = load_image(self.paths[index])
        return (self.transform(image) if self.transform else image), int(self.labels[index])


class PlaceBatchSampler(Sampler[list[int]]):
    """P×K batches: ``places_per_batch`` places, ``images_per_place`` images of each, per rank.

    Per epoch, places are ordered as the original loader orders them (``shuffle_all=False``:
    cities in their order, places shuffled within each city; ``True``: all places shuffled);
    consecutive groups of ``places_per_batch * world_size`` places form one global batch, of
    which rank ``r`` takes the ``r``-th slice. Each place's K images are drawn without
    replacement. Everything is drawn from generators seeded by (seed, epoch[, place]), so the
    batches depend only on (seed, epoch, rank, world_size) — a resumed run sees the same data.
    """

    def __init__(self, city_places: Sequence[Sequence[int]], places: dict[int, np.ndarray], places_per_batch: int,
                 images_per_place: int = 4, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle_all: bool = False) -> None:
        if places_per_batch < 1:
            raise ValueError(f"places_per_batch must be at least 1, got {places_per_batch}")
        small = [p for p, idx in places.items() if len(idx) < images_per_place]
        if small:
            raise DatasetError(f"{len(small)} places have fewer than {images_per_place} images (e.g. {small[0]})")
        self.city_places = [list(c) for c in city_places]
        self.places = places
        self.p, self.k = places_per_batch, images_per_place
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle_all = shuffle_all
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return sum(len(c) for c in self.city_places) // (self.p * self.world_size)

    def place_order(self) -> list[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle_all:
            everything = [p for c in self.city_places for p in c]
            return [everything[i] for i in rng.permutation(len(everything))]
        return [c[i] for c in self.city_places for i in rng.permutation(len(c))]

    def __iter__(self) -> Iterator[list[int]]:
        order = self.place_order()
        global_batch = self.p * self.world_size
        for b in range(len(self)):
            mine = order[b * global_batch + self.rank * self.p: b * global_batch + (self.rank + 1) * self.p]
            batch: list[int] = []
            for place in mine:
                rng = np.random.default_rng([self.seed, self.epoch, place])
                batch.extend(int(i) for i in rng.choice(self.places[place], self.k, replace=False))
            yield batch
