"""Coordinates (CSV, EXIF GPS, @UTM@ names), distances and the localisation estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from zoo.errors import DatasetError, InputError
from zoo.geo import EARTH_RADIUS_M, Coordinates, distances_m, haversine_m, localise, localise_all, read_coordinates


def _jpeg(path, **kwargs):
    Image.new("RGB", (8, 8), (120, 60, 30)).save(path, **kwargs)
    return path


def test_haversine_equals_hand_computed_arcs():
    # One degree of latitude is R * pi / 180 metres; a quarter of a meridian is R * pi / 2.
    assert haversine_m([45.0, 7.0], [46.0, 7.0]) == pytest.approx(EARTH_RADIUS_M * math.pi / 180, rel=1e-12)
    assert haversine_m([0.0, 0.0], [90.0, 0.0]) == pytest.approx(EARTH_RADIUS_M * math.pi / 2, rel=1e-12)
    # Along the equator, longitude degrees are as long as latitude degrees; across the antimeridian too.
    assert haversine_m([0.0, 179.5], [0.0, -179.5]) == pytest.approx(EARTH_RADIUS_M * math.pi / 180, rel=1e-9)
    assert distances_m(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]]), "utm")[0] == 5.0
    with pytest.raises(InputError, match="kind"):
        distances_m([0, 0], [1, 1], "mercator")


def test_consensus_equals_hand_computed_value():
    # Matches (best first) at x = 0, 100 and 10 m with similarities 0.9, 0.8, 0.6. Supports within
    # 25 m: 0.9 + 0.6 = 1.5 at x=0 and x=10, 0.8 at x=100: the better-ranked of the tie (x=0) wins,
    # its inliers are x=0 and x=10, and the estimate is (0 * 0.9 + 10 * 0.6) / 1.5 = 4 m east.
    xy = np.array([[0.0, 0.0], [100.0, 0.0], [10.0, 0.0]])
    est = localise(xy, np.array([0.9, 0.8, 0.6]), "utm", radius=25.0)
    np.testing.assert_allclose(est.consensus, [4.0, 0.0])
    np.testing.assert_array_equal(est.top1, [0.0, 0.0])
    assert est.inliers.tolist() == [True, False, True] and est.support == pytest.approx(1.5)
    # A query truly at (3, 4): top-1 error 5 m, consensus error sqrt(1 + 16) m.
    out = localise_all(Coordinates(xy, "utm"), np.array([[0.9, 0.8, 0.6]]), np.array([[0, 1, 2]]),
                       Coordinates(np.array([[3.0, 4.0]]), "utm"), radius=25.0)[0]
    assert out["top1_error_m"] == pytest.approx(5.0)
    assert out["consensus_error_m"] == pytest.approx(math.sqrt(17.0))


def test_consensus_in_latlon_ignores_unknown_and_negative_matches():
    # Two matches 0.0001 deg of latitude apart (11.1195 m), one without coordinates, one with a
    # negative similarity far away: the estimate is the weighted mean of the two near ones.
    xy = np.array([[45.0, 7.0], [np.nan, np.nan], [45.0001, 7.0], [46.0, 7.0]])
    est = localise(xy, np.array([0.75, 0.7, 0.25, -0.2]), "latlon")
    np.testing.assert_allclose(est.consensus, [45.0 + 0.0001 * 0.25 / 1.0, 7.0], atol=1e-12)
    assert est.inliers.tolist() == [True, False, True, False]
    nothing = localise(np.full((2, 2), np.nan), np.array([0.5, 0.4]), "latlon")
    assert np.isnan(nothing.consensus).all()
    with pytest.raises(InputError, match="radius"):
        localise(xy, np.ones(4), "latlon", radius=0)


def test_exif_gps_written_with_pil_is_read_back(tmp_path):
    exif = Image.Exif()
    # 45 deg 30' 36" N, 7 deg 15' 0" W
    exif[0x8825] = {1: "N", 2: (45.0, 30.0, 36.0), 3: "W", 4: (7.0, 15.0, 0.0)}
    tagged = _jpeg(tmp_path / "tagged.jpg", exif=exif)
    plain = _jpeg(tmp_path / "plain.jpg")
    coords = read_coordinates([tagged, plain], "exif")
    assert coords.kind == "latlon"
    np.testing.assert_allclose(coords.xy[0], [45.51, -7.25], atol=1e-9)
    assert np.isnan(coords.xy[1]).all() and coords.known.tolist() == [True, False]


def test_utm_names_parsed_and_converted_with_a_zone(tmp_path):
    a = _jpeg(tmp_path / "@500000.00@0.00@31@N@img.jpg")
    b = _jpeg(tmp_path / "@500030.00@40.00@31@N@img.jpg")
    coords = read_coordinates([a, b], "names")
    assert coords.kind == "utm"
    np.testing.assert_array_equal(coords.xy, [[500000.0, 0.0], [500030.0, 40.0]])
    assert distances_m(coords.xy[0], coords.xy[1], "utm") == pytest.approx(50.0)
    pytest.importorskip("utm")
    # Zone 31's central meridian is 3 deg E; easting 500000 m, northing 0 m is on it, at the equator.
    latlon = read_coordinates([a], "names", utm_zone="31N")
    assert latlon.kind == "latlon"
    np.testing.assert_allclose(latlon.xy[0], [0.0, 3.0], atol=1e-9)
    with pytest.raises(InputError, match="--utm-zone"):
        read_coordinates([a], "names", utm_zone="99Z")
    other = _jpeg(tmp_path / "holiday.jpg")
    with pytest.raises(DatasetError, match="holiday.jpg"):
        read_coordinates([other], "names")
    assert np.isnan(read_coordinates([other], "names", required=False).xy).all()


def test_csv_matches_paths_relative_absolute_and_by_name(tmp_path):
    (tmp_path / "sub").mkdir()
    a, b, c = (_jpeg(tmp_path / "sub" / f"{n}.jpg") for n in "abc")
    table = tmp_path / "coords.csv"
    table.write_text(f"path,lat,lon\nsub/a.jpg,45.0,7.0\n{b},45.5,7.5\nc.jpg,46,8\n")
    coords = read_coordinates([a, b, c, tmp_path / "d.jpg"], str(table))
    np.testing.assert_array_equal(coords.xy[:3], [[45.0, 7.0], [45.5, 7.5], [46.0, 8.0]])
    assert not coords.known[3]
    bad = tmp_path / "bad.csv"
    bad.write_text("file,x,y\na.jpg,1,2\n")
    with pytest.raises(DatasetError, match="bad.csv.*header"):
        read_coordinates([a], str(bad))
    bad.write_text("path,lat,lon\na.jpg,north,2\n")
    with pytest.raises(DatasetError, match="bad.csv line 2"):
        read_coordinates([a], str(bad))
    with pytest.raises(InputError, match="--coords"):
        read_coordinates([a], "gps")
