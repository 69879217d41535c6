"""Polygons out: class map -> polygons -> class map round trips, GDAL's sieve as reference, attributes, formats."""

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio import features
from rasterio.transform import from_origin
from scipy import ndimage

from falsecl.inference.vector import polygonize_class_map, sieve_regions, sieve_targets

NAMES = ["water", "land", "road", "building"]
TRANSFORM = from_origin(300_000, 2_780_000, 0.5, 0.5)


def class_map(seed=0, height=90, width=110):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 4, size=(height // 6 + 1, width // 6 + 1)).astype(np.uint8)
    a = np.kron(small, np.ones((6, 6), np.uint8))[:height, :width]
    speck = rng.random((height, width)) < 0.03
    a[speck] = rng.integers(0, 4, size=int(speck.sum()))
    a[70:80, 0:30] = 255  # nodata
    return a


def write(path, array, crs="EPSG:32640", transform=TRANSFORM):
    profile = dict(driver="GTiff", height=array.shape[0], width=array.shape[1], count=1, dtype="uint8", nodata=255)
    with rasterio.open(path, "w", **profile, crs=crs, transform=transform) as dst:
        dst.write(array, 1)
    return path


def read_back(path, shape, transform=TRANSFORM):
    _, _, wkb, fields = pyogrio.raw.read(path)
    geoms = shapely.from_wkb(wkb)
    burnt = features.rasterize(
        zip(geoms, fields[0], strict=True), out_shape=shape, transform=transform, fill=255, dtype="uint8"
    )
    return geoms, fields, burnt


@pytest.mark.parametrize("strip_pixels", [1 << 20, 110 * 7, 110])
def test_round_trip_reproduces_the_class_map_one_polygon_per_region(tmp_path, strip_pixels):
    a = class_map()
    src = write(tmp_path / "classes.tif", a)
    result = polygonize_class_map(src, tmp_path / "p.gpkg", NAMES, strip_pixels=strip_pixels)
    geoms, fields, burnt = read_back(tmp_path / "p.gpkg", a.shape)
    np.testing.assert_array_equal(burnt, a)  # nodata stays nodata: never a polygon
    regions = sum(ndimage.label(a == k)[1] for k in range(4))  # 4-connected regions, naive count
    assert result.features == len(geoms) == regions
    assert shapely.is_valid(geoms).all() and set(shapely.get_type_id(geoms)) == {3}
    assert fields[2].sum() == (a != 255).sum()  # "pixels" of all polygons = valid pixels
    assert result.strips == -(-a.shape[0] // max(1, strip_pixels // a.shape[1]))


def test_sieve_matches_gdal_and_fills_removed_regions_without_holes(tmp_path):
    a = class_map(1)
    src = write(tmp_path / "classes.tif", a)
    result = polygonize_class_map(src, tmp_path / "p.gpkg", NAMES, min_area=10 * 0.25, strip_pixels=110 * 9)
    assert result.min_pixels == 10 and result.removed_regions > 0
    geoms, fields, burnt = read_back(tmp_path / "p.gpkg", a.shape)
    np.testing.assert_array_equal(burnt, features.sieve(a, 10, mask=a != 255))  # GDAL's sieve, whole map
    assert ((burnt == 255) == (a == 255)).all()  # every valid pixel is in a polygon: no holes, no new nodata
    # Outside the removed regions the map is unchanged.
    removed = np.zeros(a.shape, bool)
    for k in range(4):
        lab, n = ndimage.label(a == k)
        sizes = np.bincount(lab.ravel())
        removed |= (lab > 0) & (sizes[lab] < 10)
    np.testing.assert_array_equal(burnt[~removed], a[~removed])


def test_a_large_minimum_leaves_no_region_below_it(tmp_path):
    a = class_map(2)
    src = write(tmp_path / "classes.tif", a)
    polygonize_class_map(src, tmp_path / "p.gpkg", NAMES, min_area=60 * 0.25, strip_pixels=110 * 13)
    _, fields, burnt = read_back(tmp_path / "p.gpkg", a.shape)
    assert fields[2].min() >= 60
    assert ((burnt == 255) == (a == 255)).all()


def test_attributes_area_and_mean_confidence(tmp_path):
    a = class_map(3)
    conf = np.where(a == 255, 255, (np.arange(a.size).reshape(a.shape) % 101)).astype(np.uint8)
    src, cpath = write(tmp_path / "c.tif", a), write(tmp_path / "conf.tif", conf)
    polygonize_class_map(src, tmp_path / "p.gpkg", NAMES, confidence=cpath)
    geoms, fields, _ = read_back(tmp_path / "p.gpkg", a.shape)
    meta = pyogrio.read_info(tmp_path / "p.gpkg")
    assert list(meta["fields"]) == ["class_id", "class_name", "pixels", "area_m2", "confidence"]
    assert "32640" in meta["crs"]
    kinds, names, pixels, area, mean = fields
    assert [NAMES[k] for k in kinds] == list(names)
    np.testing.assert_allclose(area, pixels * 0.25)
    np.testing.assert_allclose(shapely.area(geoms), area)  # exact pixel outlines
    for g, value in list(zip(geoms, mean, strict=True))[:20]:  # naive per-region mean
        inside = features.geometry_mask([g], a.shape, TRANSFORM, invert=True)
        assert value == pytest.approx(conf[inside].mean(), abs=0.006)


def test_geographic_crs_gives_pixels_and_no_area_m2(tmp_path):
    a = class_map(4, 30, 40)
    src = write(tmp_path / "c.tif", a, crs="EPSG:4326", transform=from_origin(55.0, 25.0, 1e-5, 1e-5))
    result = polygonize_class_map(src, tmp_path / "p.geojson", NAMES, min_area=3)
    assert result.pixel_area_m2 is None and result.min_pixels == 3  # min_area in pixels then
    meta = pyogrio.read_info(tmp_path / "p.geojson")
    assert "area_m2" not in list(meta["fields"]) and meta["driver"] == "GeoJSON"


def test_formats_by_extension_and_refusals(tmp_path):
    a = class_map(5, 30, 40)
    src = write(tmp_path / "c.tif", a)
    polygonize_class_map(src, tmp_path / "p.shp", NAMES)
    assert pyogrio.read_info(tmp_path / "p.shp")["driver"] == "ESRI Shapefile"
    with pytest.raises(FileExistsError, match="overwrite"):
        polygonize_class_map(src, tmp_path / "p.shp", NAMES)
    polygonize_class_map(src, tmp_path / "p.shp", NAMES, overwrite=True)
    with pytest.raises(ValueError, match="unknown extension"):
        polygonize_class_map(src, tmp_path / "p.kml", NAMES)
    with pytest.raises(ValueError, match="class 3 but only 2 names"):
        polygonize_class_map(src, tmp_path / "q.gpkg", NAMES[:2])


def test_simplify_keeps_valid_polygons_with_fewer_vertices(tmp_path):
    yy, xx = np.mgrid[0:80, 0:80]
    a = ((xx - 40) ** 2 + (yy - 40) ** 2 < 30**2).astype(np.uint8)  # a pixelated disc on land
    src = write(tmp_path / "c.tif", a)
    polygonize_class_map(src, tmp_path / "exact.gpkg", NAMES)
    polygonize_class_map(src, tmp_path / "simple.gpkg", NAMES, simplify=1.0)
    exact, _, _ = read_back(tmp_path / "exact.gpkg", a.shape)
    simple, _, _ = read_back(tmp_path / "simple.gpkg", a.shape)
    assert shapely.get_num_coordinates(simple).sum() < 0.5 * shapely.get_num_coordinates(exact).sum()
    assert shapely.is_valid(simple).all()
    assert shapely.hausdorff_distance(shapely.union_all(exact), shapely.union_all(simple)) <= 1.0 + 1e-9


def test_sieve_targets_follow_chains_to_a_large_region():
    # Regions 0 (1 px) - 1 (2 px) - 2 (50 px); 3 (1 px) touches only 0. Minimum 5 px.
    sizes = np.array([1, 2, 50, 1])
    edges = np.array([[0, 1], [1, 2], [0, 3]])
    np.testing.assert_array_equal(sieve_targets(sizes, edges, 5), [2, 2, 2, 2])
    mapping, kinds, removed = sieve_regions(sizes, np.array([0, 1, 2, 3]), edges, 5)
    assert len(set(mapping)) == 1 and kinds[mapping[0]] == 2 and removed == 3
    # An isolated speck (no neighbour) is kept.
    mapping, _, removed = sieve_regions(np.array([1, 50]), np.array([0, 1]), np.zeros((0, 2), int), 5)
    assert removed == 0 and len(set(mapping)) == 2


def test_geopackage_opens_without_warnings_in_the_system_gdal(tmp_path):
    # pyogrio's own GDAL writes GeoPackage 1.4 by default; Debian's ogrinfo (GDAL 3.6) and the QGIS built on it
    # warn that 1.4 "may only be partially supported". Written as 1.2, every GDAL since 2.2 reads it plainly.
    import shutil
    import sqlite3
    import subprocess

    src = write(tmp_path / "c.tif", class_map(6, 30, 40))
    out = tmp_path / "p.gpkg"
    polygonize_class_map(src, out, NAMES)
    with sqlite3.connect(out) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200
    ogrinfo = shutil.which("ogrinfo")
    assert ogrinfo is not None, "gdal-bin is installed by `make test`"
    run = subprocess.run([ogrinfo, "-so", str(out), "p"], capture_output=True, text=True, check=True)
    assert "Feature Count" in run.stdout and "partially supported" not in run.stderr
