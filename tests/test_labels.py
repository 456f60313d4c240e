"""Labels as chips on an image's grid: CRS handling, raster resampling, ignore mode, bad inputs."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.features import rasterize
from rasterio.warp import Resampling, reproject
from shapely import affinity
from shapely.geometry import Point, Polygon, box

from geoseg.errors import InvalidInputError, UnknownChoiceError
from geoseg.geo.geobox import RasterGrid
from geoseg.geo.window import Window, cover
from geoseg.io.labels import (
    IGNORE,
    FoundClasses,
    LabelSpec,
    RasterLabels,
    VectorLabels,
    label_specs,
    resolve_classes,
)
from geoseg.io.raster import write_raster
from geoseg.testing import UTM_CRS, utm_transform

CLASSES = ("background", "building", "water")
GSD = 0.5
SIZE = (150, 210)  # rows, cols


def image_grid(height: int = SIZE[0], width: int = SIZE[1]) -> RasterGrid:
    from rasterio.crs import CRS

    return RasterGrid(width, height, CRS.from_user_input(UTM_CRS), utm_transform(GSD), "uint8", 3)


def pixel_polygons() -> gpd.GeoDataFrame:
    """Boxes, a rotated box and a disc in UTM, drawn in pixel units then placed on the grid."""
    shapes = [
        (box(10, 12, 60, 40), "building"),
        (affinity.rotate(box(80, 20, 150, 50), 27), "building"),
        (Point(60, 110).buffer(25), "water"),
        (Polygon([(150.2, 90.3), (205.1, 100.4), (190.3, 145.2), (140.4, 139.8)]), "water"),
        (box(170, 5, 209, 30), "building"),
    ]
    t = utm_transform(GSD)
    geoms = [affinity.affine_transform(g, [t.a, t.b, t.d, t.e, t.c, t.f]) for g, _ in shapes]
    return gpd.GeoDataFrame({"class_name": [n for _, n in shapes]}, geometry=geoms, crs=UTM_CRS)


def truth_raster(frame: gpd.GeoDataFrame, fill: int = 0) -> np.ndarray:
    index = {n: i for i, n in enumerate(CLASSES)}
    shapes = [(g, index[n]) for g, n in zip(frame.geometry, frame.class_name, strict=True)]
    return rasterize(shapes, out_shape=SIZE, transform=utm_transform(GSD), fill=fill, dtype="uint8")


def chips_assembled(source, grid: RasterGrid, block: int) -> np.ndarray:
    out = np.zeros((grid.height, grid.width), np.uint8)
    for w in cover(grid.window, block):
        out[w.slices()] = source.chip(w)
    return out


@pytest.mark.parametrize(
    ("name", "epsg"), [("labels.geojson", 4326), ("labels.shp", 3857), ("labels.gpkg", 32632)]
)
def test_vector_labels_in_another_crs_match_utm_truth_to_the_pixel(tmp_path, name, epsg):
    frame = pixel_polygons()
    path = tmp_path / name
    frame.to_crs(epsg=epsg).to_file(path)
    grid = image_grid()
    labels = VectorLabels(path, grid, CLASSES)
    expected = truth_raster(frame)
    assert (expected > 0).mean() > 0.2
    for block in (64, 1000):  # chips of several sizes and offsets, and the whole image
        np.testing.assert_array_equal(chips_assembled(labels, grid, block), expected)


def test_ignore_mode_leaves_uncovered_pixels_out(tmp_path):
    frame = pixel_polygons()
    frame.to_file(tmp_path / "sparse.gpkg")
    labels = LabelSpec(str(tmp_path / "sparse.gpkg"), unlabeled="ignore").open(
        image_grid(), CLASSES
    )
    chip = labels.chip(Window(0, 0, SIZE[0], SIZE[1]))
    np.testing.assert_array_equal(chip, truth_raster(frame, fill=IGNORE))
    assert (chip == IGNORE).mean() > 0.5 and not (chip == 0).any()


def test_features_outside_the_image_are_not_read(tmp_path):
    frame = pixel_polygons()
    far = gpd.GeoDataFrame({"class_name": ["water"]}, geometry=[box(0, 0, 10, 10)], crs=UTM_CRS)
    gpd.GeoDataFrame(pd_concat(frame, far), crs=UTM_CRS).to_file(tmp_path / "l.gpkg")
    labels = VectorLabels(tmp_path / "l.gpkg", image_grid(), CLASSES)
    assert len(labels.geometries) == len(frame)


def pd_concat(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def test_class_ids_in_a_field_are_used_as_ids(tmp_path):
    frame = pixel_polygons()
    frame["class_id"] = [CLASSES.index(n) for n in frame.class_name]
    frame.to_file(tmp_path / "ids.gpkg")
    spec = LabelSpec(str(tmp_path / "ids.gpkg"), class_field="class_id")
    assert spec.inspect() == FoundClasses(str(tmp_path / "ids.gpkg"), None, 2)
    chip = spec.open(image_grid(), CLASSES).chip(Window(0, 0, *SIZE))
    np.testing.assert_array_equal(chip, truth_raster(frame))


@pytest.mark.parametrize("flags", [["yes", "Yes", "yes", "true", "yes"], [1, 1, 1, 1, 1]])
def test_an_osm_style_flag_field_names_the_class_after_the_field(tmp_path, flags):
    frame = pixel_polygons()
    frame = frame[frame.class_name == "building"].assign(building=flags[:3])
    frame.drop(columns="class_name").to_file(tmp_path / "osm.gpkg")
    spec = LabelSpec(str(tmp_path / "osm.gpkg"), class_field="building")
    classes = resolve_classes([spec.inspect()], None)
    assert classes == ("background", "building")
    chip = spec.open(image_grid(), classes).chip(Window(0, 0, *SIZE))
    np.testing.assert_array_equal(chip, truth_raster(frame))  # building is id 1 in both schemes


def test_raster_labels_on_another_grid_equal_a_whole_reprojection(tmp_path):
    rng = np.random.default_rng(3)
    coarse = np.kron(rng.integers(0, 3, (20, 30)), np.ones((5, 5), int)).astype(np.uint8)
    coarse[:10, :10] = 255  # nodata
    src_transform = rasterio.Affine(0.8, 0.1, 499_990.0, 0.05, -0.7, 5_300_010.0)  # rotated
    path = tmp_path / "classes.tif"
    write_raster(path, coarse, "EPSG:32632", src_transform, nodata=255)
    grid = image_grid()
    whole = np.full(SIZE, 255, np.uint8)
    reproject(coarse, whole, src_transform=src_transform, src_crs="EPSG:32632", src_nodata=255,
              dst_transform=grid.transform, dst_crs=grid.crs, dst_nodata=255,
              resampling=Resampling.nearest)  # fmt: skip
    labels = RasterLabels(path, grid, CLASSES)
    assert not labels.same_grid
    np.testing.assert_array_equal(chips_assembled(labels, grid, 64), whole)
    assert (whole == 255).any() and (whole < 3).any()


def test_class_raster_names_are_remapped_by_name(tmp_path):
    data = np.array([[0, 1, 2, 255]] * 4, np.uint8)
    tags = {"CLASS_NAMES": json.dumps(["background", "water", "building"])}
    path = tmp_path / "named.tif"
    write_raster(path, data, UTM_CRS, utm_transform(GSD), nodata=255, tags=tags)
    labels = RasterLabels(path, image_grid(4, 4), CLASSES)
    assert labels.same_grid
    np.testing.assert_array_equal(labels.chip(Window(0, 0, 4, 4))[0], [0, 2, 1, 255])


def test_classes_resolved_background_first_then_sorted():
    found = [FoundClasses("a", ("water", "building"), 2), FoundClasses("b", ("tree",), 1)]
    assert resolve_classes(found, None) == ("background", "building", "tree", "water")
    assert resolve_classes([FoundClasses("c", None, 3)], None) == (
        "background", "class_1", "class_2", "class_3",
    )  # fmt: skip
    with pytest.raises(InvalidInputError, match=r"\['tree'\] are not in classes"):
        resolve_classes(found, ["background", "building", "water"])


def test_missing_class_field_lists_the_available_fields(tmp_path):
    frame = pixel_polygons().rename(columns={"class_name": "kind"})
    frame["height"] = 3.0
    frame.to_file(tmp_path / "l.gpkg")
    with pytest.raises(
        InvalidInputError, match=r"no field 'class_name'; available fields: kind, height"
    ):
        LabelSpec(str(tmp_path / "l.gpkg")).inspect()


def test_label_files_must_be_one_or_one_per_image(tmp_path):
    pixel_polygons().to_file(tmp_path / "l.gpkg")
    one = str(tmp_path / "l.gpkg")
    assert len(label_specs(one, 3, "class_name", "ignore")) == 3
    with pytest.raises(InvalidInputError, match="2 label files for 3 images"):
        label_specs([one, one], 3, "class_name", "background")
    with pytest.raises(UnknownChoiceError, match="choose one of: background, ignore"):
        label_specs(one, 1, "class_name", "skip")
