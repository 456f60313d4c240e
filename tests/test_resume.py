"""Resume: an interrupted scene continues from its journal, byte-identical to a whole run."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from geoseg.engine.block import SceneJob
from geoseg.engine.scene import OutputPaths, segment_scene
from geoseg.io.class_raster import Legend
from geoseg.models.contract import default_colors
from geoseg.testing import PixelwisePredictor

CLASSES = ["a", "b", "c", "d"]
BLOCK = 64


class StopRunError(Exception):
    pass


def make_job(path: str, overlap: int = 16, factory=None) -> SceneJob:
    return SceneJob(path, factory or functools.partial(PixelwisePredictor, 3, 4), None, 64, overlap)


def outputs(folder: Path) -> OutputPaths:
    return OutputPaths(
        classes=folder / "scene_classes.tif", confidence=folder / "scene_confidence.tif"
    )


def segment(job, folder: Path, **kwargs):
    legend = Legend(CLASSES, default_colors(4))
    return segment_scene(job, outputs(folder), legend, block_size=BLOCK, **kwargs)


def stop_after(tiles: int):
    """A progress callback that interrupts the run once ``tiles`` tiles are done."""

    def progress(done: int, total: int) -> None:
        if done >= tiles:
            raise StopRunError

    return progress


def output_bytes(folder: Path) -> tuple[bytes, bytes]:
    paths = outputs(folder)
    return paths.classes.read_bytes(), paths.confidence.read_bytes()  # type: ignore[union-attr]


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def journal_lines(folder: Path) -> int:
    path = folder / ".scene_classes.partial.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


PARTIALS = [
    ".scene_classes.partial.jsonl",
    ".scene_classes.partial.sums",
    ".scene_classes.partial.tif",
    ".scene_confidence.partial.tif",
]


@pytest.fixture
def scene(smooth_scene):
    path, _ = smooth_scene(height=200, width=300)
    return path


@pytest.fixture
def reference(tmp_path, scene):
    """An uninterrupted, non-resumable run: the oracle."""
    result = segment(make_job(scene), tmp_path / "reference")
    return result, output_bytes(tmp_path / "reference")


def test_resumable_run_without_interruption_matches_and_cleans_up(tmp_path, scene, reference):
    result = segment(make_job(scene), tmp_path / "out", resume=True)
    assert output_bytes(tmp_path / "out") == reference[1]
    assert result.tiles == reference[0].tiles
    assert hidden(tmp_path / "out") == []


@pytest.mark.parametrize("resume", [False, True])
def test_an_error_keeps_partial_files_only_when_resuming(tmp_path, scene, resume):
    with pytest.raises(StopRunError):
        segment(make_job(scene), tmp_path, resume=resume, progress=stop_after(8))
    assert hidden(tmp_path) == (PARTIALS if resume else [])
    assert not outputs(tmp_path).classes.exists()


def test_resume_skips_finished_blocks_and_matches(tmp_path, scene, reference):
    job = make_job(scene)
    with pytest.raises(StopRunError):
        segment(job, tmp_path, resume=True, progress=stop_after(reference[0].tiles // 2))
    assert journal_lines(tmp_path) > 2
    result = segment(job, tmp_path, resume=True)
    assert output_bytes(tmp_path) == reference[1]
    np.testing.assert_array_equal(result.class_pixels, reference[0].class_pixels)
    assert 0 < result.tiles < reference[0].tiles
    assert hidden(tmp_path) == []


def test_a_block_damaged_on_disk_is_recomputed(tmp_path, scene, reference):
    job = make_job(scene)
    with pytest.raises(StopRunError):
        segment(job, tmp_path, resume=True, progress=stop_after(reference[0].tiles // 2))
    journal = tmp_path / ".scene_classes.partial.jsonl"
    lines = journal.read_text().splitlines()
    first = json.loads(lines[1])
    first["crc"] += 1  # as if the block had not reached the disk intact
    journal.write_text("\n".join([lines[0], json.dumps(first), *lines[2:], '{"block": "r00']))
    with pytest.raises(StopRunError):  # (the last line above was cut short by a kill)
        segment(job, tmp_path, resume=True, progress=stop_after(0))  # stop once reopened
    kept = [piece(line) for line in journal.read_text().splitlines()[1:]]
    assert kept == [piece(line) for line in lines[2:]]  # the damaged one is out
    result = segment(job, tmp_path, resume=True)
    assert output_bytes(tmp_path) == reference[1]
    np.testing.assert_array_equal(result.class_pixels, reference[0].class_pixels)


def piece(line: str) -> str:
    record = json.loads(line)
    return record.get("block") or record["sums"]


def test_kept_sums_spare_blocks_and_damaged_ones_are_recomputed(tmp_path, scene, reference):
    """A block whose neighbours were not done yet is not recomputed: its shared sums were kept.
    Sums that do not read back intact make the block run again, with the same bytes."""
    job = make_job(scene)
    runs = {}
    for damaged in (False, True):
        out = tmp_path / str(damaged)
        with pytest.raises(StopRunError):  # in the third of 6 blocks (2 x 3, 4 tiles each)
            segment(job, out, resume=True, progress=stop_after(reference[0].tiles // 2))
        sums = out / ".scene_classes.partial.sums"
        assert sums.stat().st_size > 0
        if damaged:
            data = bytearray(sums.read_bytes())
            data[len(data) // 2] ^= 0xFF
            sums.write_bytes(bytes(data))
        runs[damaged] = segment(job, out, resume=True)
        assert output_bytes(out) == reference[1]
        assert hidden(out) == []
    assert runs[False].tiles == reference[0].tiles - 8  # the 2 finished blocks did not run again
    assert runs[False].tiles < runs[True].tiles < reference[0].tiles


def test_a_different_job_starts_afresh(tmp_path, scene):
    with pytest.raises(StopRunError):
        segment(make_job(scene, overlap=16), tmp_path / "out", resume=True, progress=stop_after(12))
    expected = segment(make_job(scene, overlap=8), tmp_path / "reference")
    result = segment(make_job(scene, overlap=8), tmp_path / "out", resume=True)
    assert result.tiles == expected.tiles
    assert output_bytes(tmp_path / "out") == output_bytes(tmp_path / "reference")


def test_resume_with_a_dask_executor(tmp_path, scene, reference):
    pytest.importorskip("distributed")
    from geoseg.engine.dask import DaskExecutor

    job = make_job(scene)
    with DaskExecutor(workers=2) as executor:
        with pytest.raises(StopRunError):
            segment(job, tmp_path, executor=executor, resume=True, progress=stop_after(12))
        result = segment(job, tmp_path, executor=executor, resume=True)
    assert output_bytes(tmp_path) == reference[1]
    np.testing.assert_array_equal(result.class_pixels, reference[0].class_pixels)
    assert result.tiles < reference[0].tiles


RUN_SCRIPT = textwrap.dedent(
    """
    import functools, json, os, sys, time
    from dataclasses import dataclass
    from pathlib import Path

    from geoseg.models.contract import default_colors
    from geoseg.engine.scene import OutputPaths, segment_scene
    from geoseg.io.class_raster import Legend
    from geoseg.engine.block import SceneJob
    from geoseg.testing import PixelwisePredictor


    @dataclass
    class Slow:
        bands: int
        num_classes: int

        def __call__(self, batch):
            time.sleep(float(os.environ.get("DELAY", "0")))
            return PixelwisePredictor(self.bands, self.num_classes)(batch)


    scene, out = sys.argv[1], Path(sys.argv[2])
    job = SceneJob(scene, functools.partial(Slow, 3, 4), None, 64, 16)
    paths = OutputPaths(classes=out / "scene_classes.tif", confidence=out / "scene_confidence.tif")
    legend = Legend(list("abcd"), default_colors(4))
    result = segment_scene(job, paths, legend, block_size=64, resume=True)
    print(json.dumps({"tiles": result.tiles, "pixels": result.class_pixels.tolist()}))
    """
)


def test_resume_after_kill_9(tmp_path, scene, reference):
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)
    out = tmp_path / "out"
    command = [sys.executable, str(script), scene, str(out)]
    proc = subprocess.Popen(command, env={**os.environ, "DELAY": "0.05"})
    deadline = time.monotonic() + 60
    while journal_lines(out) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL  # killed mid-run, not finished
    assert hidden(out) == PARTIALS and not outputs(out).classes.exists()

    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    resumed = json.loads(done.stdout.strip().splitlines()[-1])
    assert output_bytes(out) == reference[1]
    assert resumed["pixels"] == reference[0].class_pixels.tolist()
    assert 0 < resumed["tiles"] < reference[0].tiles
    assert hidden(out) == []


def test_cli_resume_with_a_real_model(tmp_path):
    """``geoseg predict --resume`` continues a run of the same model file from another process."""
    from geoseg.engine.scene import predict_scene
    from geoseg.options import OutputOptions, PredictOptions, TilingOptions
    from geoseg.testing import create_test_model, write_test_scene

    rng = np.random.default_rng(3)
    data = np.kron(rng.integers(0, 256, (3, 18, 6)), np.ones((16, 16))).astype(np.uint8)
    scene = write_test_scene(tmp_path / "scene.tif", data)
    classes = ["background", "a", "b"]
    model = create_test_model(
        tmp_path / "m.safetensors", "unet", "resnet18", 3, classes, tile_size=64
    )
    options = PredictOptions(
        tiling=TilingOptions(
            tile=64, overlap=16, block_size=64
        ),  # 3 blocks of 2 x 2 tiles, one above another
        output=OutputOptions(vector_formats=(), confidence=True),
    )
    expected = predict_scene(scene, model, tmp_path / "ref", options)
    out = tmp_path / "out"
    with pytest.raises(StopRunError):  # in the third block
        resuming = PredictOptions(tiling=options.tiling, output=options.output, resume=True)
        predict_scene(scene, model, out, resuming, progress=stop_after(9))
    assert journal_lines(out) == 6  # header; blocks 1, 2, the window they share, their kept sums

    command = [sys.executable, "-m", "geoseg", "predict", scene, "-m", str(model), "-o", str(out),
               "--tile", "64", "--overlap", "16", "--block-size", "64", "--vector-format", "none", "--confidence",
               "--resume"]  # fmt: skip
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert output_bytes(out) == output_bytes(tmp_path / "ref")
    assert hidden(out) == []
    tiles = int(re.search(r"(\d+) tiles of ", done.stdout).group(1))  # from the summary (stdout)
    assert tiles == expected.segment.tiles - 8  # only block 3 runs
