"""Output robustness through the CLI: unwritable folders, full disks, existing outputs, input =
output, and recovery from a full disk with ``--resume``.

Every failure must be exit code 2 and one line (file, problem, fix) without a traceback, leave no
final-named partial file and lose nothing already written.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from geoseg.cli import run_app
from geoseg.testing import write_test_scene

OPTIONS = ["--tile", "64", "--overlap", "16", "--block-size", "64", "--device", "cpu", "--confidence",
           "--vector-format", "fgb"]  # fmt: skip
PROGRESS = ("segmenting ", "vectorizing ")
"""The progress bar's last state, printed before the error."""
FINALS = ["scene_classes.tif", "scene_confidence.tif", "scene.fgb"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    """A 3-band 192 x 256 scene: 2 x 2 blocks of 2 x 2 or 2 x 3 tiles, shared (never modified)
    by the module."""
    rng = np.random.default_rng(7)
    data = np.kron(rng.integers(0, 256, (3, 12, 16)), np.ones((16, 16))).astype(np.uint8)
    return Path(write_test_scene(tmp_path_factory.mktemp("scene") / "scene.tif", data))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, scene, tiny_model) -> dict[str, bytes]:
    """The bytes of an uninterrupted run: the oracle."""
    out = tmp_path_factory.mktemp("reference")
    assert predict(scene, tiny_model, out) == 0
    return {name: (out / name).read_bytes() for name in FINALS}


def predict(scene: Path, model: Path, out: Path, *extra: str) -> int:
    return run_app(["predict", str(scene), "-m", str(model), "-o", str(out), *OPTIONS, *extra])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(PROGRESS)]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_reference(out: Path, reference: dict[str, bytes]) -> None:
    for name, data in reference.items():
        assert (out / name).read_bytes() == data, name
    assert [n for n in listing(out) if n.startswith(".")] == []  # no partial, temporary, lock


@contextlib.contextmanager
def read_only(folder: Path):
    """Make ``folder`` unwritable even for root: immutable (chattr), else a read-only mount."""
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        return
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(folder), str(folder)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip("neither chattr nor a read-only bind mount works here")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_output_folder_not_writable(tmp_path, scene, tiny_model, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with read_only(out):
        assert predict(scene, tiny_model, out) == 2
    line = one_line_error(capsys)
    assert f"{out}: cannot write: permission denied; make the folder writable" in line
    assert listing(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_existing_outputs_are_kept_without_overwrite(
    tmp_path, scene, tiny_model, reference, capsys
):
    out = tmp_path / "out"
    assert predict(scene, tiny_model, out) == 0
    capsys.readouterr()
    assert predict(scene, tiny_model, out) == 2
    line = one_line_error(capsys)
    assert "scene_classes.tif: already exists; set --overwrite to replace it" in line
    assert_reference(out, reference)


def test_output_folder_is_the_scene_itself(tmp_path, scene, tiny_model, capsys):
    before = scene.read_bytes()
    assert predict(scene, tiny_model, scene, "--overwrite") == 2
    assert f"{scene}: is a file, not a folder; set --out to a folder" in one_line_error(capsys)
    assert scene.read_bytes() == before


def test_an_output_that_is_the_input_is_refused_even_with_overwrite(tmp_path, tiny_model, capsys):
    import rasterio

    data = np.random.default_rng(1).integers(0, 256, (3, 64, 64)).astype(np.uint8)
    scene = tmp_path / "scene.gpkg"  # a GeoPackage raster: its polygon layer would be itself
    with rasterio.open(scene, "w", driver="GPKG", width=64, height=64, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=rasterio.Affine(1, 0, 0, 0, -1, 64)) as ds:  # fmt: skip
        ds.write(data)
    before = scene.read_bytes()
    args = ["predict", str(scene), "-m", str(tiny_model), "-o", str(tmp_path), "--device", "cpu",
            "--vector-format", "gpkg", "--overwrite"]  # fmt: skip
    assert run_app(args) == 2
    line = one_line_error(capsys)
    assert f"{scene}: is the input scene; writing outputs there would destroy it" in line
    assert "set --out to another folder" in line
    assert scene.read_bytes() == before and listing(tmp_path) == ["scene.gpkg"]


def enospc_on_third_flush(monkeypatch):
    """Patch the class raster writer: the third flush cuts the working file short, then fails."""
    from geoseg.io import class_raster

    original, calls = class_raster.WorkingBand.flush, []

    def flush(self) -> None:
        calls.append(self.work)
        if len(calls) == 3:
            self.ds.close()
            with open(self.work, "r+b") as fh:
                fh.truncate(600)  # what a full disk leaves: a file cut short
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self)

    monkeypatch.setattr(class_raster.WorkingBand, "flush", flush)


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str):
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                      capture_output=True).returncode != 0:  # fmt: skip
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.mark.parametrize("disk", ["patched writer", "tmpfs"])
def test_disk_full_then_resume(tmp_path, scene, tiny_model, reference, capsys, caplog, monkeypatch,
                               disk):  # fmt: skip
    """A full disk fails in one line; after freeing space, --resume finishes byte-identical."""
    out = tmp_path / "out"
    with contextlib.ExitStack() as stack:
        if disk == "tmpfs":
            stack.enter_context(small_tmpfs(out, "24k"))
            (out / "kept.txt").write_text("written before")
        else:
            enospc_on_third_flush(monkeypatch)
        assert predict(scene, tiny_model, out, "--resume") == 2
        line = one_line_error(capsys)
        assert "cannot write: no space left on device; free disk space" in line
        assert not any((out / name).exists() for name in FINALS)
        assert not [n for n in listing(out) if ".tmp-" in n]
        monkeypatch.undo()
        if disk == "tmpfs":
            subprocess.run(["mount", "-o", "remount,size=20m", str(out)], check=True)
            assert (out / "kept.txt").read_text() == "written before"
            (out / "kept.txt").unlink()
        assert predict(scene, tiny_model, out, "--resume") == 0
        assert_reference(out, reference)
        if disk == "patched writer":
            assert "unreadable" in caplog.text and "starting afresh" in caplog.text


CATALOG = """
models: {unet: model.safetensors}
scenes:
  - {id: demo, path: "scenes/scene_??.tif"}
outputs: {path: out, vector_formats: [fgb]}
defaults: {tile: 64, overlap: 16, block_size: 64, device: cpu}
"""


def test_disk_full_during_run_catalog_then_force(tmp_path, tiny_model, monkeypatch, capsys):
    """The batch runner always resumes: a file a full disk cut short must not poison the scene."""
    from geoseg.synthetic.scenes import write_scenes

    shutil.copy(tiny_model, tmp_path / "model.safetensors")
    write_scenes(tmp_path / "scenes", scenes=1, size=256)  # 2 x 2 blocks: several flushes
    catalog = tmp_path / "data_catalog.yaml"
    catalog.write_text(CATALOG)
    enospc_on_third_flush(monkeypatch)
    assert run_app(["run-catalog", str(catalog)]) == 1  # a failed scene
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no space left on device" in err
    monkeypatch.undo()
    assert run_app(["run-catalog", str(catalog), "--force"]) == 0
    out = tmp_path / "out" / "demo"
    assert (out / "scene_00_classes.tif").exists() and (out / "scene_00.stac.json").exists()
    assert [n for n in listing(out) if n.startswith(".")] == []
