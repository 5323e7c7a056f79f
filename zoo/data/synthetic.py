"""Tiny data sets written in each benchmark's real on-disk layout.

The smoke recipes train on them (``data: {synthetic: NAME}`` in a recipe: without ``--data-root``
the engine writes the set named there, see :func:`materialise`), and the tests read them through
the same readers as the real benchmarks. Every generator is deterministic (fixed seeds) and draws
images that a network can learn to match: views of one place, landmark or class share a pattern,
different ones differ.

* SALAD: :func:`make_gsv_cities` (training), :func:`make_vpr_lists`, :func:`make_vpr_utm` (evaluation).
* DyCL: :func:`make_da_campus`.
* CVFT: :func:`make_cvusa`, :func:`make_cvact`.
* AML: :func:`make_sfm120k` (training), :func:`make_revisited` (ROxford5k / RParis6k).
* UCDIR: :func:`make_office_home`, :func:`make_domainnet`.
"""

from __future__ import annotations

import csv
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from zoo.data.gsv_cities import image_name
from zoo.registry import Registry

# --------------------------------------------------------------------------- SALAD: GSV-Cities and the VPR benchmarks' lists

# Images of one place share a 4x4 colour pattern (plus per-image noise and shifts); places differ.


def _place_image(place: int, view: int, size: int = 48) -> Image.Image:
    rng = np.random.default_rng(place)
    base = rng.integers(0, 256, size=(4, 4, 3)).astype(np.float64)
    img = np.kron(base, np.ones((size // 4, size // 4, 1)))
    noise = np.random.default_rng([place, view]).normal(0, 12, img.shape)
    img = np.roll(img + noise, shift=view * 2, axis=1)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_gsv_cities(root: Path, cities: tuple[str, ...] = ("Boston", "London"), places_per_city: int = 8,
                    images_per_place: int = 4, size: int = 48) -> Path:
    """``root/gsv_cities/{Dataframes/<City>.csv, Images/<City>/...}``; one extra place per city has
    too few images and must be skipped by the reader. Returns the data set folder."""
    out = Path(root) / "gsv_cities"
    (out / "Dataframes").mkdir(parents=True, exist_ok=True)
    for c, city in enumerate(cities):
        (out / "Images" / city).mkdir(parents=True, exist_ok=True)
        rows = []
        for place in range(places_per_city + 1):
            count = images_per_place if place < places_per_city else 2
            for view in range(count):
                rows.append({"place_id": place, "year": 2015 + view, "month": 1 + view, "northdeg": 90 * view,
                             "city_id": city, "lat": round(40.1 + place * 0.001 + c, 6),
                             "lon": round(-3.25 - view * 0.0001, 7), "panoid": f"pano{c}x{place}x{view}"})
        with open(out / "Dataframes" / f"{city}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow(row)
        for row in rows:
            img = _place_image(c * 1000 + row["place_id"], row["year"] - 2015, size)
            img.save(out / "Images" / city / image_name({k: str(v) for k, v in row.items()}))
    return out


def _save(path: Path, img: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def make_vpr_lists(root: Path, name: str, num_places: int = 6, size: int = 48) -> Path:
    """One benchmark in serizba/salad's ``.npy``-list layout under ``root/<folder>``.

    ``name``: ``msls_val``, ``msls_challenge``, ``nordland``, ``sped`` or ``pitts250k_test``. Query ``i``
    shows place ``i``; the database holds two views of every place (its positives). Returns the folder.
    """
    folder = {"msls_val": "msls", "msls_challenge": "msls", "nordland": "Nordland", "sped": "SPED",
              "pitts250k_test": "Pittsburgh"}[name]
    out = Path(root) / folder
    db, queries, gt = [], [], []
    for place in range(num_places):
        views = []
        for v in range(2):
            rel = {"msls_val": f"train_val/cph/database/images/p{place}v{v}.jpg",
                   "msls_challenge": f"test/miami/database/images/p{place}v{v}.jpg",
                   "nordland": f"ref/{place * 2 + v:07d}.jpg", "sped": f"ref/{place:07d}.jpg",
                   "pitts250k_test": f"000/{place:06d}_pitch1_yaw{v + 1}.jpg"}[name]
            if name == "sped" and v:
                continue
            _save(out / rel, _place_image(500 + place, v + 1, size))
            views.append(len(db))
            db.append(rel)
        qrel = {"msls_val": f"train_val/cph/query/images/q{place}.jpg",
                "msls_challenge": f"test/miami/query/images/q{place}.jpg",
                "nordland": f"query/{place:07d}.jpg", "sped": f"query/{place:07d}.jpg",
                "pitts250k_test": f"queries_real/000/{place:06d}_pitch1_yaw1.jpg"}[name]
        _save(out / qrel, _place_image(500 + place, 0, size))
        queries.append(qrel)
        gt.append(np.array(views, dtype=np.int64))
    gt_arr = np.empty(len(gt), dtype=object)
    gt_arr[:] = gt
    if name == "msls_val":
        # The real qImages list has more entries than evaluated queries; qIdx selects them.
        np.save(out / "msls_val_dbImages.npy", np.array(db))
        np.save(out / "msls_val_qImages.npy", np.array(queries + ["train_val/cph/query/images/unused.jpg"]))
        np.save(out / "msls_val_qIdx.npy", np.arange(len(queries), dtype=np.int64))
        np.save(out / "msls_val_pIdx.npy", gt_arr, allow_pickle=True)
    elif name == "msls_challenge":
        np.save(out / "msls_test_dbImages.npy", np.array(db, dtype=object), allow_pickle=True)
        np.save(out / "msls_test_qImages.npy", np.array(queries, dtype=object), allow_pickle=True)
    elif name == "sped":
        np.save(out / "SPED_dbImages.npy", np.array(db))
        np.save(out / "SPED_qImages.npy", np.array(queries))
        np.save(out / "SPED_gt.npy", np.arange(len(queries), dtype=np.int64)[:, None])
    else:
        prefix = {"nordland": "Nordland", "pitts250k_test": "pitts250k_test"}[name]
        np.save(out / f"{prefix}_dbImages.npy", np.array(db))
        np.save(out / f"{prefix}_qImages.npy", np.array(queries))
        np.save(out / f"{prefix}_gt.npy", gt_arr, allow_pickle=True)
    return out


def make_vpr_utm(root: Path, folder: str = "pitts30k", split: str = "test", num_places: int = 5,
                 size: int = 48) -> Path:
    """``root/<folder>/images/<split>/{database,queries}/@east@north@....jpg``: places 100 m apart, two
    database views 5 m and 20 m from each place, the query at the place. Returns the folder."""
    out = Path(root) / folder
    for place in range(num_places):
        east, north = 585000.0 + 100 * place, 4477000.0
        for v, offset in enumerate((5.0, 20.0)):
            name = f"@{east + offset:.2f}@{north:.2f}@17@T@40.4@-79.9@pano{place}{v}@@@@@@@.jpg"
            _save(out / "images" / split / "database" / name, _place_image(700 + place, v + 1, size))
        qname = f"@{east:.2f}@{north:.2f}@17@T@40.4@-79.9@q{place}@@@@@@@.jpg"
        _save(out / "images" / split / "queries" / qname, _place_image(700 + place, 0, size))
    return out


# --------------------------------------------------------------------------- DyCL: DA-Campus

# ``{satellite,drone}/{train,test}.txt`` + images. Places lie on a small grid so that every relevance
# level occurs (same place, <= 200 m, <= 500 m, further); drone images of a place are noisy, shifted
# copies of its satellite pattern.


_DA_CAMPUS_HEADER = "path class_id latitude longitude"
#: ~111 m per 0.001 degree of latitude
_DA_CAMPUS_ORIGIN = (31.9300, 118.7800)


def _da_campus_image(place: int, view: int, size: int, noise: float) -> Image.Image:
    base = np.random.default_rng(place).integers(0, 256, size=(4, 4, 3)).astype(np.float64)
    img = np.kron(base, np.ones((size // 4, size // 4, 1)))
    if view >= 0:
        img = np.roll(img + np.random.default_rng([place, view]).normal(0, noise, img.shape), view, axis=0)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _coords(place: int) -> tuple[float, float]:
    # 4 places per row, 0.0015 deg (~167 m) apart in latitude; rows 0.004 deg (~380 m) apart in longitude
    return _DA_CAMPUS_ORIGIN[0] + (place % 4) * 0.0015, _DA_CAMPUS_ORIGIN[1] + (place // 4) * 0.004


def make_da_campus(root: Path, train_places: int = 8, test_places: int = 6, drones_per_place: int = 3,
                   size: int = 32, noise: float = 10.0) -> Path:
    """Write ``root/DA_Campus`` and return it. Class ids: 1..train for train, then the test places."""
    out = Path(root) / "DA_Campus"
    first = {"train": 1, "test": train_places + 1}
    counts = {"train": train_places, "test": test_places}
    for split in ("train", "test"):
        sat_rows, drone_rows = [_DA_CAMPUS_HEADER], [_DA_CAMPUS_HEADER]
        for p in range(counts[split]):
            cid = first[split] + p
            lat, lon = _coords(p + (100 if split == "test" else 0))
            sat = Path(split) / f"{cid:04d}" / "sat.png"
            (out / "satellite" / sat.parent).mkdir(parents=True, exist_ok=True)
            _da_campus_image(cid, -1, size, noise).save(out / "satellite" / sat)
            sat_rows.append(f"{sat.as_posix()} {cid} {lat:.7f} {lon:.7f}")
            for v in range(drones_per_place):
                drone = Path(split) / f"{cid:04d}" / f"drone_{v:02d}.png"
                (out / "drone" / drone.parent).mkdir(parents=True, exist_ok=True)
                _da_campus_image(cid, v, size, noise).save(out / "drone" / drone)
                drone_rows.append(f"{drone.as_posix()} {cid} {lat:.7f} {lon:.7f}")
        (out / "satellite" / f"{split}.txt").write_text("\n".join(sat_rows) + "\n")
        (out / "drone" / f"{split}.txt").write_text("\n".join(drone_rows) + "\n")
    return out


# --------------------------------------------------------------------------- CVFT: CVUSA and CVACT

# Each location gets its own colour, shared by its ground panorama and aerial image (plus noise and a
# pattern that differs between the views), so that the two views can be matched.


def _view_image(rng: np.random.Generator, colour: np.ndarray, height: int, width: int, stripes: bool) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    pattern = (np.sin(x / 7.0) if stripes else np.cos((x + y) / 11.0))[..., None] * 30.0
    noise = rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(colour + pattern + noise, 0, 255).astype(np.uint8))


def make_cvusa(root: Path, n_train: int = 8, n_val: int = 3, ground_size: tuple[int, int] = (224, 1232),
               aerial_size: tuple[int, int] = (750, 750), seed: int = 0) -> Path:
    """``root/splits/{train,val}-19zl.csv``, ``bingmap/19/*.jpg``, ``streetview/panos/*.jpg``; returns root."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for folder in ("splits", "bingmap/19", "streetview/panos", "streetview/annotations"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    index = 0
    for split, count in (("train", n_train), ("val", n_val)):
        rows = []
        for _ in range(count):
            index += 1
            name = f"{index:07d}"
            colour = rng.uniform(30, 225, 3)
            _view_image(rng, colour, *aerial_size, stripes=False).save(root / "bingmap/19" / f"{name}.jpg", quality=95)
            _view_image(rng, colour, *ground_size, stripes=True).save(root / "streetview/panos" / f"{name}.jpg", quality=95)
            rows.append(f"bingmap/19/{name}.jpg,streetview/panos/{name}.jpg,streetview/annotations/{name}.png")
        (root / "splits" / f"{split}-19zl.csv").write_text("\n".join(rows) + "\n")
    return root


def make_cvact(root: Path, n_train: int = 6, n_val: int = 3, n_test: int = 2, seed: int = 0,
               test_layout: bool = False) -> Path:
    """``root/ACT_data.mat`` + ``streetview/<id>_grdView.png`` (112x616) and
    ``satview_polish/<id>_satView_polish.png`` (256x256); with ``test_layout`` the test split's
    JPEGs (832x1664 panoramas, 512x512 aerial) too. Returns root."""
    import scipy.io

    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "streetview").mkdir(parents=True, exist_ok=True)
    (root / "satview_polish").mkdir(parents=True, exist_ok=True)
    n = n_train + n_val + n_test
    ids = [f"pano{i:04d}_{rng.integers(10**6):06d}" for i in range(n)]  # equal lengths, like the real 22-char ids
    utm = np.stack([np.arange(n) * 40.0 + 700000.0, np.full(n, 6090000.0)], axis=1)
    utm[1] = utm[0] + [10.0, 0.0]  # two training locations 10 m apart: the 25 m mask drops this pair
    for i, pano_id in enumerate(ids):
        colour = rng.uniform(30, 225, 3)
        _view_image(rng, colour, 112, 616, stripes=True).save(root / "streetview" / f"{pano_id}_grdView.png")
        _view_image(rng, colour, 256, 256, stripes=False).save(root / "satview_polish" / f"{pano_id}_satView_polish.png")
        if test_layout and i >= n_train + n_val:
            _view_image(rng, colour, 832, 1664, stripes=True).save(root / "streetview" / f"{pano_id}_grdView.jpg", quality=95)
            _view_image(rng, colour, 512, 512, stripes=False).save(root / "satview_polish" / f"{pano_id}_satView_polish.jpg", quality=95)

    def one_based(start: int, count: int) -> np.ndarray:
        return (np.arange(start, start + count) + 1).reshape(-1, 1).astype(np.float64)

    scipy.io.savemat(str(root / "ACT_data.mat"), {
        "panoIds": np.array(ids),
        "utm": utm,
        "trainSet": {"trainInd": one_based(0, n_train)},
        "valSet": {"valInd": one_based(n_train, n_val)},
        "valSetAll": {"valInd": one_based(n_train + n_val, n_test)},
    })
    return root


# --------------------------------------------------------------------------- AML: retrieval-SfM-120k and the revisited Oxford / Paris sets

# revisitop's ``gnd_<name>.pkl`` (``{'imlist', 'qimlist', 'gnd'}``, ``gnd[i] = {'bbx', 'easy', 'hard', 'junk'}``)
# + ``jpg/<name>.jpg``; cirtorch's ``retrieval-SfM-120k.pkl`` (``{'train'|'val': {'cids', 'cluster', 'qidxs',
# 'pidxs'}}``) + ``ims/<cid[-2:]>/<cid[-4:-2]>/<cid[-6:-4]>/<cid>``. Images of one landmark share a random
# low-frequency pattern (plus noise).


def _landmark_image(rng: np.random.Generator, base: np.ndarray, size: tuple[int, int], noise: float = 0.15) -> Image.Image:
    w, h = size
    img = Image.fromarray((base * 255).astype(np.uint8), "RGB").resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255 + noise * rng.standard_normal((h, w, 3))
    return Image.fromarray((np.clip(arr, 0, 1) * 255).astype(np.uint8), "RGB")


def make_revisited(root: Path, name: str = "roxford5k", n_landmarks: int = 3, per_landmark: int = 4,
                   n_distractors: int = 4, size: tuple[int, int] = (48, 36), seed: int = 0) -> Path:
    """A revisited-layout set: one query per landmark (its own image), easy/hard/junk database images."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "jpg").mkdir(parents=True, exist_ok=True)
    imlist, qimlist, gnd = [], [], []
    bases = [rng.random((4, 4, 3)) for _ in range(n_landmarks)]
    for lm, base in enumerate(bases):
        idx = []
        for j in range(per_landmark):
            nm = f"{name}_l{lm}_{j}"
            _landmark_image(rng, base, size, noise=0.1 + 0.1 * (j % 2)).save(root / "jpg" / f"{nm}.jpg", quality=95)
            idx.append(len(imlist))
            imlist.append(nm)
        q = f"{name}_query{lm}"
        _landmark_image(rng, base, size, 0.1).save(root / "jpg" / f"{q}.jpg", quality=95)
        qimlist.append(q)
        w, h = size
        n_easy = max(1, (per_landmark - 1) // 2)
        gnd.append({"bbx": [2.0, 3.0, w - 4.5, h - 2.0], "easy": idx[:n_easy], "hard": idx[n_easy:-1], "junk": idx[-1:]})
    for j in range(n_distractors):
        nm = f"{name}_distractor{j}"
        _landmark_image(rng, rng.random((4, 4, 3)), size).save(root / "jpg" / f"{nm}.jpg", quality=95)
        imlist.append(nm)
    with open(root / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f)
    return root


def cid_path(root: Path, cid: str) -> Path:
    return Path(root) / "ims" / cid[-2:] / cid[-4:-2] / cid[-6:-4] / cid


def make_sfm120k(root: Path, n_clusters: int = 6, per_cluster: int = 4, size: tuple[int, int] = (32, 24),
                 seed: int = 0) -> Path:
    """A retrieval-SfM-120k-layout set: ``train`` = first clusters, ``val`` = the last two."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    splits = {"train": {"cids": [], "cluster": [], "qidxs": [], "pidxs": []},
              "val": {"cids": [], "cluster": [], "qidxs": [], "pidxs": []}}
    for c in range(n_clusters):
        split = splits["val" if c >= n_clusters - 2 else "train"]
        base = rng.random((3, 3, 3))
        first = len(split["cids"])
        for j in range(per_cluster):
            cid = f"{rng.integers(0, 2**63):016x}{c:02d}{j:02d}"
            path = cid_path(root, cid)
            path.parent.mkdir(parents=True, exist_ok=True)
            _landmark_image(rng, base, size).save(path, format="JPEG", quality=95)
            split["cids"].append(cid)
            split["cluster"].append(c)
        for j in range(per_cluster - 1):
            split["qidxs"].append(first + j)
            split["pidxs"].append(first + j + 1)
    with open(root / "retrieval-SfM-120k.pkl", "wb") as f:
        pickle.dump(splits, f)
    return root


# --------------------------------------------------------------------------- UCDIR: Office-Home and DomainNet

# Images of class ``c`` show a class-specific shape and colour; each domain draws them in its own style
# (background, noise); two black or white squares at image-specific places tell the images apart.


OFFICE_HOME_DOMAINS = ("Art", "Clipart", "Product", "Real World")
DOMAINNET_CLASSES = ("bird", "feather", "teapot", "tiger", "whale", "windmill", "zebra")


def _class_image(cls: int, domain: int, index: int, size: int) -> Image.Image:
    rng = np.random.default_rng(1000 * cls + 100 * domain + index)
    background = (np.full((size, size, 3), 40 + 60 * domain, dtype=np.float32)
                  + rng.normal(0, 12 + 8 * domain, (size, size, 3)))
    img = Image.fromarray(background.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    colour = tuple(int(v) for v in np.array([(cls * 97) % 256, (cls * 57 + 80) % 256, (cls * 31 + 160) % 256]))
    c, r = size // 2 + int(rng.integers(-3, 4)), size // 3 + int(rng.integers(-2, 3))
    box = [c - r, c - r, c + r, c + r]
    if cls % 3 == 0:
        draw.ellipse(box, fill=colour)
    elif cls % 3 == 1:
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(c, c - r), (c - r, c + r), (c + r, c + r)], fill=colour)
    # two bright/dark marks at image-specific places make every image distinguishable (instance contrast)
    for _ in range(2):
        x0, y0 = (int(v) for v in rng.integers(0, size - size // 4, 2))
        grey = int(rng.choice([0, 255]))
        draw.rectangle([x0, y0, x0 + size // 4, y0 + size // 4], fill=(grey, grey, grey))
    return img


def make_office_home(root: Path, domains: Sequence[str] = OFFICE_HOME_DOMAINS, num_classes: int = 3,
                     per_class: int = 4, size: int = 48) -> Path:
    """``root/OfficeHome/<domain>/<class>/<nnnnn>.jpg`` (the download's layout); returns the OfficeHome folder."""
    out = Path(root) / "OfficeHome"
    classes = [f"Class_{c:02d}" for c in range(num_classes)]
    for d, domain in enumerate(domains):
        for c, name in enumerate(classes):
            folder = out / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            # domains differ in size: the smaller one wraps around in training, as the original
            for i in range(per_class + (d % 2)):
                _class_image(c, d, i, size).save(folder / f"{i + 1:05d}.jpg", quality=95)
    return out


def make_domainnet(root: Path, domains: Sequence[str] = ("clipart", "sketch"), classes: Sequence[str] = DOMAINNET_CLASSES,
                   per_class: int = 3, size: int = 48, extra_class: str = "airplane") -> Path:
    """``root/DomainNet/<domain>/<class>/<domain>_<nnn>_<nnnnnn>.jpg`` with ``<domain>_train.txt`` /
    ``<domain>_test.txt`` (two thirds train); ``extra_class`` is outside UCDIR's 7 classes."""
    out = Path(root) / "DomainNet"
    names = list(classes) + [extra_class]
    for d, domain in enumerate(domains):
        lines = {"train": [], "test": []}
        for c, name in enumerate(names):
            folder = out / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                rel = f"{domain}/{name}/{domain}_{c:03d}_{i + 1:06d}.jpg"
                _class_image(c, d, i, size).save(out / rel, quality=95)
                lines["test" if i % 3 == 2 else "train"].append(f"{rel} {c}")
        for split, rows in lines.items():
            (out / f"{domain}_{split}.txt").write_text("\n".join(rows) + "\n")
    return out


# --------------------------------------------------------------------------- smoke recipes' data


@dataclass(frozen=True)
class SyntheticSet:
    """A generator a recipe can name in ``data.synthetic``: it writes the set under a data root."""

    subdir: str                        # the folder it writes under the data root (the recipe's data.subdir)
    write: Callable[[Path], object]    # write(data_root): writes data_root/subdir
    description: str


SYNTHETIC_SETS: Registry[SyntheticSet] = Registry("synthetic data set")
SYNTHETIC_SETS.register("gsv_cities", SyntheticSet(
    "gsv_cities", make_gsv_cities, "2 cities x 8 places x 4 images of 48 px (SALAD training)"))
SYNTHETIC_SETS.register("da_campus", SyntheticSet(
    "DA_Campus", make_da_campus, "8 training / 6 test places, 1 satellite + 3 drone images of 32 px each"))
SYNTHETIC_SETS.register("cvusa", SyntheticSet(
    "CVUSA", lambda root: make_cvusa(root / "CVUSA"), "8 training / 3 validation ground-aerial pairs at CVUSA's sizes"))
SYNTHETIC_SETS.register("cvact", SyntheticSet(
    "CVACT", lambda root: make_cvact(root / "CVACT"), "6 training / 3 validation / 2 test CVACT_val-layout pairs"))
SYNTHETIC_SETS.register("sfm120k", SyntheticSet(
    "retrieval-SfM-120k", lambda root: make_sfm120k(root / "retrieval-SfM-120k"),
    "4 training / 2 validation clusters of 4 images of 32x24 px (AML training)"))
SYNTHETIC_SETS.register("office_home", SyntheticSet(
    "OfficeHome", lambda root: make_office_home(root, domains=("Product", "Clipart"), per_class=2, size=40),
    "Product and Clipart, 3 classes x 2-3 images of 40 px (UCDIR: one batch holds a whole domain)"))
SYNTHETIC_SETS.register("domainnet", SyntheticSet(
    "DomainNet", make_domainnet, "2 domains x 8 classes x 3 images of 48 px with train/test lists (UCDIR)"))


def materialise(name: str, data_root: Path) -> Path:
    """Write the synthetic set ``name`` as ``data_root/<its subdir>`` unless it is there; return that folder.

    The set is written into a temporary folder beside it and renamed into place, so that the folder
    exists only complete: a killed run leaves no half-written set, and processes that generate the
    same (deterministic) set at once all end up reading the first one renamed into place.
    """
    spec = SYNTHETIC_SETS.get(name)
    data_root = Path(data_root)
    target = data_root / spec.subdir
    if target.is_dir():
        return target
    data_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.subdir}.", suffix=".tmp", dir=data_root))
    try:
        spec.write(staging)
        try:
            os.replace(staging / spec.subdir, target)
        except OSError:
            if not target.is_dir():  # not another process's set renamed in first: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target

