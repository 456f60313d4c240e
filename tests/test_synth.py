import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize

from geoseg.errors import InvalidInputError, OutputExistsError, UnknownChoiceError
from geoseg.geo.window import Window
from geoseg.io.raster import SceneReader, read_class_info
from geoseg.synthetic.scenes import (
    DEFAULT_ORIGIN,
    SYNTH_CLASSES,
    SYNTH_COLORS,
    make_scene,
    write_large_scene,
    write_scenes,
)

SMALL = (256, 384)


@pytest.fixture(scope="module")
def small():
    return make_scene(SMALL, seed=7)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("synth")
    return outdir, write_scenes(outdir, scenes=2, size=SMALL, seed=3)


def burn_labels(labels: gpd.GeoDataFrame, shape, transform) -> np.ndarray:
    pairs = zip(labels.geometry, labels.class_id.astype(int), strict=True)
    return rasterize(pairs, out_shape=shape, transform=transform, fill=0, dtype="uint8")


def test_same_seed_same_bytes_other_seed_differs(small):
    again = make_scene(SMALL, seed=7)
    other = make_scene(SMALL, seed=8)
    assert again.image.tobytes() == small.image.tobytes()
    assert again.classes.tobytes() == small.classes.tobytes()
    assert shapely.equals_exact(again.labels.geometry.values, small.labels.geometry.values, 0).all()
    assert (other.image != small.image).mean() > 0.5
    assert (other.classes != small.classes).mean() > 0.05


def test_non_square_shapes_and_georeferencing(small):
    assert small.image.shape == (3, *SMALL) and small.image.dtype == np.uint8
    assert small.classes.shape == small.valid.shape == SMALL
    assert small.transform == Affine(0.5, 0, DEFAULT_ORIGIN[0], 0, -0.5, DEFAULT_ORIGIN[1])
    assert small.crs.to_epsg() == 32632 and small.labels.crs.to_epsg() == 32632
    minx, miny, maxx, maxy = small.labels.total_bounds  # labels lie inside the scene
    assert DEFAULT_ORIGIN[0] <= minx and maxx <= DEFAULT_ORIGIN[0] + SMALL[1] * 0.5
    assert DEFAULT_ORIGIN[1] - SMALL[0] * 0.5 <= miny and maxy <= DEFAULT_ORIGIN[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_scene_has_every_class(seed):
    scene = make_scene(512, seed=seed)
    counts = np.bincount(scene.classes[scene.valid], minlength=len(SYNTH_CLASSES))
    assert len(counts) == len(SYNTH_CLASSES)  # nothing but class ids inside the footprint
    assert (counts / counts.sum() > 0.003).all(), counts
    assert set(scene.labels.class_name) == set(SYNTH_CLASSES[1:])


def test_classes_equal_rasterized_labels_and_labels_do_not_overlap(small):
    burned = burn_labels(small.labels, SMALL, small.transform)
    assert np.array_equal(burned[small.valid], small.classes[small.valid])
    assert (burned[~small.valid] == 0).all()  # labels are clipped to the footprint
    union = shapely.union_all(small.labels.geometry.values)
    assert small.labels.area.sum() == pytest.approx(union.area, rel=1e-9)
    names = np.array(SYNTH_CLASSES)[small.labels.class_id]
    assert (small.labels.class_name == names).all()


def test_nodata_outside_footprint(small):
    assert 0.7 < small.valid.mean() < 0.99  # a rotated, corner-cut footprint covers most
    assert (small.image[:, ~small.valid] == 0).all()
    assert (small.classes[~small.valid] == 255).all()
    assert small.image[:, small.valid].min() >= 1  # 0 never occurs as data
    assert (small.classes[small.valid] < len(SYNTH_CLASSES)).all()


def test_classes_are_textured_and_distinct_in_colour():
    scene = make_scene(512, seed=4)
    pixels = scene.image.reshape(3, -1).astype(float)
    classes = scene.classes.ravel()
    means = np.array([pixels[:, classes == k].mean(axis=1) for k in range(len(SYNTH_CLASSES))])
    spreads = np.array([pixels[:, classes == k].std(axis=1).mean() for k in range(5)])
    distance = np.linalg.norm(means[:, None] - means[None], axis=2)
    assert distance[np.triu_indices(5, 1)].min() > 15  # distinct mean colours
    assert (spreads > 4).all()  # but textured: not a flat colour lookup


def test_uint16_and_nir_variants_share_the_geometry(small):
    scene = make_scene(SMALL, seed=7, bands=4, dtype="uint16")
    assert scene.image.shape == (4, *SMALL) and scene.image.dtype == np.uint16
    assert np.array_equal(scene.classes, small.classes)
    data = scene.image[:, scene.valid]
    assert data.min() >= 1 and data.max() <= 4095 and data.max() > 2000  # a 12-bit range
    nir = scene.image[3].astype(float)
    assert nir[scene.classes == 4].mean() > 4 * nir[scene.classes == 3].mean()  # trees vs water
    rgb8 = small.image.astype(float)
    rgb16 = scene.image[:3].astype(float) * 255 / 4095
    assert np.abs(rgb16 - rgb8)[:, small.valid].mean() < 1.0  # same scene, finer quantisation


def test_written_files_are_georeferenced_with_class_metadata(written):
    _, files = written
    first = files[0]
    paths = (first.image, first.classes, first.labels)
    assert len(set(paths)) == 3 and all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert first.image.name == "scene_00.tif" and files[1].labels.name == "scene_01_labels.gpkg"
    scene = make_scene(SMALL, seed=int(np.random.SeedSequence([3, 0]).generate_state(1)[0]))
    with SceneReader(first.image) as reader:
        pixels, valid = reader.read(Window(0, 0, *SMALL))
        assert (reader.grid.height, reader.grid.width, reader.grid.count) == (*SMALL, 3)
        assert reader.grid.crs.to_epsg() == 32632 and reader.grid.transform == scene.transform
    assert np.array_equal(pixels, scene.image) and np.array_equal(valid, scene.valid)
    with rasterio.open(first.classes) as ds:
        info = read_class_info(ds)
        assert ds.nodata == 255 and np.array_equal(ds.read(1), scene.classes)
        assert json.loads(ds.tags()["CLASS_NAMES"]) == list(SYNTH_CLASSES)
    assert info.class_names == list(SYNTH_CLASSES) and info.colors == list(SYNTH_COLORS)
    labels = gpd.read_file(first.labels, layer="labels")
    assert {"class_id", "class_name"} <= set(labels.columns) and labels.crs.to_epsg() == 32632
    burned = burn_labels(labels, SMALL, scene.transform)
    assert np.array_equal(burned[scene.valid], scene.classes[scene.valid])


def test_written_scenes_do_not_overlap(written):
    _, files = written
    bounds = []
    for f in files:
        with rasterio.open(f.image) as ds:
            bounds.append(shapely.box(*ds.bounds))
    assert not bounds[0].intersects(bounds[1])
    assert bounds[1].bounds[0] - bounds[0].bounds[2] >= 100  # a gap between neighbours


def test_write_scenes_skips_existing_files_unless_overwrite(tmp_path):
    files = write_scenes(tmp_path, scenes=1, size=64, seed=5)[0]
    original = files.classes.read_bytes()
    files.image.write_bytes(b"kept")
    files.labels.unlink()
    write_scenes(tmp_path, scenes=1, size=64, seed=5)
    assert files.image.read_bytes() == b"kept"  # an existing file is reused
    assert files.classes.read_bytes() == original
    assert len(gpd.read_file(files.labels)) > 0  # a missing one is made again
    write_scenes(tmp_path, scenes=1, size=64, seed=5, overwrite=True)
    with rasterio.open(files.image) as ds:
        assert ds.count == 3 and ds.nodata == 0
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary leftovers


@pytest.mark.parametrize(("bands", "dtype"), [(3, "uint8"), (4, "uint16")])
def test_large_scene_strips_equal_make_scene(tmp_path, bands, dtype):
    shape = (203, 150)
    image_path, classes_path = tmp_path / "big.tif", tmp_path / "big_classes.tif"
    write_large_scene(
        image_path, shape, seed=11, bands=bands, dtype=dtype, classes_path=classes_path,
        strip_rows=37,
    )  # fmt: skip
    scene = make_scene(shape, seed=11, bands=bands, dtype=dtype)
    with rasterio.open(image_path) as ds:
        assert ds.nodata == 0 and ds.transform == scene.transform and ds.crs == scene.crs
        assert np.array_equal(ds.read(), scene.image)  # seamless: strip edges are invisible
    with rasterio.open(classes_path) as ds:
        assert ds.nodata == 255 and np.array_equal(ds.read(1), scene.classes)
        assert ds.colormap(1)[2][:3] == SYNTH_COLORS[2]
    with pytest.raises(OutputExistsError):
        write_large_scene(image_path, shape, seed=11)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"size": (8, 100)}, InvalidInputError),
        ({"size": (1, 2, 3)}, InvalidInputError),
        ({"bands": 5}, InvalidInputError),
        ({"dtype": "float32"}, UnknownChoiceError),
    ],
)
def test_invalid_parameters_raise_with_the_fix(kwargs, error):
    with pytest.raises(error, match=r"expected|choose one of"):
        make_scene(**{"size": 64, **kwargs})
