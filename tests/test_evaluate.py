"""Evaluation against hand-computed numbers, on rasters and on vectors; windowing; JSON; errors."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from geoseg.errors import InvalidInputError
from geoseg.io.raster import write_raster
from geoseg.options import LabelOptions
from geoseg.testing import UTM_CRS, UTM_ORIGIN, utm_transform
from geoseg.training.evaluate import evaluate
from geoseg.training.metrics import Scores, confusion_matrix

NAMES = ["background", "building", "water"]
TRUTH = np.array([[0, 0, 1, 1, 2], [0, 0, 1, 1, 2], [0, 0, 0, 2, 2], [255, 0, 0, 2, 2]], np.uint8)
PRED = np.array([[0, 1, 1, 1, 2], [0, 0, 1, 0, 2], [0, 0, 0, 2, 255], [0, 0, 2, 2, 2]], np.uint8)
# Rows truth, columns prediction; the two 255 pixels are not counted (18 of 20).
CONFUSION = [[7, 1, 1], [1, 3, 0], [0, 0, 5]]


def class_raster(path, data, names=NAMES, gsd=1.0):
    tags = {"CLASS_NAMES": json.dumps(names)} if names else None
    write_raster(path, data, UTM_CRS, utm_transform(gsd), nodata=255, tags=tags)
    return str(path)


def test_known_ious_on_constructed_rasters(tmp_path):
    report = evaluate(
        class_raster(tmp_path / "p.tif", PRED), class_raster(tmp_path / "t.tif", TRUTH)
    )
    assert report.confusion.tolist() == CONFUSION
    s = report.scores
    np.testing.assert_allclose(s.iou, [7 / 10, 3 / 5, 5 / 6])
    np.testing.assert_allclose(s.f1, [14 / 17, 6 / 8, 10 / 11])
    np.testing.assert_allclose(s.precision, [7 / 8, 3 / 4, 5 / 6])
    np.testing.assert_allclose(s.recall, [7 / 9, 3 / 4, 1.0])
    assert report.miou == pytest.approx((0.7 + 0.6 + 5 / 6) / 3)
    assert report.accuracy == pytest.approx(15 / 18)
    assert report.pixels == 18


def test_windowed_equals_whole_and_names_are_matched_by_name(tmp_path):
    whole = evaluate(
        class_raster(tmp_path / "p.tif", PRED), class_raster(tmp_path / "t.tif", TRUTH)
    )
    # The truth raster numbers its classes differently but says so in its tags.
    swapped = np.choose(TRUTH.clip(0, 2), [0, 2, 1]).astype(np.uint8)
    swapped[TRUTH == 255] = 255
    other = class_raster(tmp_path / "t2.tif", swapped, ["background", "water", "building"])
    windowed = evaluate(tmp_path / "p.tif", other, block_size=3)
    assert windowed.classes == NAMES
    np.testing.assert_array_equal(windowed.confusion, whole.confusion)


def test_rasters_without_names_are_matched_by_id(tmp_path):
    report = evaluate(
        class_raster(tmp_path / "p.tif", PRED), class_raster(tmp_path / "t.tif", TRUTH, None)
    )
    assert report.classes == NAMES and report.confusion.tolist() == CONFUSION


def truth_layer(path, crs):
    """Building: rows 0-3, cols 0-4; water: rows 6-9, cols 5-9 (1 m pixels); the rest background."""
    x0, y0 = UTM_ORIGIN
    frame = gpd.GeoDataFrame(
        {"class_name": ["building", "water"]},
        geometry=[box(x0, y0 - 4, x0 + 5, y0), box(x0 + 5, y0 - 10, x0 + 10, y0 - 6)],
        crs=UTM_CRS,
    )
    frame.to_crs(crs).to_file(path)
    return str(path)


def vector_case_prediction() -> np.ndarray:
    pred = np.zeros((10, 10), np.uint8)
    pred[0:4, 0:3] = 1  # 12 of the 20 building pixels
    pred[8:10, 0:2] = 1  # 4 false building pixels
    pred[5:10, 5:10] = 2  # the 20 water pixels and 5 more
    return pred


def test_known_ious_against_a_wgs84_vector_truth(tmp_path):
    pred = class_raster(tmp_path / "p.tif", vector_case_prediction())
    report = evaluate(pred, truth_layer(tmp_path / "t.geojson", "EPSG:4326"))
    assert report.confusion.tolist() == [[51, 4, 5], [8, 12, 0], [0, 0, 20]]
    np.testing.assert_allclose(report.scores.iou, [51 / 68, 12 / 24, 20 / 25])
    assert report.miou == pytest.approx((0.75 + 0.5 + 0.8) / 3)


def test_vector_prediction_against_a_raster_truth(tmp_path):
    truth = class_raster(tmp_path / "t.tif", vector_case_prediction())
    report = evaluate(truth_layer(tmp_path / "p.gpkg", UTM_CRS), truth)
    assert report.confusion.tolist() == [[51, 8, 0], [4, 12, 0], [5, 0, 20]]  # transposed


def test_json_report_and_undefined_scores(tmp_path):
    names = [*NAMES, "tree"]
    out = tmp_path / "report.json"
    report = evaluate(
        class_raster(tmp_path / "p.tif", PRED), class_raster(tmp_path / "t.tif", TRUTH),
        LabelOptions(classes=names), out_json=out,
    )  # fmt: skip
    data = json.loads(out.read_text())
    assert data["per_class"]["tree"]["iou"] is None  # 0 / 0: no truth, no prediction
    assert data["miou"] == pytest.approx(report.miou) == pytest.approx((0.7 + 0.6 + 5 / 6) / 3)
    assert data["confusion_matrix"][1] == [1, 3, 0, 0]
    rows = report.table_rows()
    assert rows[1][:2] == ("building", "0.600") and rows[3][1] == "-" and rows[-2][0] == "mean IoU"


def test_two_vector_layers_are_refused_with_the_fix(tmp_path):
    a = truth_layer(tmp_path / "a.gpkg", UTM_CRS)
    with pytest.raises(InvalidInputError, match="both vector layers; give one as a class raster"):
        evaluate(a, a)


def test_confusion_and_scores_primitives():
    c = confusion_matrix(TRUTH, PRED, 3)
    assert c.tolist() == [[7, 1, 1], [1, 3, 0], [0, 0, 5]]  # 255 on either side is skipped
    s = Scores.from_confusion(np.array([[0, 0], [0, 4]]))
    assert np.isnan(s.iou[0]) and s.miou == 1.0


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    import geoseg.cli.evaluate  # noqa: F401  (registers the command)
    from geoseg.cli._app import run_app

    pred = class_raster(tmp_path / "p.tif", PRED)
    truth = class_raster(tmp_path / "t.tif", TRUTH)
    code = run_app(["evaluate", pred, "--truth", truth, "--report", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0 and "building" in out and "0.600" in out and "mean IoU" in out
    assert json.loads((tmp_path / "r.json").read_text())["pixels"] == 18
    assert run_app(["evaluate", str(tmp_path / "missing.tif"), "--truth", truth]) == 2
    assert "missing.tif: prediction not found" in capsys.readouterr().err
