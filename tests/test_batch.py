"""The batch runner, provenance records and quicklooks, and ``geoseg run-catalog`` end to end."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

import geoseg.cli.catalog  # noqa: F401  (registers the commands)
from geoseg.batch import runner as batch
from geoseg.batch.catalog import load_catalog
from geoseg.batch.outcomes import BatchSummary, SceneOutcome, quicklook_markdown
from geoseg.batch.runner import plan_scenes, run_batch
from geoseg.cli import run_app
from geoseg.errors import CatalogError, InputFileNotFoundError, RasterReadError
from geoseg.geo.geobox import RasterGrid
from geoseg.geo.window import Window
from geoseg.io.class_raster import ClassRasterWriter, Legend
from geoseg.io.quicklook import quicklook_png
from geoseg.io.stac import EXTENSIONS, FULL_HASH_LIMIT, fingerprint, read_item
from geoseg.models.contract import default_colors
from geoseg.models.modelfile import file_sha256
from geoseg.synthetic.scenes import write_scenes
from geoseg.testing import create_test_model, write_test_scene

CLASSES = ["background", "building", "water"]
SIZE = 96  # pixels: 4 tiles of 64 px with overlap 16
CATALOG = """
models: {{unet: model.safetensors}}
scenes:
  - {{id: demo, path: "scenes/scene_??.tif", tags: [synthetic]}}
outputs: {{path: out, vector_formats: [gpkg], min_area: {min_area}}}
defaults: {{tile: 64, overlap: 16, batch_size: 8, device: cpu}}
{extra}
"""


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny models with the same contract and different (random) weights."""
    folder = tmp_path_factory.mktemp("models")
    return tuple(  # type: ignore[return-value]
        create_test_model(
            folder / f"{name}.safetensors", "unet", "resnet18", 3, CLASSES, tile_size=64
        )
        for name in ("a", "b")
    )


def workspace(
    root: Path, model: Path, scenes: int = 2, min_area: float = 0.0, extra: str = ""
) -> Path:
    """A catalog over ``scenes`` synthetic ``SIZE`` px scenes; returns the catalog path."""
    shutil.copy(model, root / "model.safetensors")
    write_scenes(root / "scenes", scenes=scenes, size=SIZE)
    path = root / "data_catalog.yaml"
    path.write_text(textwrap.dedent(CATALOG.format(min_area=min_area, extra=extra)))
    return path


def statuses(summary: BatchSummary) -> dict[str, str]:
    return {o.id: o.status for o in summary.outcomes}


# --- fingerprints and small pieces ------------------------------------------------------------


def test_small_files_are_hashed_whole(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"pixels" * 1000)
    assert fingerprint(path) == {
        "size": 6000,
        "sha256": hashlib.sha256(b"pixels" * 1000).hexdigest(),
    }


def test_large_files_are_hashed_by_head_tail_and_mtime(tmp_path):
    path = tmp_path / "big.bin"
    data = bytearray(FULL_HASH_LIMIT + 4096)
    path.write_bytes(data)
    first = fingerprint(path)
    assert set(first) == {"size", "mtime_ns", "sha256_head_tail"}
    data[len(data) // 2] = 1  # an edit in the middle: caught by the modification time
    path.write_bytes(data)
    os.utime(path, ns=(first["mtime_ns"] + 10**9,) * 2)
    assert fingerprint(path)["sha256_head_tail"] == first["sha256_head_tail"]
    assert fingerprint(path) != first
    data[-1] = 1  # an edit at the end: caught by the hash even with the old mtime
    path.write_bytes(data)
    os.utime(path, ns=(first["mtime_ns"],) * 2)
    assert fingerprint(path)["sha256_head_tail"] != first["sha256_head_tail"]


def test_urls_are_fingerprinted_by_name():
    assert fingerprint("/vsicurl/https://example.com/a.tif") == {
        "url": "/vsicurl/https://example.com/a.tif"
    }


def test_only_io_errors_are_transient():
    assert batch.is_transient(ConnectionResetError("reset"))
    assert batch.is_transient(TimeoutError())
    assert not batch.is_transient(RasterReadError("corrupt"))  # a GeosegError, though an OSError
    assert not batch.is_transient(InputFileNotFoundError("gone"))
    assert not batch.is_transient(ValueError("bug"))


def test_quicklook_reads_overviews_and_uses_the_colour_table(tmp_path):
    size = 2048
    classes = (np.add.outer(np.arange(size), np.arange(size)) // 512 % 3).astype(np.uint8)
    classes[:256, :256] = 255  # nodata
    grid = RasterGrid(
        size,
        size,
        rasterio.crs.CRS.from_epsg(32632),
        Affine(0.5, 0, 5e5, 0, -0.5, 5.3e6),
        "uint8",
        1,
    )
    colors = default_colors(3)
    with ClassRasterWriter(tmp_path / "c.tif", grid, Legend(CLASSES, colors)) as writer:
        writer.write_block(Window(0, 0, size, size), classes)
    with rasterio.open(tmp_path / "c.tif") as ds:
        assert ds.overviews(1)  # a COG: the quicklook comes from an overview
    image = Image.open(io.BytesIO(quicklook_png(tmp_path / "c.tif", max_size=256))).convert("RGBA")
    assert image.size == (256, 256)
    rgba = np.asarray(image)
    assert rgba[0, 0, 3] == 0  # nodata is transparent
    expected = np.array([(*c, 255) for c in colors], np.uint8)[classes[::8, ::8][200, 100]]
    np.testing.assert_array_equal(rgba[200, 100], expected)


# --- a batch ---------------------------------------------------------------------------------


def test_first_run_writes_everything_then_everything_is_skipped(tmp_path, model_files):
    catalog = load_catalog(workspace(tmp_path, model_files[0]))
    first = run_batch(catalog)
    assert statuses(first) == {"demo/scene_00": "done", "demo/scene_01": "done"}
    assert {o.reason for o in first.outcomes} == {"new"}
    out = tmp_path / "out" / "demo"
    for stem in ("scene_00", "scene_01"):
        for suffix in ("_classes.tif", ".gpkg", "_quicklook.png", ".stac.json"):
            assert (out / f"{stem}{suffix}").is_file()
    assert not list(out.glob(".*"))  # no temporary or journal files left behind
    again = run_batch(catalog)
    assert statuses(again) == {"demo/scene_00": "skipped", "demo/scene_01": "skipped"}
    assert again.outcomes[0].areas_ha == pytest.approx(first.outcomes[0].areas_ha)
    assert again.seconds < 1.0


def test_the_stac_item_describes_the_outputs(tmp_path, model_files):
    catalog = load_catalog(workspace(tmp_path, model_files[0], scenes=1))
    (outcome,) = run_batch(catalog).outcomes
    item = read_item(tmp_path / "out" / "demo" / "scene_00.stac.json")
    assert item is not None
    props = item["properties"]
    assert item["stac_version"] == "1.1.0" and set(item["stac_extensions"]) == set(
        EXTENSIONS.values()
    )
    assert item["id"] == "demo-scene_00" and props["geoseg:scene_id"] == "demo/scene_00"
    with rasterio.open(tmp_path / "out" / "demo" / "scene_00_classes.tif") as ds:
        assert props["proj:code"] == "EPSG:32632"
        assert props["proj:shape"] == [ds.height, ds.width]
        assert props["proj:transform"] == list(ds.transform)[:6]
    west, south, east, north = item["bbox"]  # synthetic scenes lie near Munich
    assert 11.5 < west < east < 11.7 and 48.1 < south < north < 48.2
    assert item["geometry"]["type"] == "Polygon"
    assert props["geoseg:model"]["sha256"] == file_sha256(tmp_path / "model.safetensors")
    assert props["geoseg:input"]["fingerprint"] == fingerprint(tmp_path / "scenes" / "scene_00.tif")
    assert props["geoseg:parameters"]["tile"] == 64 and props["geoseg:parameters"]["min_area"] == 0
    assert {"geoseg", "gdal", "python", "torch"} <= set(props["processing:software"])
    assert props["geoseg:area_ha"] == pytest.approx(dict(outcome.areas_ha), abs=1e-5)
    table = item["assets"]["classes"]["classification:classes"]
    assert [c["name"] for c in table] == [*CLASSES, "nodata"]
    assert table[1]["color_hint"] == "".join(f"{v:02X}" for v in default_colors(CLASSES)[1])
    assert set(item["assets"]) == {
        "classes",
        "classes_aux",
        "classes_qml",
        "polygons_gpkg",
        "thumbnail",
    }
    for asset in item["assets"].values():
        assert (tmp_path / "out" / "demo" / asset["href"]).is_file()
    assert item["links"][0]["rel"] == "derived_from"


def test_what_makes_a_scene_run_again(tmp_path, model_files):
    path = workspace(tmp_path, model_files[0])
    run_batch(load_catalog(path))

    def reasons() -> list[str | None]:
        runs = plan_scenes(load_catalog(path))
        return [batch.freshness(r, batch.input_fingerprint(r)) for r in runs]

    assert reasons() == [None, None]
    with rasterio.open(tmp_path / "scenes" / "scene_01.tif", "r+") as ds:
        ds.write(np.full((ds.height, ds.width), 7, np.uint8), 1)
    (tmp_path / "out" / "demo" / "scene_00.gpkg").unlink()
    assert reasons() == ["outputs incomplete", "input changed"]
    rerun = run_batch(load_catalog(path))
    assert [o.reason for o in rerun.outcomes] == ["outputs incomplete", "input changed"]
    assert reasons() == [None, None]
    original = path.read_text()
    path.write_text(original.replace("min_area: 0.0", "min_area: 5"))
    assert reasons() == ["parameters changed"] * 2
    path.write_text(original.replace("batch_size: 8", "batch_size: 2"))  # does not change results
    assert reasons() == [None, None]
    shutil.copy(model_files[1], tmp_path / "model.safetensors")
    assert reasons() == ["model changed"] * 2
    summary = run_batch(load_catalog(path))
    assert [(o.status, o.reason) for o in summary.outcomes] == [("done", "model changed")] * 2
    assert statuses(run_batch(load_catalog(path))) == {
        "demo/scene_00": "skipped",
        "demo/scene_01": "skipped",
    }
    forced = run_batch(load_catalog(path), ["demo/scene_01"], force=True)
    assert [(o.id, o.reason) for o in forced.outcomes] == [("demo/scene_01", "forced")]


def test_a_failing_scene_fails_alone(tmp_path, model_files):
    path = workspace(tmp_path, model_files[0], scenes=1)
    extra = (
        "  - {id: gone, path: missing.tif}\n  - {id: corrupt, path: bad.tif}\n"
        "  - {id: two, path: two.tif}\noutputs:"
    )
    path.write_text(path.read_text().replace("outputs:", extra))
    (tmp_path / "bad.tif").write_bytes(b"II*\x00 not really a tiff")
    write_test_scene(tmp_path / "two.tif", np.zeros((2, 64, 64), np.uint8))
    summary = run_batch(load_catalog(path))
    assert statuses(summary) == {
        "demo/scene_00": "done", "gone": "failed", "corrupt": "failed", "two": "failed",
    }  # fmt: skip
    by_id = {o.id: o for o in summary.outcomes}
    assert by_id["gone"].reason == f"scenes[1].path: file not found: {tmp_path / 'missing.tif'}"
    assert "bad.tif: GDAL cannot open it" in by_id["corrupt"].reason
    assert "scenes[3].bands" in by_id["two"].reason, by_id["two"].reason
    assert "--bands" not in by_id["two"].reason
    assert summary.headline() == "4 scene(s): 1 done, 0 skipped, 3 failed (gone, corrupt, two)"
    assert not list((tmp_path / "out").glob("corrupt/*"))
    assert not list((tmp_path / "out").glob("two/*"))


def test_runners_retry_only_transient_errors(tmp_path, model_files, monkeypatch):
    catalog = load_catalog(workspace(tmp_path, model_files[0], scenes=1))
    calls = []

    def flaky(run, executor=None, *, force=False, progress=None):
        calls.append(run.id)
        if len(calls) == 1:
            raise ConnectionResetError("reset by peer")
        return SceneOutcome(run.id, run.source, "done", "new")

    monkeypatch.setattr(batch, "run_scene", flaky)
    seen = []
    summary = run_batch(catalog, runner=batch.retrying(1, 0.0), on_outcome=seen.append)
    assert statuses(summary) == {"demo/scene_00": "done"} and len(calls) == 2
    assert seen == list(summary.outcomes)
    calls.clear()
    (outcome,) = run_batch(catalog).outcomes  # the default runner does not retry
    assert (outcome.status, outcome.reason, len(calls)) == ("failed", "reset by peer", 1)

    def corrupt(run, executor=None, *, force=False, progress=None):
        calls.append(run.id)
        raise RasterReadError("x.tif: GDAL cannot open it")

    monkeypatch.setattr(batch, "run_scene", corrupt)
    calls.clear()
    (outcome,) = run_batch(catalog, runner=batch.retrying(3, 0.0)).outcomes
    assert (outcome.status, len(calls)) == ("failed", 1)  # a user error is not retried


def test_segment_removes_the_old_record_first(tmp_path, model_files):
    catalog = load_catalog(workspace(tmp_path, model_files[0], scenes=1))
    run_batch(catalog)
    (run,) = plan_scenes(catalog)
    assert run.record.is_file()
    result = batch.segment(run)
    assert not run.record.exists()  # a scene being replaced never looks complete
    assert result.segment.classes_path.is_file() and result.vector_paths == []


def test_only_unknown_id_is_an_error(tmp_path, model_files):
    catalog = load_catalog(workspace(tmp_path, model_files[0], scenes=1))
    with pytest.raises(CatalogError, match="only: 'nope' matches no scene; entries are: demo"):
        plan_scenes(catalog, ["nope"])
    assert [r.id for r in plan_scenes(catalog, ["demo"])] == ["demo/scene_00"]


def test_no_executor_is_started_when_everything_is_up_to_date(tmp_path, model_files):
    path = workspace(tmp_path, model_files[0], scenes=1)
    run_batch(load_catalog(path))
    path.write_text(path.read_text() + "execution: {scheduler: 'tcp://127.0.0.1:9'}\n")
    assert statuses(run_batch(load_catalog(path))) == {"demo/scene_00": "skipped"}


def test_summary_rows_and_markdown(tmp_path):
    png = tmp_path / "q.png"
    Image.new("P", (4, 4)).save(png)
    areas = {"bg": 1.0, "water": 0.5}
    summary = BatchSummary((
        SceneOutcome("a", "a.tif", "done", "new", 1.25, areas, ("x/a.gpkg",), str(png)),
        SceneOutcome("b", "b.tif", "failed", "b.tif: GDAL cannot open it"),
    ))  # fmt: skip
    rows = summary.rows()
    assert rows[0] == {"scene": "a", "status": "done", "reason": "new", "bg (ha)": 1.0,
                       "water (ha)": 0.5, "seconds": 1.25, "outputs": "a.gpkg"}  # fmt: skip
    assert rows[1]["bg (ha)"] is None and rows[1]["status"] == "failed"
    text = quicklook_markdown(summary, "demo")
    assert "![a](data:image/png;base64," in text and "`b.tif: GDAL cannot open it`" in text
    assert json.dumps(summary.as_json())  # JSON-able


# --- geoseg run-catalog ------------------------------------------------------------------------


def both(capsys) -> str:
    """What a command printed: results (stdout) and progress lines (stderr)."""
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_run_catalog_cli_end_to_end(tmp_path, model_files, capsys):
    path = str(workspace(tmp_path, model_files[0]))
    assert run_app(["run-catalog", path]) == 0
    err = both(capsys)
    assert "done demo/scene_00: new" in err and "2 scene(s): 2 done, 0 skipped, 0 failed" in err
    assert "catalog run" in err and "building (ha)" in err
    assert run_app(["run-catalog", path]) == 0
    assert "2 scene(s): 0 done, 2 skipped, 0 failed" in both(capsys)
    (tmp_path / "scenes" / "scene_07.tif").write_bytes(b"corrupt")
    write_scenes(tmp_path / "new", scenes=3, size=SIZE)
    shutil.copy(tmp_path / "new" / "scene_02.tif", tmp_path / "scenes" / "scene_02.tif")
    assert run_app(["run-catalog", path]) == 1  # one failed; the new scene still ran
    err = both(capsys)
    assert "4 scene(s): 1 done, 2 skipped, 1 failed (demo/scene_07)" in err
    assert "scene_07.tif: GDAL cannot open it" in err
    assert run_app(["run-catalog", path, "--only", "demo/scene_00", "--force"]) == 0
    assert "1 scene(s): 1 done, 0 skipped, 0 failed" in both(capsys)


def test_run_catalog_cli_error_is_one_line(tmp_path, capsys):
    assert run_app(["run-catalog", str(tmp_path / "nope.yaml")]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert lines[0].endswith("nope.yaml: catalog file not found; check the path")
