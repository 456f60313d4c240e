"""Vectorization against oracles: the whole-image result, the raster itself, geodesic areas."""

from __future__ import annotations

import json
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pyproj
import pytest
import rasterio.features
import shapely
from affine import Affine

from geoseg.conventions import NODATA_CLASS
from geoseg.errors import (
    InputFileNotFoundError,
    InvalidInputError,
    OutputExistsError,
    UnknownChoiceError,
)
from geoseg.geo.window import Window
from geoseg.io.raster import write_raster
from geoseg.options import VECTOR_FORMATS, VectorOptions
from geoseg.vector.polygons import SceneMerger, canonical, polygonize_block
from geoseg.vector.vectorize import vectorize_raster

NAMES = ["background", "water", "forest", "urban"]
COLORS = [(0, 0, 0), (0, 0, 255), (0, 128, 0), (200, 0, 0)]
UTM = "EPSG:32631"
UTM_TRANSFORM = Affine(10, 0, 500_000, 0, -10, 5_600_000)  # 10 m pixels on the central meridian
GEOGRAPHIC_TRANSFORM = Affine(0.0002, 0, 10.0, 0, -0.0001, 60.0)  # about 11 m x 11 m at 60 N
GEOD = pyproj.Geod(ellps="WGS84")


def write_classes(path: Path, classes: np.ndarray, crs=UTM, transform=UTM_TRANSFORM) -> Path:
    tags = {"CLASS_NAMES": json.dumps(NAMES)}
    write_raster(path, classes.astype(np.uint8), crs, transform, NODATA_CLASS, COLORS, tags)
    return path


def blobs(seed: int, height: int = 100, width: int = 100, noise: float = 0.08) -> np.ndarray:
    """Square regions of random classes with speckle and a nodata corner."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, len(NAMES), size=(height // 6 + 1, width // 6 + 1))
    classes = np.kron(coarse, np.ones((6, 6), dtype=int))[:height, :width]
    speckle = rng.random((height, width)) < noise
    classes[speckle] = rng.integers(0, len(NAMES), int(speckle.sum()))
    classes[80:, :15] = NODATA_CLASS
    return classes.astype(np.uint8)


def read(path: Path) -> gpd.GeoDataFrame:
    if path.suffix == ".parquet":
        return gpd.read_parquet(path)
    return gpd.read_file(path, layer=path.stem if path.suffix == ".gpkg" else None)


def keyed(frame: gpd.GeoDataFrame) -> list[tuple[int, bytes]]:
    """Features as comparable values: class and normalized geometry."""
    geometries = shapely.normalize(frame.geometry.values)
    return sorted(zip(frame.class_id.tolist(), shapely.to_wkb(geometries), strict=True))


def vectorize(
    tmp_path: Path, classes: np.ndarray, name: str = "out.gpkg", vector_format=None, **options
):
    source = write_classes(tmp_path / "classes.tif", classes)
    result = vectorize_raster(
        source, tmp_path / name, VectorOptions(**options), vector_format=vector_format,
        overwrite=True,
    )  # fmt: skip
    return result, read(result.path)


def test_region_across_block_lines_is_one_feature(tmp_path):
    classes = np.zeros((100, 100), dtype=np.uint8)
    classes[5:95, 10:14] = 1  # a comb crossing every block line of 32-pixel blocks
    classes[5:9, 10:90] = 1
    classes[20:90:20, 10:90] = 1
    result, frame = vectorize(tmp_path, classes, block_size=32)
    assert result.features == len(frame) == 1
    assert frame.class_name.tolist() == ["water"]
    assert frame.geometry.iloc[0].area == pytest.approx(np.count_nonzero(classes) * 100)
    assert frame.geometry.iloc[0].is_valid


@pytest.mark.parametrize("block_size", [16, 37])
def test_output_is_identical_for_any_block_size(tmp_path, block_size):
    classes = blobs(1)
    _, whole = vectorize(tmp_path, classes, "whole.gpkg", block_size=4096)
    _, blocked = vectorize(tmp_path, classes, "blocked.gpkg", block_size=block_size)
    assert len(whole) > 200
    assert keyed(blocked) == keyed(whole)
    assert np.array_equal(np.sort(blocked.area_m2), np.sort(whole.area_m2))
    assert blocked.is_valid.all() and set(blocked.geom_type) == {"Polygon"}


@pytest.mark.parametrize("seed", [2, 3])
def test_pure_blocks_and_merger_match_whole_image(seed):
    """The building blocks alone (as a distributed executor would run them) against one call."""
    classes = np.random.default_rng(seed).integers(0, 3, size=(45, 52)).astype(np.uint8)
    whole = polygonize_block(classes, Window(0, 0, 45, 52), classes.shape)
    merger, geometries, class_ids = SceneMerger(), [], []
    for row in range(0, 45, 10):
        pending = []
        for col in range(0, 52, 13):
            window = Window(row, col, min(10, 45 - row), min(13, 52 - col))
            done, done_ids, rest = polygonize_block(
                classes[window.slices()], window, classes.shape
            ).split()
            geometries.append(done)
            class_ids.append(done_ids)
            pending.append(rest)
        merged, merged_ids = merger.close_row(pending)
        geometries.append(merged)
        class_ids.append(merged_ids)
    blocked = list(
        zip(np.concatenate(class_ids), canonical(np.concatenate(geometries)), strict=True)
    )
    expected = list(zip(whole.class_ids, canonical(whole.geometries), strict=True))
    assert sorted((int(c), g.wkb) for c, g in blocked) == sorted(
        (int(c), g.wkb) for c, g in expected
    )


def test_regions_touching_at_a_corner_stay_apart(tmp_path):
    classes = np.zeros((64, 64), dtype=np.uint8)
    classes[24:32, 24:32] = 2  # meets the next square only at the corner of four blocks
    classes[32:40, 32:40] = 2
    classes[4:8, 4:8] = 2  # and a pair meeting at a corner inside one block
    classes[8:12, 8:12] = 2
    result, frame = vectorize(tmp_path, classes, block_size=32)
    assert result.features == 4
    assert sorted(frame.geometry.area / 100) == [16, 16, 64, 64]


def test_polygons_rasterize_back_to_the_classes(tmp_path):
    classes = blobs(4)
    _, frame = vectorize(tmp_path, classes, block_size=32)
    shapes = zip(frame.geometry, frame.class_id, strict=True)
    back = rasterio.features.rasterize(shapes, classes.shape, fill=0, transform=UTM_TRANSFORM)
    vectorized = (classes != 0) & (classes != NODATA_CLASS)
    assert np.array_equal(back[vectorized], classes[vectorized])
    assert not back[~vectorized].any()  # nothing over background or nodata


@pytest.mark.parametrize("simplify", [0.0, 25.0])
def test_no_polygon_over_nodata(tmp_path, simplify):
    classes = blobs(5)
    _, frame = vectorize(tmp_path, classes, simplify=simplify, block_size=32)
    rows, cols = np.nonzero(classes == NODATA_CLASS)
    x0 = UTM_TRANSFORM.c + cols * UTM_TRANSFORM.a
    y0 = UTM_TRANSFORM.f + rows * UTM_TRANSFORM.e
    nodata = shapely.union_all(shapely.box(x0, y0 - 10, x0 + 10, y0))
    assert shapely.intersection(shapely.union_all(frame.geometry.values), nodata).area == 0


@pytest.mark.parametrize("vector_format", sorted(VECTOR_FORMATS))
def test_every_format_round_trips(tmp_path, vector_format):
    classes = blobs(6)
    name = "out" + VECTOR_FORMATS[vector_format]
    result, frame = vectorize(tmp_path, classes, name, vector_format=vector_format, block_size=32)
    assert result.vector_format == vector_format and result.path == tmp_path / name
    assert list(frame.columns) == ["class_id", "class_name", "area_m2", "geometry"]
    assert len(frame) == result.features > 100
    assert frame.is_valid.all() and set(frame.geom_type) == {"Polygon"}
    assert frame.groupby("class_name").size().to_dict() == result.class_features
    totals = frame.groupby("class_name").area_m2.sum()
    assert totals.to_dict() == pytest.approx(result.area_m2, rel=1e-9)
    expected_crs = "EPSG:4326" if vector_format == "geojson" else UTM
    assert frame.crs == pyproj.CRS(expected_crs)
    has_sidecar = (tmp_path / "out.qml").exists()
    assert has_sidecar == (vector_format != "gpkg")
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("vector_format", sorted(VECTOR_FORMATS))
def test_nothing_to_vectorize_writes_an_empty_layer(tmp_path, vector_format):
    classes = np.zeros((40, 40), dtype=np.uint8)
    classes[:5] = NODATA_CLASS
    name = "empty" + VECTOR_FORMATS[vector_format]
    result, frame = vectorize(tmp_path, classes, name, block_size=16)
    assert result.features == len(frame) == 0 and result.class_features == {}
    if vector_format != "geojson":  # GeoJSON has no schema apart from its features
        assert {"class_id", "class_name", "area_m2"} <= set(frame.columns)


def test_geojson_is_wgs84_with_the_same_polygons(tmp_path):
    classes = blobs(7)
    _, native = vectorize(tmp_path, classes, "out.gpkg", block_size=32)
    _, wgs84 = vectorize(tmp_path, classes, "out.geojson", block_size=32)
    assert pyogrio.read_info(tmp_path / "out.geojson")["crs"] == "EPSG:4326"
    west, south, east, north = wgs84.total_bounds  # degrees near 3 E, 50.5 N, not metres
    assert 2.99 < west < east < 3.02 and 50.5 < south < north < 50.6

    def by_place(frame: gpd.GeoDataFrame) -> np.ndarray:
        centre = frame.geometry.centroid
        return frame.geometry.values[
            np.lexsort([centre.y.round(), centre.x.round(), frame.class_id])
        ]

    back, expected = by_place(wgs84.to_crs(UTM)), by_place(native)
    assert np.allclose(shapely.area(back), shapely.area(expected), rtol=2e-3)
    assert shapely.hausdorff_distance(back, expected).max() < 0.05  # RFC 7946: 7 decimals


@pytest.mark.parametrize(
    ("crs", "transform"),
    [(UTM, UTM_TRANSFORM), ("EPSG:3857", Affine(15, 0, 333_000, 0, -15, 6_530_000))],
    ids=["utm", "web-mercator"],
)
def test_area_matches_geodesic_area_in_a_projected_crs(tmp_path, crs, transform):
    source = write_classes(tmp_path / "c.tif", blobs(8, noise=0.0), crs, transform)
    frame = read(vectorize_raster(source, tmp_path / "out.gpkg", VectorOptions(block_size=32)).path)
    lonlat = frame.to_crs("EPSG:4326").geometry
    geodesic = np.array([abs(GEOD.geometry_area_perimeter(g)[0]) for g in lonlat])
    assert np.allclose(frame.area_m2, geodesic, rtol=0.005)
    assert not np.allclose(frame.geometry.area, geodesic, rtol=1e-4)  # the scale factor counts


def test_area_in_square_metres_for_a_geographic_raster(tmp_path):
    source = write_classes(
        tmp_path / "c.tif", blobs(9, noise=0.0), "EPSG:4326", GEOGRAPHIC_TRANSFORM
    )
    result = vectorize_raster(source, tmp_path / "out.gpkg", VectorOptions(block_size=32))
    frame = read(result.path)
    geodesic = np.array([abs(GEOD.geometry_area_perimeter(g)[0]) for g in frame.geometry])
    assert frame.area_m2.min() > 100  # square metres, not square degrees
    assert np.allclose(frame.area_m2, geodesic, rtol=0.005)


def test_min_area_sieves_small_regions(tmp_path):
    classes = np.zeros((64, 64), dtype=np.uint8)
    classes[:, :32] = 2
    classes[10, 10] = 1  # 1 pixel, inside forest: becomes forest
    classes[20:22, 40] = 3  # 2 pixels, inside background: becomes background
    classes[40:44, 40:44] = 3  # 16 pixels: kept
    classes[50, 31:33] = 1  # 2 pixels astride the forest/background border and a block line
    result, frame = vectorize(tmp_path, classes, min_area=5 * 100, block_size=16)
    assert sorted(frame.class_name) == ["forest", "urban"]
    assert frame.area_m2.min() >= 500
    forest = frame.geometry[frame.class_name == "forest"].iloc[0]
    assert len(forest.interiors) == 0 and forest.area == pytest.approx(64 * 32 * 100, rel=0.002)
    assert result.class_features == {"forest": 1, "urban": 1}


def test_sieve_does_not_depend_on_block_size(tmp_path):
    classes = blobs(10, height=120, width=110, noise=0.12)
    _, whole = vectorize(tmp_path, classes, "whole.gpkg", min_area=700, block_size=4096)
    _, blocked = vectorize(tmp_path, classes, "blocked.gpkg", min_area=700, block_size=16)
    _, plain = vectorize(tmp_path, classes, "plain.gpkg", block_size=4096)
    assert len(whole) < len(plain) / 2
    assert whole.area_m2.min() >= 700
    assert keyed(blocked) == keyed(whole)


def test_simplify_keeps_shared_borders_and_drops_vertices(tmp_path):
    rows, cols = np.mgrid[0:96, 0:96]
    classes = np.where(rows < cols, 1, 2).astype(np.uint8)  # a staircase diagonal border
    classes[(rows - 30) ** 2 + (cols - 70) ** 2 < 150] = 3  # a disc across block lines
    classes[:, 90:] = 0
    _, exact = vectorize(tmp_path, classes, "exact.gpkg", block_size=32)
    _, simple = vectorize(tmp_path, classes, "simple.gpkg", simplify=20, block_size=32)
    assert len(simple) == len(exact) == 3 and simple.is_valid.all()
    assert (
        shapely.get_num_coordinates(simple.geometry).sum()
        < shapely.get_num_coordinates(exact.geometry).sum() / 3
    )
    polygons = simple.geometry.values
    union = shapely.union_all(polygons)
    assert shapely.area(polygons).sum() == pytest.approx(union.area, rel=1e-6)  # no overlaps
    assert len(union.interiors) == 0  # no gaps
    water, forest = (simple.geometry[simple.class_id == i].iloc[0] for i in (1, 2))
    border = water.intersection(forest)
    assert border.length > 800 and border.area == 0  # still touching along a line


def test_simplify_with_every_class_keeps_the_outline(tmp_path):
    classes = blobs(11, noise=0.02)
    _, frame = vectorize(tmp_path, classes, simplify=15, background=None, block_size=32)
    valid_area = np.count_nonzero(classes != NODATA_CLASS) * 100
    assert set(frame.class_id) == {0, 1, 2, 3}
    assert shapely.union_all(frame.geometry.values).area == pytest.approx(valid_area)
    assert frame.geometry.area.sum() == pytest.approx(valid_area)


def test_refuses_to_overwrite_unless_asked(tmp_path):
    source = write_classes(tmp_path / "c.tif", blobs(12))
    target = tmp_path / "out.fgb"
    target.write_text("precious")
    with pytest.raises(OutputExistsError, match="overwrite"):
        vectorize_raster(source, target)
    assert target.read_text() == "precious"
    vectorize_raster(source, target, overwrite=True)
    assert len(read(target)) > 0


@pytest.mark.parametrize("vector_format", ["gpkg", "shp", "parquet"])
def test_failure_leaves_no_partial_files(tmp_path, vector_format):
    source = write_classes(tmp_path / "c.tif", blobs(13))
    target = tmp_path / f"out{VECTOR_FORMATS[vector_format]}"
    vectorize_raster(source, target)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(done: int, total: int) -> None:
        if done == 5:
            raise KeyboardInterrupt  # whatever stops the run, it surfaces unchanged

    with pytest.raises(KeyboardInterrupt):
        vectorize_raster(
            source, target, VectorOptions(block_size=16), overwrite=True, progress=fail
        )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_geopackage_carries_a_default_qgis_style(tmp_path):
    result, frame = vectorize(tmp_path, blobs(14), "styled.gpkg")
    with sqlite3.connect(result.path) as db:
        rows = db.execute(
            "SELECT f_table_name, f_geometry_column, styleQML, styleSLD, useAsDefault "
            "FROM layer_styles"
        ).fetchall()
        registered = db.execute(
            "SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'"
        ).fetchone()
    assert registered == ("attributes",)
    assert len(rows) == 1
    table, geometry_column, qml, sld, default = rows[0]
    assert (table, geometry_column, default) == ("styled", "geom", 1)
    renderer = ET.fromstring(qml.split("\n", 1)[1]).find("renderer-v2")
    assert renderer is not None and renderer.get("attr") == "class_id"
    labels = {c.get("value"): c.get("label") for c in renderer.iter("category")}
    assert labels == {"1": "water", "2": "forest", "3": "urban"}
    fills = [p.get("v") for p in renderer.iter("prop") if p.get("k") == "color"]
    assert fills == ["0,0,255,255", "0,128,0,255", "200,0,0,255"]
    ET.fromstring(sld)
    assert set(frame.class_name) <= set(labels.values())


def test_progress_counts_blocks(tmp_path):
    calls = []
    source = write_classes(tmp_path / "c.tif", blobs(15))
    vectorize_raster(
        source, tmp_path / "o.gpkg", VectorOptions(block_size=32),
        progress=lambda *a: calls.append(a),
    )  # fmt: skip
    assert calls == [(i, 16) for i in range(1, 17)]


def test_errors_name_the_file_and_the_fix(tmp_path):
    source = write_classes(tmp_path / "c.tif", blobs(16))
    with pytest.raises(InputFileNotFoundError, match=r"missing\.tif"):
        vectorize_raster(tmp_path / "missing.tif", tmp_path / "o.gpkg")
    with pytest.raises(UnknownChoiceError, match="fgb, geojson, gpkg, parquet, shp"):
        vectorize_raster(source, tmp_path / "o.kml")
    with pytest.raises(UnknownChoiceError, match="'kml'"):
        vectorize_raster(source, tmp_path / "o.gpkg", vector_format="kml")
    with pytest.raises(InvalidInputError, match=r"name it o\.fgb"):
        vectorize_raster(source, tmp_path / "o.gpkg", vector_format="fgb")
    with pytest.raises(InvalidInputError, match=r"min area -1 is invalid; set min_area to a num"):
        VectorOptions(min_area=-1)
    with pytest.raises(InvalidInputError, match=r"block size 4 .* set block_size to .* >= 16"):
        VectorOptions(block_size=4)
    with pytest.raises(InvalidInputError, match=r"c\.tif: background=255"):
        vectorize_raster(source, tmp_path / "o.gpkg", VectorOptions(background=NODATA_CLASS))
    rgb = tmp_path / "rgb.tif"
    write_raster(rgb, np.zeros((3, 8, 8), np.uint8), UTM, UTM_TRANSFORM)
    with pytest.raises(InvalidInputError, match=r"expected one band"):
        vectorize_raster(rgb, tmp_path / "o.gpkg")
    no_crs = tmp_path / "nocrs.tif"
    tags = {"CLASS_NAMES": json.dumps(NAMES)}
    write_raster(no_crs, blobs(17), None, Affine(1, 0, 0, 0, -1, 100), NODATA_CLASS, None, tags)
    with pytest.raises(InvalidInputError, match="no CRS"):
        vectorize_raster(no_crs, tmp_path / "o.geojson")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tif", "nocrs.tif", "rgb.tif"]
