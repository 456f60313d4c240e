"""Real GIS clients on a small prediction: GDAL's tools, QGIS (qgis_process, PyQGIS), STAC schemas.

GDAL and QGIS tests skip when the tools are not installed (``make gis-check`` installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
from stac_schemas import validation_errors

from geoseg.engine.provenance import write_predict_item
from geoseg.engine.scene import predict_scene
from geoseg.options import OutputOptions, PredictOptions
from geoseg.testing import create_test_model, write_test_scene

CLASSES = ["background", "water", "building"]
COLORS = {"background": "#e0e0d8", "water": "#1f78b4", "building": "#dc143c"}
QGIS_PYTHON = "/usr/bin/python3"
PROBE = Path(__file__).parent / "data" / "qgis_probe.py"
COG_CHECK = "/usr/lib/python3/dist-packages/osgeo_utils/samples/validate_cloud_optimized_geotiff.py"
ENV = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}


def has_pyqgis() -> bool:
    if not os.path.exists(QGIS_PYTHON):
        return False
    probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True)
    return probe.returncode == 0


needs_gdal = pytest.mark.skipif(not shutil.which("gdalinfo"), reason="gdal-bin not installed")
needs_qgis = pytest.mark.skipif(not has_pyqgis(), reason="QGIS (PyQGIS) not installed")
needs_qgis_process = pytest.mark.skipif(
    not shutil.which("qgis_process.bin"), reason="qgis_process not installed"
)


@pytest.fixture(scope="module")
def prediction(tmp_path_factory):
    """A 200 x 300 scene with a 20-row nodata collar, predicted to COGs, GPKG, Shapefile, STAC."""
    folder = tmp_path_factory.mktemp("gis")
    rng = np.random.default_rng(3)
    coarse = rng.integers(1, 256, size=(3, 15, 21))
    data = np.kron(coarse, np.ones((16, 16)))[:, :200, :300].astype(np.uint8)
    data[:, :20] = 0
    scene = write_test_scene(folder / "scene.tif", data, nodata=0)
    model = create_test_model(
        folder / "m.safetensors", "unet", "resnet18", 3, CLASSES, tile_size=64
    )
    options = PredictOptions(
        output=OutputOptions(vector_formats=("gpkg", "shp"), confidence=True), overwrite=True
    )
    result = predict_scene(scene, model, folder / "out", options)
    record = write_predict_item(result, model, options)
    return result, record


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=300)


def test_stac_item_validates_and_lists_every_file(prediction):
    _, record = prediction
    item = json.loads(record.read_text())
    assert validation_errors(item) == []
    hrefs = {a["href"] for a in item["assets"].values()}
    folder = record.parent
    on_disk = {f"./{p.name}" for p in folder.iterdir() if not p.name.endswith(".stac.json")}
    assert hrefs == on_disk  # every file, side-cars and Shapefile parts included
    assert all(not link["href"].startswith(("file:", "/")) for link in item["links"])
    assert item["assets"]["classes"]["file:checksum"].startswith("1220")
    assert item["properties"]["mlm:output"][0]["classification:classes"][1]["name"] == "water"


def test_stac_footprint_is_the_valid_data_counter_clockwise(prediction):
    import shapely

    from geoseg.io.raster import raster_grid

    result, record = prediction
    item = json.loads(record.read_text())
    footprint = shapely.geometry.shape(item["geometry"])
    _, raster_bbox = raster_grid(result.segment.classes_path).footprint_wgs84()
    assert item["bbox"][3] < raster_bbox[3] - 0.00008  # the 20-row (10 m) collar is left out
    assert item["bbox"][1] == pytest.approx(raster_bbox[1], abs=1e-6)
    assert footprint.exterior.is_ccw


@needs_gdal
def test_gdalinfo_reads_categories_colour_table_and_rat(prediction):
    result, _ = prediction
    info = json.loads(run("gdalinfo", "-json", str(result.segment.classes_path)).stdout)
    band = info["bands"][0]
    assert band["categories"] == CLASSES
    entries = band["colorTable"]["entries"]
    assert len(entries) == len(CLASSES)
    assert ["#{:02x}{:02x}{:02x}".format(*e[:3]) for e in entries] == list(COLORS.values())
    rat = info["rat"]
    assert [row["f"][1] for row in rat["row"]] == CLASSES


@needs_gdal
def test_gdal_validates_the_cogs(prediction):
    result, _ = prediction
    for path in (result.segment.classes_path, result.segment.confidence_path):
        if os.path.exists(COG_CHECK):
            check = run(QGIS_PYTHON, COG_CHECK, str(path))
            assert check.returncode == 0 and "is a valid cloud optimized" in check.stdout
        else:
            from rio_cogeo.cogeo import cog_validate

            assert cog_validate(str(path))[0]


@needs_gdal
def test_ogrinfo_opens_the_geopackage_1_2_without_warning(prediction):
    result, _ = prediction
    gpkg = result.vector_paths[0]
    info = run("ogrinfo", "-so", "-al", str(gpkg))
    assert info.returncode == 0
    assert "Warning" not in info.stderr + info.stdout
    with sqlite3.connect(gpkg) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10200


@needs_qgis
def test_qgis_loads_rasters_and_polygons_styled_with_class_names(prediction):
    result, _ = prediction
    seg = result.segment
    probe = run(QGIS_PYTHON, str(PROBE), str(seg.classes_path), str(seg.confidence_path),
                str(result.vector_paths[0]))  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    out = json.loads(probe.stdout.strip().splitlines()[-1])
    assert out["raster_renderer"] == "paletted"
    assert [[int(v), label, color] for v, label, color in out["palette"]] == [
        [i, name, COLORS[name]] for i, name in enumerate(CLASSES)
    ]
    assert out["confidence_renderer"] == "singlebandpseudocolor"
    assert out["vector_renderer"] == "categorizedSymbol"
    assert [c[1:] for c in out["categories"]] == [[n, COLORS[n]] for n in CLASSES[1:]]
    assert out["messages"] == []


@needs_qgis_process
def test_qgis_checkvalidity_finds_no_invalid_polygon(prediction, tmp_path):
    result, _ = prediction
    check = run("qgis_process.bin", "run", "qgis:checkvalidity", "--json",
                f"--INPUT_LAYER={result.vector_paths[0]}", "--METHOD=2",
                f"--VALID_OUTPUT={tmp_path / 'valid.gpkg'}",
                f"--INVALID_OUTPUT={tmp_path / 'invalid.gpkg'}",
                f"--ERROR_OUTPUT={tmp_path / 'errors.gpkg'}")  # fmt: skip
    assert check.returncode == 0, check.stderr
    results = json.loads(check.stdout[check.stdout.index("{") :])["results"]
    assert results["INVALID_COUNT"] == 0 and results["ERROR_COUNT"] == 0
    assert results["VALID_COUNT"] == result.vector_features // 2  # two layers: gpkg, shp
