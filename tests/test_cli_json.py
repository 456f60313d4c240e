"""CLI conventions: results on stdout, progress and logs on stderr, ``--json`` and ``--quiet``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geoseg.cli import run_app
from geoseg.testing import write_test_scene


@pytest.fixture
def scene(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (3, 70, 200)).astype(np.uint8)
    data[:, :, :100] = 0  # the first column of 64-px tiles is all nodata
    return write_test_scene(tmp_path / "s.tif", data, nodata=0)


def test_predict_json_is_one_parseable_document_on_stdout(tmp_path, scene, tiny_model, capsys):
    args = ["predict", scene, "-m", str(tiny_model), "-o", str(tmp_path / "o"), "--device", "cpu",
            "--overlap", "8", "--json"]  # fmt: skip
    assert run_app(args) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # nothing else on stdout
    assert set(doc) == {"scene", "pixels", "classes", "tiles", "polygons", "seconds", "outputs",
                        "record"}  # fmt: skip
    assert doc["pixels"] == 70 * 200
    assert sum(c["pixels"] for c in doc["classes"].values()) == 70 * 100  # valid pixels only
    assert doc["tiles"]["computed"] < doc["tiles"]["planned"]  # the nodata tiles were skipped
    assert any(p.endswith("s_classes.tif") for p in doc["outputs"])
    assert "Traceback" not in captured.err


def test_quiet_prints_nothing_but_results_stay_in_files(tmp_path, scene, tiny_model, capsys):
    args = ["--quiet", "predict", scene, "-m", str(tiny_model), "-o", str(tmp_path / "o"),
            "--device", "cpu", "--vector-format", "none"]  # fmt: skip
    assert run_app(args) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "segmenting" not in captured.err
    assert (tmp_path / "o" / "s_classes.tif").exists()


def test_summaries_go_to_stdout_progress_to_stderr(tmp_path, scene, tiny_model, capsys):
    args = ["predict", scene, "-m", str(tiny_model), "-o", str(tmp_path / "o"), "--device", "cpu",
            "--vector-format", "none"]  # fmt: skip
    assert run_app(args) == 0
    captured = capsys.readouterr()
    assert "area per class" in captured.out and "skipped" in captured.out
    assert "area per class" not in captured.err


def test_model_info_and_evaluate_json(tmp_path, scene, tiny_model, capsys):
    assert run_app(["model-info", str(tiny_model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["contract"]["classes"] == ["background", "a", "b"] and len(info["sha256"]) == 64
    out = tmp_path / "o"
    assert run_app(["--quiet", "predict", scene, "-m", str(tiny_model), "-o", str(out),
                    "--device", "cpu", "--vector-format", "none"]) == 0  # fmt: skip
    classes = str(out / "s_classes.tif")
    assert run_app(["evaluate", classes, "--truth", classes, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["overall_accuracy"] == 1.0 and report["pixels"] == 70 * 100
