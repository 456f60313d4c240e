"""Scenes read over HTTP (``/vsicurl/``) from a local server on 127.0.0.1.

The server answers ranged GETs (as GDAL reads a COG) and can fail the first N requests with 503.
Predicting from the URL gives the same bytes as from the local file; GDAL retries failed requests
(``GDAL_HTTP_MAX_RETRY``); a read that still fails is a transient error that the batch runner
retries.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from geoseg.batch.catalog import load_catalog
from geoseg.batch.runner import is_transient, run_batch, run_with_retries
from geoseg.cli import run_app
from geoseg.errors import RasterReadError, RemoteReadError
from geoseg.io.raster import scene_grid
from geoseg.testing import create_test_model, write_test_scene

MP = multiprocessing.get_context("fork")
ARGS = ["--vector-format", "none", "--overlap", "8", "--device", "cpu"]


class Files:
    """What the server serves, and how many requests it has yet to fail (shared between the
    test and the server process)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fail_next = MP.Value("i", 0)
        self._ranged = MP.Value("i", 0)

    @property
    def fail_next(self) -> int:
        return int(self._fail_next.value)

    @fail_next.setter
    def fail_next(self, count: int) -> None:
        self._fail_next.value = count

    @property
    def ranged_requests(self) -> int:
        return int(self._ranged.value)

    def should_fail(self, ranged: bool) -> bool:
        with self._fail_next.get_lock():
            failing = self._fail_next.value > 0
            self._fail_next.value = max(0, self._fail_next.value - 1)
        if ranged and not failing:
            with self._ranged.get_lock():
                self._ranged.value += 1
        return failing


def handler_for(files: Files) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """HEAD and GET with a ``Range: bytes=a-b`` header (206), like a static file server."""

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self.answer(body=False)

        def do_GET(self) -> None:
            self.answer(body=True)

        def answer(self, body: bool) -> None:
            path = files.folder / self.path.lstrip("/")
            if files.should_fail(ranged="Range" in self.headers):
                return self.send(503, b"try again")
            if not path.is_file():
                return self.send(404, b"not found")
            data = path.read_bytes()
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
            if match is None:
                return self.send(200, data, body)
            start = int(match[1])
            end = min(int(match[2] or len(data) - 1), len(data) - 1)
            self.send(206, data[start : end + 1], body, f"bytes {start}-{end}/{len(data)}")

        def send(self, code: int, data: bytes, body: bool = True, span: str = "") -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Accept-Ranges", "bytes")
            if span:
                self.send_header("Content-Range", span)
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, Files]]:
    """An HTTP server on 127.0.0.1 serving a scene, and its base URL.

    It runs in its own process: GDAL holds the GIL while it waits for an answer, so a server
    thread in the test process would never answer.
    """
    folder = tmp_path_factory.mktemp("served")
    rng = np.random.default_rng(5)
    data = np.kron(rng.integers(0, 256, (3, 6, 6)), np.ones((16, 16))).astype(np.uint8)
    write_test_scene(folder / "scene.tif", data)
    create_test_model(folder / "m.safetensors", "unet", "resnet18", 3, ["bg", "a"], tile_size=32)
    files = Files(folder)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(files))
    process = MP.Process(target=httpd.serve_forever, daemon=True)
    process.start()
    httpd.socket.close()  # the server process owns it now
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    finally:
        process.terminate()
        process.join(10)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch, server):
    """GDAL retries quickly here; each test starts with a server that fails nothing."""
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.1")
    monkeypatch.setenv("CPL_VSIL_CURL_NON_CACHED", "/vsicurl/")  # no cached answers across tests
    server[1].fail_next = 0


def predict(scene: str, model: Path, out: Path) -> int:
    return run_app(["predict", scene, "-m", str(model), "-o", str(out), *ARGS])


def read_cog(path: Path) -> tuple[np.ndarray, tuple[object, ...], str]:
    """Pixels, (CRS, transform, tags without the job tag, colour table) and the job tag."""
    import rasterio

    with rasterio.open(path) as ds:
        tags = ds.tags()
        job = tags.pop("GEOSEG_JOB", "")
        return ds.read(1), (ds.crs, ds.transform, tags, ds.colormap(1)), job


def test_predict_from_a_url_equals_the_local_result(server, tmp_path):
    url, files = server
    model = files.folder / "m.safetensors"
    assert predict(str(files.folder / "scene.tif"), model, tmp_path / "local") == 0
    assert predict(f"/vsicurl/{url}/scene.tif", model, tmp_path / "url") == 0
    local, remote = (read_cog(tmp_path / f / "scene_classes.tif") for f in ("local", "url"))
    np.testing.assert_array_equal(remote[0], local[0])  # the same classes
    assert remote[1] == local[1]  # georeferencing, class names and colours
    assert remote[2] != local[2]  # the job tag names the input (a URL is another input)
    assert files.ranged_requests > 0  # really read over HTTP


def test_failed_requests_are_retried_by_gdal(server, tmp_path):
    url, files = server
    files.fail_next = 2  # fewer than GDAL_HTTP_MAX_RETRY (3)
    grid = scene_grid(f"/vsicurl/{url}/scene.tif")
    assert (grid.width, grid.height) == (96, 96)
    assert files.fail_next == 0


def test_a_url_that_keeps_failing_is_a_transient_one_line_error(server, tmp_path, capsys):
    url, files = server
    files.fail_next = 1000
    model = files.folder / "m.safetensors"
    assert predict(f"/vsicurl/{url}/scene.tif", model, tmp_path / "out") == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"error: /vsicurl/{url}/scene.tif: GDAL cannot open it")
    assert "check the URL, the network" in lines[0]
    with pytest.raises(RemoteReadError) as caught:
        scene_grid(f"/vsicurl/{url}/scene.tif")
    assert is_transient(caught.value)
    assert not is_transient(RasterReadError("scene.tif: corrupt"))


def test_the_batch_runner_retries_a_url_that_fails_for_a_while(server, tmp_path, caplog):
    url, files = server
    model = files.folder / "m.safetensors"
    catalog = tmp_path / "cat.yaml"
    catalog.write_text(
        f"models: {{m: {model}}}\n"
        f"scenes: [{{id: remote, path: '/vsicurl/{url}/scene.tif'}}]\n"
        "outputs: {path: out, vector_formats: []}\n"
        "defaults: {overlap: 8, device: cpu}\n"
    )
    files.fail_next = 10  # an attempt that fails takes 8 requests (GDAL retries 3 times)
    runner = functools.partial(run_with_retries, retries=2, retry_delay=0.1)
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        summary = run_batch(load_catalog(catalog), runner=runner)
    assert [o.status for o in summary.outcomes] == ["done"], summary.outcomes
    assert (tmp_path / "out" / "remote" / "scene_classes.tif").exists()
    assert "GDAL cannot open it" in caplog.text and "retry 1 of 2" in caplog.text
