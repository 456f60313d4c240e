"""The command line: thin commands, one-line errors with a non-zero exit, nothing left behind."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.cli import run_app
from geoseg.testing import create_test_model, utm_transform, write_test_scene


@pytest.fixture
def model_path(tmp_path):
    return create_test_model(tmp_path / "m.safetensors", "unet", "resnet18", 3, ["bg", "a", "b"],
                             tile_size=64, gsd=0.5)  # fmt: skip


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_missing_scene_is_one_line(tmp_path, model_path, capsys):
    code = run_app(["predict", str(tmp_path / "nope.tif"), "-m", str(model_path), "-o",
                    str(tmp_path / "out")])  # fmt: skip
    assert code == 2
    assert "nope.tif: scene not found" in one_line_error(capsys)
    assert not (tmp_path / "out").exists()


def test_corrupt_raster_is_one_line(tmp_path, model_path, capsys):
    bad = tmp_path / "bad.tif"
    bad.write_text("not a tiff")
    assert run_app(["predict", str(bad), "-m", str(model_path), "-o", str(tmp_path)]) == 2
    assert "bad.tif: GDAL cannot open it" in one_line_error(capsys)


def test_band_mismatch_names_the_fix(tmp_path, model_path, capsys):
    scene = write_test_scene(tmp_path / "s.tif", np.zeros((2, 64, 64), np.uint8))
    assert run_app(["predict", scene, "-m", str(model_path), "-o", str(tmp_path / "o")]) == 2
    assert "--bands" in one_line_error(capsys)


def test_verbose_shows_the_traceback(tmp_path, model_path, capsys):
    run_app(["--verbose", "predict", "nope.tif", "-m", str(model_path), "-o", str(tmp_path)])
    assert "Traceback" in capsys.readouterr().err


def test_unknown_architecture_lists_choices(tmp_path, capsys):
    code = run_app(["model-create", "--arch", "unet3", "--classes", "a,b", "--out",
                    str(tmp_path / "m.safetensors")])  # fmt: skip
    assert code == 2
    assert "deeplabv3plus" in one_line_error(capsys)
    assert not list(tmp_path.iterdir())


def test_model_info_prints_the_contract(model_path, capsys):
    assert run_app(["model-info", str(model_path)]) == 0
    out = capsys.readouterr().out  # results go to stdout (> file keeps them)
    assert "unet / resnet18" in out and "class 2" in out


def test_predict_refuses_to_overwrite(tmp_path, model_path, capsys):
    data = np.random.default_rng(0).integers(0, 255, (3, 80, 90)).astype(np.uint8)
    scene = write_test_scene(tmp_path / "s.tif", data)
    args = ["predict", scene, "-m", str(model_path), "-o", str(tmp_path / "o"), "--vector-format",
            "none", "--device", "cpu"]  # fmt: skip
    assert run_app(args) == 0
    before = (tmp_path / "o" / "s_classes.tif").read_bytes()
    capsys.readouterr()
    assert run_app(args) == 2
    assert "--overwrite" in one_line_error(capsys)
    assert (tmp_path / "o" / "s_classes.tif").read_bytes() == before
    assert run_app([*args, "--overwrite"]) == 0
    written = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert written == ["s_classes.qml", "s_classes.tif", "s_classes.tif.aux.xml"]  # no temporaries


def test_version_and_usage_errors(tmp_path, capsys):
    assert run_app(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith("geoseg ")
    assert run_app(["predict", str(tmp_path / "s.tif")]) == 2  # no --model
    err = capsys.readouterr().err
    assert "Usage:" in err and "Missing option '--model'" in err and "Traceback" not in err


def test_option_errors_name_the_flag(tmp_path, model_path, capsys):
    args = ["predict", str(tmp_path / "s.tif"), "-m", str(model_path), "-o", str(tmp_path / "o"),
            "--batch-size", "0"]  # fmt: skip
    assert run_app(args) == 2
    assert "batch size 0 is invalid; set --batch-size to an integer >= 1" in one_line_error(capsys)
    assert not (tmp_path / "o").exists()


def test_warnings_are_one_line_each_and_shown_once(tmp_path, model_path, capsys):
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 64)).astype(np.uint8)
    scene = write_test_scene(tmp_path / "s.tif", data, transform=utm_transform(2.0))
    args = ["predict", scene, "-m", str(model_path), "-o", str(tmp_path / "o"), "--vector-format",
            "none", "--device", "cpu"]  # fmt: skip
    assert run_app(args) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "pixel size 2 m" in warned[0], err
    assert "Traceback" not in err and "warnings.warn" not in err
