"""Interruptions through the CLI, with real processes: ``kill -9`` at each stage of ``predict``
then ``--resume`` (byte-identical), SIGINT during ``predict``, ``train`` and ``run-catalog``
(exit 130, no final-named partial file), and two runs on the same outputs at once (the second
fails at once in one line; the first is not disturbed).

A small wrapper runs the CLI in a subprocess and pauses at a chosen stage (writing a marker file
first), so each signal lands exactly where the test means it to.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from geoseg.cli import run_app
from geoseg.testing import write_test_scene

WRAPPER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    import geoseg.io.class_raster as raster
    import geoseg.training.train as training
    import geoseg.vector.vectorize as vectorize
    from geoseg.cli import run_app

    stage, mark = os.environ["STAGE"], Path(os.environ["MARK"])

    def pause():
        mark.write_text(str(os.getpid()))
        go = mark.with_suffix(".go")
        for _ in range(600):
            if go.exists():
                return
            time.sleep(0.1)

    def after(owner, name, calls=1):
        original, seen = getattr(owner, name), []
        def patched(*args, **kwargs):
            result = original(*args, **kwargs)
            seen.append(1)
            if len(seen) == calls:
                pause()
            return result
        setattr(owner, name, patched)

    if stage == "segmenting":
        after(raster.ClassRasterWriter, "write_block", calls=2)
    elif stage == "cog writing":
        after(raster, "to_cog")  # the class COG is built under its temporary name
    elif stage == "vectorizing":
        after(vectorize.FeatureBuilder, "__call__")  # the polygon file is being written
    elif stage == "training":
        after(training, "save_checkpoint")
    sys.exit(run_app(sys.argv[1:]))
    """
)
OPTIONS = ["--tile", "64", "--overlap", "16", "--block-size", "64", "--device", "cpu", "--confidence",
           "--vector-format", "fgb"]  # fmt: skip
FINALS = ["scene_classes.tif", "scene_confidence.tif", "scene.fgb"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    rng = np.random.default_rng(7)
    data = np.kron(rng.integers(0, 256, (3, 12, 16)), np.ones((16, 16))).astype(np.uint8)
    return Path(
        write_test_scene(tmp_path_factory.mktemp("scene") / "scene.tif", data)
    )  # 2 x 2 blocks


@pytest.fixture(scope="module")
def reference(tmp_path_factory, scene, tiny_model) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("reference")
    assert run_app(predict_args(scene, tiny_model, out)) == 0
    return {name: (out / name).read_bytes() for name in FINALS}


def predict_args(scene: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["predict", str(scene), "-m", str(model), "-o", str(out), *OPTIONS, *extra]


class Paused:
    """A CLI subprocess paused at ``stage`` (waits until the marker file appears)."""

    def __init__(self, tmp_path: Path, stage: str, args: list[str]) -> None:
        script = tmp_path / "wrapper.py"
        script.write_text(WRAPPER)
        self.mark = tmp_path / "paused.mark"
        env = {**os.environ, "STAGE": stage, "MARK": str(self.mark), "COLUMNS": "200"}
        self.proc = subprocess.Popen([sys.executable, str(script), *args], env=env,
                                     stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 120
        while not self.mark.exists() and self.proc.poll() is None:
            assert time.monotonic() < deadline, "the run never reached the stage"
            time.sleep(0.05)
        assert self.proc.poll() is None, self.proc.stderr.read()  # type: ignore[union-attr]

    def signal(self, number: int) -> tuple[int, str]:
        self.proc.send_signal(number)
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err

    def resume(self) -> tuple[int, str]:
        self.mark.with_suffix(".go").write_text("")
        _, err = self.proc.communicate(timeout=120)
        return self.proc.returncode, err


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def assert_reference(out: Path, reference: dict[str, bytes]) -> None:
    for name, data in reference.items():
        assert (out / name).read_bytes() == data, name
    assert hidden(out) == []  # no partial file, temporary or lock left


def assert_nothing_half_done(out: Path, reference: dict[str, bytes]) -> None:
    """Every final-named output present is complete (equal to the reference)."""
    for name, data in reference.items():
        if (out / name).exists():
            assert (out / name).read_bytes() == data, name


@pytest.mark.parametrize(
    ("stage", "tiles_left"), [("segmenting", "> 0"), ("cog writing", "0"), ("vectorizing", "0")]
)
def test_kill_9_then_resume_is_byte_identical(
    tmp_path, scene, tiny_model, reference, capsys, stage, tiles_left
):
    out = tmp_path / "out"
    run = Paused(tmp_path, stage, predict_args(scene, tiny_model, out, "--resume"))
    code, _ = run.signal(signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert_nothing_half_done(out, reference)
    assert not (out / "scene.fgb").exists()
    capsys.readouterr()
    assert run_app(predict_args(scene, tiny_model, out, "--resume")) == 0
    assert_reference(out, reference)
    tiles = int(re.search(r"(\d+) tiles of ", capsys.readouterr().out).group(1))  # the summary
    assert tiles > 0 if tiles_left == "> 0" else tiles == 0  # finished blocks are not redone


def test_a_second_run_on_the_same_outputs_fails_at_once(
    tmp_path, scene, tiny_model, reference, capsys
):
    out = tmp_path / "out"
    first = Paused(tmp_path, "segmenting", predict_args(scene, tiny_model, out))
    for extra in ([], ["--resume"], ["--overwrite"]):
        assert run_app(predict_args(scene, tiny_model, out, *extra)) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in err
        assert f"{out}: another run (pid {first.proc.pid} on " in lines[0]
        assert "wait for it to finish or choose another output folder" in lines[0]
    code, err = first.resume()
    assert code == 0, err
    assert_reference(out, reference)  # the first run's result is intact


@pytest.mark.parametrize("stage", ["segmenting", "vectorizing"])
def test_sigint_during_predict_leaves_no_partial_output(
    tmp_path, scene, tiny_model, reference, stage
):
    out = tmp_path / "out"
    code, err = Paused(tmp_path, stage, predict_args(scene, tiny_model, out)).signal(signal.SIGINT)
    assert code == 130 and "Traceback" not in err, err
    assert_nothing_half_done(out, reference)
    assert not (out / "scene.fgb").exists() and hidden(out) == []
    assert (out / "scene_classes.tif").exists() == (stage == "vectorizing")


def test_sigint_during_train_leaves_no_model_file(tmp_path):
    from geoseg.synthetic.scenes import write_scenes

    files = write_scenes(tmp_path / "scenes", scenes=1, size=96)[0]
    model = tmp_path / "m.safetensors"
    args = ["train", str(files.image), "--labels", str(files.labels), "--out", str(model),
            "--tile", "64", "--epochs", "2", "--steps-per-epoch", "1", "--batch-size", "2",
            "--device", "cpu", "--val-fraction", "0.3"]  # fmt: skip
    code, err = Paused(tmp_path, "training", args).signal(signal.SIGINT)
    assert code == 130 and "Traceback" not in err, err
    assert not model.exists()  # the best model so far is only under its hidden partial name
    assert (tmp_path / ".m.partial.safetensors").exists()
    assert run_app([*args, "--resume"]) == 0
    assert model.exists() and not (tmp_path / ".m.partial.safetensors").exists()


def test_an_interrupted_demo_trains_on_instead_of_reusing_a_half_trained_model(tmp_path):
    """Through the API: ``geoseg demo`` has no flags for a scene small enough for a test."""
    from geoseg.demo import DemoOptions, run_demo

    options = DemoOptions(scenes=2, size=160, epochs=2, steps_per_epoch=1, batch_size=2, tile=32)

    def interrupt_after_epoch_1(progress) -> None:
        if progress.phase == "validated":
            raise KeyboardInterrupt  # what SIGINT raises

    with pytest.raises(KeyboardInterrupt):
        run_demo(tmp_path, options, train_progress=interrupt_after_epoch_1)
    assert not (tmp_path / "model.safetensors").exists()
    assert (tmp_path / ".model.partial.safetensors").exists()
    result = run_demo(tmp_path, options)
    assert result.trained is not None and [r.epoch for r in result.trained.history] == [1, 2]
    assert not (tmp_path / ".model.partial.safetensors").exists()


CATALOG = """
models: {unet: model.safetensors}
scenes:
  - {id: demo, path: "scenes/scene_??.tif"}
outputs: {path: out, vector_formats: [fgb]}
defaults: {tile: 64, overlap: 16, device: cpu}
"""


def test_sigint_during_run_catalog_leaves_no_partial_output(tmp_path, tiny_model):
    from geoseg.synthetic.scenes import write_scenes

    shutil.copy(tiny_model, tmp_path / "model.safetensors")
    write_scenes(tmp_path / "scenes", scenes=1, size=96)
    catalog = tmp_path / "data_catalog.yaml"
    catalog.write_text(CATALOG)
    run = Paused(tmp_path, "vectorizing", ["run-catalog", str(catalog)])
    code, err = run.signal(signal.SIGINT)
    assert code == 130 and "Traceback" not in err, err
    out = tmp_path / "out" / "demo"
    names = sorted(p.name for p in out.iterdir())
    assert "scene_00.fgb" not in names and "scene_00.stac.json" not in names
    assert not [n for n in names if n.startswith(".") and not n.endswith(".partial.jsonl")]
    (out / ".scene_00.tmp-0badc0de.fgb").write_bytes(b"left by a kill -9")  # removed on rerun
    assert run_app(["run-catalog", str(catalog)]) == 0
    assert (out / "scene_00.fgb").exists() and (out / "scene_00.stac.json").exists()
    assert hidden(out) == []
