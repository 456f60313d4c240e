"""Hostile and odd inputs, through the command line exactly as a user runs it.

Each input is either refused (exit code 2, one line naming the file, the problem and the fix, no
traceback, no output left behind) or, where it is legitimately odd, segmented correctly (same
CRS, transform and size as the input; polygons whose true areas add up to the pixels).
"""

from __future__ import annotations

import http.server
import json
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import pytest
import rasterio
import rasterio.shutil
import shapely
from affine import Affine
from rasterio.crs import CRS

from geoseg.cli import run_app
from geoseg.geo.window import Window
from geoseg.io.labels import VectorLabels
from geoseg.io.raster import RasterGrid, write_raster
from geoseg.testing import UTM_ORIGIN, utm_transform, write_test_scene

CLASSES = 3  # the session's tiny model: background, a, b (64-px tiles)
X0, Y0 = UTM_ORIGIN


def image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """3-band uint8 pixels with blobs, so the model makes regions of several classes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(3, height // 8 + 2, width // 8 + 2))
    return np.kron(coarse, np.ones((8, 8)))[:, :height, :width].astype(np.uint8)


def predict(scene: str | Path, model: Path, out: Path, *extra: str) -> int:
    return run_app(["predict", str(scene), "-m", str(model), "-o", str(out), *extra])


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The single ``error:`` line on stderr (and nothing that looks like a traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def assert_refused(code: int, line: str, fragments: tuple[str, ...], out: Path) -> None:
    assert code == 2, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert not out.exists() or not list(out.iterdir()), list(out.iterdir())  # nothing partial


# --- refused -------------------------------------------------------------------------------------


def not_a_raster(folder: Path) -> Path:
    (folder / "notes.tif").write_text("this is a text file, not a GeoTIFF")
    return folder / "notes.tif"


def truncated(folder: Path) -> Path:
    whole = Path(write_test_scene(folder / "whole.tif", image(300, 300)))
    data = whole.read_bytes()
    (folder / "cut.tif").write_bytes(data[: len(data) * 2 // 3])
    return folder / "cut.tif"


def missing(folder: Path) -> Path:
    return folder / "nowhere.tif"


def empty(folder: Path) -> Path:
    (folder / "empty.tif").write_bytes(b"")
    return folder / "empty.tif"


def directory(folder: Path) -> Path:
    (folder / "tiles.tif").mkdir()
    return folder / "tiles.tif"


def sheared(folder: Path) -> Path:
    transform = Affine(0.5, 0.2, X0, 0.0, -0.5, Y0)
    return Path(write_test_scene(folder / "sheared.tif", image(64, 64), transform=transform))


def crs_without_geotransform(folder: Path) -> Path:
    path = folder / "nogt.tif"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        write_raster(path, image(64, 64), "EPSG:32632", Affine.identity())
    return path


REFUSED: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "not a raster": (not_a_raster, ("notes.tif: GDAL cannot open it as a raster",)),
    "truncated": (truncated, ("cut.tif: is truncated or corrupt", "copy or export it again")),
    "missing": (missing, ("nowhere.tif: scene not found", "check the path")),
    "empty": (empty, ("empty.tif: is empty (0 bytes)", "fetch the file again")),
    "directory": (directory, ("tiles.tif: is a directory", "give the path of a GeoTIFF")),
    "sheared": (sheared, ("sheared.tif: has a sheared geotransform", "gdalwarp")),
    "crs, no geotransform": (
        crs_without_geotransform,
        ("nogt.tif: has a CRS (EPSG:32632) but no geotransform", "gdal_edit.py -a_ullr"),
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_unusable_scene_is_refused_in_one_line(case, tmp_path, tiny_model, capsys):
    make, fragments = REFUSED[case]
    scene = make(tmp_path)
    out = tmp_path / "out"
    code = predict(scene, tiny_model, out)
    assert_refused(code, one_line_error(capsys), fragments, out)


def test_geojson_of_a_scene_without_crs_is_refused_before_any_work(tmp_path, tiny_model, capsys):
    scene = tmp_path / "local.tif"
    write_raster(scene, image(64, 64), None, utm_transform())
    out = tmp_path / "out"
    code = predict(scene, tiny_model, out, "--vector-format", "gpkg,geojson")
    line = one_line_error(capsys)
    assert_refused(code, line, ("local.tif: has no CRS", "GeoJSON", "--vector-format"), out)


@pytest.mark.parametrize(
    ("make", "args", "fragment"),
    [
        (not_a_raster, [], "notes.tif: GDAL cannot open it"),
        (empty, ["--vector-format", "geojson"], "empty.tif: is empty"),
    ],
)
def test_a_real_process_prints_one_line_and_exits_2(make, args, fragment, tmp_path, tiny_model):
    scene, out = make(tmp_path), tmp_path / "out"
    cmd = [sys.executable, "-m", "geoseg", "predict", str(scene), "-m", str(tiny_model),
           "-o", str(out), *args]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], done.stderr
    assert not out.exists()


# --- accepted: odd but legitimate ----------------------------------------------------------------


def assert_segmented(scene: Path, out: Path) -> tuple[np.ndarray, gpd.GeoDataFrame]:
    """Same grid as the input, a class everywhere, polygons that add up to the pixels."""
    classes_path = out / f"{scene.stem}_classes.tif"
    with rasterio.open(scene) as src, rasterio.open(classes_path) as dst:
        assert (dst.width, dst.height) == (src.width, src.height)
        assert dst.transform.almost_equals(src.transform)
        assert dst.crs == src.crs
        classes = dst.read(1)
    assert classes.max() < CLASSES  # no nodata anywhere: the input has none
    polygons = gpd.read_file(out / f"{scene.stem}.gpkg", layer=scene.stem)
    assert shapely.is_valid(polygons.geometry.values).all()
    return classes, polygons


def true_pixel_area(scene: Path) -> float:
    """Area in m² of the centre pixel, on the ellipsoid (independent of geoseg's maths)."""
    with rasterio.open(scene) as ds:
        col, row = ds.width // 2, ds.height // 2
        corners = [ds.transform @ xy for xy in ((col, row), (col + 1, row), (col + 1, row + 1),
                                                (col, row + 1))]  # fmt: skip
        to_lonlat = pyproj.Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True)
    lonlat = shapely.Polygon([to_lonlat.transform(x, y) for x, y in corners])
    area, _ = pyproj.Geod(ellps="WGS84").geometry_area_perimeter(lonlat)
    return abs(area)


def assert_true_areas(classes: np.ndarray, polygons: gpd.GeoDataFrame, pixel_m2: float) -> None:
    foreground = int((classes > 0).sum())  # background (0) gets no polygons
    assert polygons.area_m2.sum() == pytest.approx(foreground * pixel_m2, rel=2e-3)


def wkt_without_epsg() -> CRS:
    definition = pyproj.CRS.from_epsg(32632).to_json_dict()
    definition.pop("id")
    return CRS.from_wkt(pyproj.CRS.from_json_dict(definition).to_wkt())


GEOREFERENCED = {
    "EPSG:4326": ("EPSG:4326", Affine(5e-6, 0, 11.0, 0, -5e-6, 48.0)),
    "south in a north zone": ("EPSG:32632", utm_transform(origin=(500_000.0, -1_000_000.0))),
    "WKT, no EPSG code": (wkt_without_epsg(), utm_transform()),
}


@pytest.mark.parametrize("case", GEOREFERENCED)
def test_unusual_georeferencing_gives_true_areas(case, tmp_path, tiny_model):
    crs, transform = GEOREFERENCED[case]
    scene = tmp_path / "scene.tif"
    write_raster(scene, image(96, 80), crs, transform)
    assert predict(scene, tiny_model, tmp_path / "out", "--vector-format", "gpkg,geojson") == 0
    classes, polygons = assert_segmented(scene, tmp_path / "out")
    assert_true_areas(classes, polygons, true_pixel_area(scene))
    geojson = json.loads((tmp_path / "out" / "scene.geojson").read_text())
    lon, lat = np.array(geojson["features"][0]["geometry"]["coordinates"][0][0])
    to_lonlat = pyproj.Transformer.from_crs(pyproj.CRS(crs.to_wkt() if isinstance(crs, CRS) else crs),
                                            "EPSG:4326", always_xy=True)  # fmt: skip
    expected = to_lonlat.transform(transform.c, transform.f)  # the scene's corner, in WGS84
    assert (lon, lat) == pytest.approx(expected, abs=1e-3)  # within the scene, right hemisphere


def test_scene_without_crs_gives_outputs_without_crs(tmp_path, tiny_model):
    scene = tmp_path / "local.tif"
    write_raster(scene, image(64, 96), None, utm_transform())
    assert predict(scene, tiny_model, tmp_path / "out") == 0
    classes, polygons = assert_segmented(scene, tmp_path / "out")
    assert polygons.crs is None
    assert_true_areas(classes, polygons, 0.25)  # units taken as metres


def test_scene_without_any_georeferencing_stays_in_pixels(tmp_path, tiny_model):
    scene = tmp_path / "photo.tif"
    with pytest.warns(rasterio.errors.NotGeoreferencedWarning):
        write_raster(scene, image(64, 96), None, Affine.identity())
    assert predict(scene, tiny_model, tmp_path / "out") == 0
    classes, polygons = assert_segmented(scene, tmp_path / "out")
    assert_true_areas(classes, polygons, 1.0)  # one square unit per pixel


def pixel_mapper(transform: Affine) -> Callable[[np.ndarray], np.ndarray]:
    """A shapely coordinate function applying ``transform`` to ``(N, 2)`` points."""
    a, b, c, d, e, f = transform[:6]
    return lambda xy: np.c_[a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f]


def test_rotated_scene_equals_its_north_up_twin_rotated(tmp_path, tiny_model):
    pixels = image(64, 96)
    north_up = utm_transform()
    rotated = Affine.translation(X0, Y0) @ Affine.rotation(30) @ Affine.scale(0.5, -0.5)
    for name, transform in (("north", north_up), ("rotated", rotated)):
        write_raster(tmp_path / f"{name}.tif", pixels, "EPSG:32632", transform)
        assert predict(tmp_path / f"{name}.tif", tiny_model, tmp_path / name) == 0
    a_classes, a_polys = assert_segmented(tmp_path / "north.tif", tmp_path / "north")
    b_classes, b_polys = assert_segmented(tmp_path / "rotated.tif", tmp_path / "rotated")
    assert np.array_equal(a_classes, b_classes)  # the model saw the same pixels
    to_pixels = [pixel_mapper(~north_up), pixel_mapper(~rotated)]
    in_pixels = [
        shapely.normalize(shapely.set_precision(shapely.transform(p.geometry.values, t), 1e-6))
        for p, t in zip((a_polys, b_polys), to_pixels, strict=True)
    ]
    assert len(in_pixels[0]) == len(in_pixels[1]) > 0
    assert shapely.equals_exact(in_pixels[0], in_pixels[1], tolerance=1e-6).all()
    assert b_polys.area_m2.to_numpy() == pytest.approx(a_polys.area_m2.to_numpy(), rel=1e-6)


@pytest.mark.parametrize(
    "shape",
    [(1, 1), (20, 30), (1, 200), (3, 1500), (97, 131)],
    ids=["1x1 px", "smaller than a tile", "one row", "wide and thin", "not multiples of 32"],
)
def test_odd_sizes_are_segmented_on_the_input_grid(shape, tmp_path, tiny_model):
    scene = Path(write_test_scene(tmp_path / "odd.tif", image(*shape)))
    assert predict(scene, tiny_model, tmp_path / "out") == 0
    classes, polygons = assert_segmented(scene, tmp_path / "out")
    assert classes.shape == shape
    assert_true_areas(classes, polygons, 0.25 / 0.9996**2)  # UTM scale at the central meridian


# --- other ways in: VRT and /vsicurl/ ------------------------------------------------------------


def classes_of(out: Path, stem: str) -> tuple[np.ndarray, Affine, CRS]:
    with rasterio.open(out / f"{stem}_classes.tif") as ds:
        return ds.read(1), ds.transform, ds.crs


def test_vrt_over_a_geotiff_gives_the_same_output(tmp_path, tiny_model):
    scene = write_test_scene(tmp_path / "scene.tif", image(100, 140))
    rasterio.shutil.copy(scene, tmp_path / "mosaic.vrt", driver="VRT")
    assert predict(scene, tiny_model, tmp_path / "tif", "--vector-format", "none") == 0
    assert predict(tmp_path / "mosaic.vrt", tiny_model, tmp_path / "vrt", "--vector-format",
                   "none") == 0  # fmt: skip
    tif, vrt = classes_of(tmp_path / "tif", "scene"), classes_of(tmp_path / "vrt", "mosaic")
    assert np.array_equal(tif[0], vrt[0]) and tif[1:] == vrt[1:]


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP range requests, as object stores do (GDAL's /vsicurl/ needs them)."""

    def log_message(self, *args: object) -> None:
        pass

    def send_head(self):  # type: ignore[no-untyped-def]
        header = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not header or not path.is_file():
            return super().send_head()
        data = path.read_bytes()
        start, _, stop = header.removeprefix("bytes=").partition("-")
        first, last = int(start), min(int(stop or len(data) - 1), len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {first}-{last}/{len(data)}")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        return _Body(data[first : last + 1])


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, *_: object) -> bytes:
        data, self.data = self.data, b""
        return data

    def close(self) -> None:
        pass


@pytest.fixture
def http_folder(tmp_path) -> Iterator[tuple[Path, str]]:
    folder = tmp_path / "served"
    folder.mkdir()
    handler = lambda *a, **k: RangeHandler(*a, directory=str(folder), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # a separate process: GDAL holds the GIL while it opens a URL, so a thread would never answer
    process = multiprocessing.get_context("fork").Process(target=server.serve_forever, daemon=True)
    process.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        process.terminate()
        process.join(10)
        server.server_close()


def test_vsicurl_scene_gives_the_same_output_as_the_local_file(
    http_folder, tmp_path, tiny_model, monkeypatch
):
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "20")  # fail, never hang, if the server is stuck
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    folder, url = http_folder
    scene = write_test_scene(folder / "remote.tif", image(100, 140))
    assert predict(scene, tiny_model, tmp_path / "local", "--vector-format", "none") == 0
    remote = f"/vsicurl/{url}/remote.tif"
    assert predict(remote, tiny_model, tmp_path / "url", "--vector-format", "none") == 0
    local, served = classes_of(tmp_path / "local", "remote"), classes_of(tmp_path / "url", "remote")
    assert np.array_equal(local[0], served[0]) and local[1:] == served[1:]


# --- min_area on a geographic CRS ---------------------------------------------------------------


def test_min_area_on_an_epsg4326_scene_uses_square_metres(tmp_path, capsys):
    """At 60° N a 1e-5° pixel is about 1.11 m x 0.56 m; areas and the cut-off are in true m²."""
    classes = np.zeros((200, 200), np.uint8)
    classes[10:20, 10:20] = 1  # 100 px, ~62 m²: sieved away by min_area 200
    classes[100:130, 100:130] = 2  # 900 px, ~558 m²: kept
    classes[150:170, 20:30] = 1  # 200 px, ~124 m²: sieved away
    path = tmp_path / "classes.tif"
    transform = Affine(1e-5, 0, 10.0, 0, -1e-5, 60.001)
    tags = {"CLASS_NAMES": json.dumps(["background", "a", "b"])}
    write_raster(path, classes, "EPSG:4326", transform, nodata=255, tags=tags)
    assert run_app(["vectorize", str(path), "--out", str(tmp_path / "p.gpkg"),
                    "--min-area", "200"]) == 0  # fmt: skip
    polygons = gpd.read_file(tmp_path / "p.gpkg", layer="p")
    assert polygons.class_name.tolist() == ["b"]
    big = shapely.box(10.001, 60.001 - 130e-5, 10.0013, 60.001 - 100e-5)
    geodesic, _ = pyproj.Geod(ellps="WGS84").geometry_area_perimeter(big)
    assert polygons.area_m2[0] == pytest.approx(abs(geodesic), rel=1e-4)
    assert polygons.crs.to_epsg() == 4326


# --- labels for train ----------------------------------------------------------------------------


SQUARE = shapely.box(X0 + 5, Y0 - 45, X0 + 30, Y0 - 20)
BOWTIE = shapely.Polygon(
    [(X0 + 2, Y0 - 2), (X0 + 40, Y0 - 40), (X0 + 40, Y0 - 2), (X0 + 2, Y0 - 40)]
)


def train(tmp_path: Path, labels: Path, *extra: str) -> int:
    scene = write_test_scene(tmp_path / "img.tif", image(96, 96))
    return run_app(["train", scene, "--labels", str(labels), "--out",
                    str(tmp_path / "m" / "model.safetensors"), "--tile", "64", "--epochs", "1",
                    "--steps-per-epoch", "1", "--batch-size", "1", "--val-fraction", "0",
                    *extra])  # fmt: skip


def layer(path: Path, geometries: list, crs: str | None = "EPSG:32632", **fields) -> Path:
    fields = fields or {"class_name": ["a"] * len(geometries)}
    gpd.GeoDataFrame(fields, geometry=geometries, crs=crs).to_file(path)
    return path


def test_self_intersecting_labels_are_repaired(tmp_path):
    path = layer(tmp_path / "bowtie.gpkg", [BOWTIE, SQUARE], class_name=["a", "b"])
    grid = RasterGrid(96, 96, "EPSG:32632", utm_transform(), "uint8", 3)
    chip = VectorLabels(path, grid, ("background", "a", "b")).chip(Window(0, 0, 96, 96))
    expected = rasterio.features.rasterize(
        [(shapely.make_valid(BOWTIE), 1), (SQUARE, 2)], out_shape=(96, 96),
        transform=utm_transform(),
    )  # fmt: skip
    assert np.array_equal(chip, expected)
    assert train(tmp_path, path) == 0
    assert (tmp_path / "m" / "model.safetensors").exists()


def engineering_crs(path: Path) -> Path:
    layer(path, [SQUARE], crs=None)
    path.with_suffix(".prj").write_text(
        'LOCAL_CS["site grid",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'
    )
    return path


LABELS_REFUSED = {
    "empty layer": (
        lambda p: layer(p / "empty.gpkg", gpd.GeoSeries([], crs="EPSG:32632"), class_name=[]),
        ("empty.gpkg: the layer has no features", "--class-field", "add labelled polygons"),
    ),
    "no overlap": (
        lambda p: layer(p / "far.gpkg", [shapely.box(0, 0, 10, 10)]),
        ("far.gpkg: no feature overlaps the image(s)", "(0, 0, 10, 10)", "check the labels' CRS"),
    ),
    "missing class field": (
        lambda p: layer(p / "nofield.gpkg", [SQUARE], kind=["a"]),
        ("nofield.gpkg: no field 'class_name'", "available fields: kind", "--class-field"),
    ),
    "no CRS": (
        lambda p: layer(p / "nocrs.shp", [SQUARE], crs=None),
        ("nocrs.shp: has no CRS", "ogr2ogr -a_srs EPSG:32632"),
    ),
    "CRS that cannot be transformed": (
        lambda p: engineering_crs(p / "site.shp"),
        ("site.shp: its CRS ('site grid') cannot be transformed", "ogr2ogr -t_srs EPSG:32632"),
    ),
}


@pytest.mark.parametrize("case", LABELS_REFUSED)
def test_unusable_labels_are_refused_in_one_line(case, tmp_path, capsys):
    make, fragments = LABELS_REFUSED[case]
    code = train(tmp_path, make(tmp_path))
    assert_refused(code, one_line_error(capsys), fragments, tmp_path / "m")
