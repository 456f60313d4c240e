"""``predict_scene`` end to end with a real SMP model: GIS-ready outputs."""

from __future__ import annotations

import functools
import json

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.features import rasterize
from rio_cogeo.cogeo import cog_validate

from geoseg.conventions import NODATA_CLASS
from geoseg.engine.block import SceneJob
from geoseg.engine.scene import OutputPaths, predict_scene, segment_scene
from geoseg.io.class_raster import Legend
from geoseg.models.contract import Normalization, default_colors
from geoseg.options import InferenceOptions, OutputOptions, PredictOptions, TilingOptions
from geoseg.testing import PixelwisePredictor, create_test_model, write_test_scene


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(5)
    coarse = rng.integers(0, 256, size=(3, 700 // 32 + 2, 600 // 32 + 2))
    data = np.kron(coarse, np.ones((32, 32)))[:, :700, :600].astype(np.uint8)
    data[:, :, :50] = 0  # a nodata collar
    from geoseg.testing import write_test_scene

    scene = write_test_scene(tmp / "scene.tif", data, nodata=0)
    model = create_test_model(tmp / "m.safetensors", "unet", "resnet18", 3, ["bg", "roof", "water"],
                         tile_size=64, gsd=0.5)  # fmt: skip
    options = PredictOptions(
        tiling=TilingOptions(block_size=256),
        inference=InferenceOptions(device="cpu"),
        output=OutputOptions(confidence=True),
    )
    result = predict_scene(scene, model, tmp / "out", options)
    return scene, data, result


def test_class_cog_is_valid_and_gis_ready(outputs):
    scene, data, result = outputs
    classes = result.segment.classes_path
    valid, errors, _ = cog_validate(classes)
    assert valid, errors
    with rasterio.open(scene) as src, rasterio.open(classes) as ds:
        assert (ds.crs, ds.transform, ds.shape) == (src.crs, src.transform, src.shape)
        assert ds.dtypes[0] == "uint8" and ds.nodata == NODATA_CLASS
        assert ds.overviews(1), "internal overviews"
        assert json.loads(ds.tags()["CLASS_NAMES"]) == ["bg", "roof", "water"]
        assert ds.colormap(1)[1][:3] == (220, 20, 60)  # "building" in the land-cover palette
        band = ds.read(1)
    nodata = np.all(data == 0, axis=0)
    assert (band[nodata] == NODATA_CLASS).all()
    assert (band[~nodata] < 3).all()


def _same(predictor):
    return predictor


def test_confidence_cog(outputs):
    _, data, result = outputs
    path = result.segment.confidence_path
    assert cog_validate(path)[0]
    with rasterio.open(path) as ds:
        conf = ds.read(1)
    nodata = np.all(data == 0, axis=0)
    assert (conf[nodata] == NODATA_CLASS).all()
    assert conf[~nodata].min() >= 33 and conf[~nodata].max() <= 100  # 3 classes: >= 1/3
    assert len(np.unique(conf[~nodata])) > 10  # it varies with the model's certainty


def test_confidence_is_the_blended_probability_of_the_winning_class(tmp_path):
    """With a per-pixel predictor the blend must return its probabilities unchanged."""
    data = np.random.default_rng(3).integers(0, 256, (3, 150, 170)).astype(np.uint8)
    scene = write_test_scene(tmp_path / "scene.tif", data)
    predictor = PixelwisePredictor(3, 4, seed=2)
    scaling = Normalization((0.0,) * 3, (255.0,) * 3, (0.0,) * 3, (1.0,) * 3)  # x / 255
    job = SceneJob(scene, functools.partial(_same, predictor), scaling, 64, 16, 4)
    paths = OutputPaths(classes=tmp_path / "c.tif", confidence=tmp_path / "conf.tif")
    segment_scene(job, paths, Legend(list("abcd"), default_colors(4)), block_size=96)
    probs = predictor((data / 255).astype(np.float32)[None])[0]
    expected = np.rint(probs.max(axis=0) * 100)
    with rasterio.open(paths.confidence) as ds:
        conf = ds.read(1).astype(float)
    assert np.abs(conf - expected).max() <= 1  # float rounding at .5 only
    assert np.mean(conf == expected) > 0.99 and expected.std() > 5  # not a constant


def test_polygons_match_the_class_raster(outputs):
    _, _, result = outputs
    frame = pyogrio.read_dataframe(result.vector_path, layer=result.vector_path.stem)
    assert set(frame.columns) >= {"class_id", "class_name", "area_m2", "geometry"}
    assert frame.geometry.is_valid.all() and len(frame) == result.vector_features
    with rasterio.open(result.segment.classes_path) as ds:
        band, transform, crs = ds.read(1), ds.transform, ds.crs
    assert frame.crs == crs
    burned = rasterize(zip(frame.geometry, frame.class_id, strict=True), band.shape,
                       transform=transform, fill=0, dtype="uint8")  # fmt: skip
    expected = np.where(band == NODATA_CLASS, 0, band)
    np.testing.assert_array_equal(burned, expected)
    np.testing.assert_allclose(frame.area_m2, frame.geometry.area, rtol=1e-3)


def test_area_summary_counts_every_valid_pixel(outputs):
    _, data, result = outputs
    valid = int((~np.all(data == 0, axis=0)).sum())
    assert int(result.segment.class_pixels.sum()) == valid
    assert sum(result.segment.area_ha().values()) == pytest.approx(valid * 0.25 / 1e4)
