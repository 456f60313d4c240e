"""Bands, dtypes, normalisation and nodata kinds, each run through the CLI as a user runs it.

Every refused input exits 2 with one line naming the file, the problem and the fix, and leaves no
output under its final name; every odd-but-legitimate input gives a correct result.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from geoseg.cli import run_app
from geoseg.models.modelfile import read_contract
from geoseg.testing import create_test_model, utm_transform

SIZE = 64
NODATA_CLASS = 255


# --- helpers ------------------------------------------------------------------------------------


def write(path, data, *, gsd=0.5, internal_mask=None, **profile):
    """A GeoTIFF written the ordinary way with rasterio (``profile``: photometric, alpha, nodata)."""
    base = {"driver": "GTiff", "count": data.shape[0], "height": data.shape[1],
            "width": data.shape[2], "dtype": data.dtype.name, "crs": "EPSG:32632",
            "transform": utm_transform(gsd)}  # fmt: skip
    with (
        rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True),
        rasterio.open(path, "w", **base, **profile) as ds,
    ):
        ds.write(data)
        if internal_mask is not None:
            ds.write_mask(internal_mask)
    return str(path)


def pixels(bands=3, dtype="uint8", high=250, seed=0):
    """Smooth random pixels in ``1..high`` (no accidental zeros or 255s)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(1, high, size=(bands, SIZE // 16, SIZE // 16))
    return np.kron(coarse, np.ones((16, 16))).astype(dtype)


def predict(scene, model, out, *extra):
    return run_app(["predict", scene, "-m", str(model), "-o", str(out), "--vector-format",
                    "none", *extra])  # fmt: skip


def classes(out, scene="s"):
    with rasterio.open(out / f"{scene}_classes.tif") as ds:
        return ds.read(1)


def lines(capsys, prefix):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith(prefix)]


def refused(capsys, out, *fragments):
    """Exactly one ``error:`` line holding every fragment, and no output under its final name."""
    found = lines(capsys, "error: ")
    assert len(found) == 1, found
    for fragment in fragments:
        assert fragment in found[0], found[0]
    assert not list(out.glob("*_classes.tif")) if out.exists() else True
    return found[0]


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")

    def make(name, bands, **contract):
        return create_test_model(folder / f"{name}.safetensors", "unet", "resnet18", bands,
                                 ["bg", "a", "b"], tile_size=64, gsd=0.5, **contract)  # fmt: skip

    return {"rgb": make("rgb", 3), "rgbn": make("rgbn", 4), "float": make("f", 3, dtype="float32")}


# --- bands and alpha flags ----------------------------------------------------------------------


def rgbn_alpha(path, **profile):
    """R, G, B, NIR written with photometric=RGB and GDAL's alpha flag on band 4 (as GDAL < 3.x
    and many tools do by default); NIR is 0 in the top-left quarter, which must stay valid."""
    data = pixels(4)
    data[3, :32, :32] = 0
    return write(path, data, photometric="RGB", alpha="YES", **profile)


def test_rgbn_with_band_4_flagged_alpha_predicts_with_a_4_band_model(tmp_path, models, capsys):
    scene = rgbn_alpha(tmp_path / "s.tif")
    with rasterio.open(scene) as ds:
        assert ds.colorinterp[3].name == "alpha"
    assert predict(scene, models["rgbn"], tmp_path / "o") == 0
    warnings = lines(capsys, "warning: ")
    assert len(warnings) == 1 and "band 4 is flagged alpha but holds data" in warnings[0]
    assert (classes(tmp_path / "o") != NODATA_CLASS).all()  # NIR zeros are data, not a mask


def test_rgbn_with_alpha_flag_and_nodata_trains_a_4_band_model(tmp_path, capsys):
    import geoseg.cli.train  # noqa: F401  (registers the command)

    image = rgbn_alpha(tmp_path / "img.tif", nodata=7)  # nodata + alpha: rasterio's shadow spam
    labels = tmp_path / "labels.tif"
    target = (pixels(1, high=3, seed=1) % 2).astype("uint8")
    write(labels, target)
    out = tmp_path / "m.safetensors"
    args = ["train", image, "--labels", str(labels), "--classes", "bg,a", "--out", str(out),
            "--tile", "64", "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2",
            "--device", "cpu", "--val-fraction", "0"]  # fmt: skip
    assert run_app(args) == 0
    err = capsys.readouterr().err
    assert "shadowing" not in err  # rasterio's NodataShadowWarning is caught where masks are read
    assert err.count("band 4 is flagged alpha but holds data") == 1
    assert read_contract(out).bands == 4


def test_three_band_file_into_a_four_band_model_counts_the_file_bands(tmp_path, models, capsys):
    scene = write(tmp_path / "s.tif", pixels(3), photometric="RGB")
    assert predict(scene, models["rgbn"], tmp_path / "o") == 2
    refused(capsys, tmp_path / "o", "s.tif: has 3 band(s) but the model expects 4",
            "use an image with 4 bands")  # fmt: skip


def test_alpha_that_is_a_mask_stays_a_mask(tmp_path, models, capsys):
    data = pixels(4)
    data[3] = 255
    data[3, :, :16] = 0  # a transparent collar on the left
    scene = write(tmp_path / "s.tif", data, photometric="RGB", alpha="YES")
    assert predict(scene, models["rgb"], tmp_path / "o") == 0
    result = classes(tmp_path / "o")
    assert (result[:, :16] == NODATA_CLASS).all() and (result[:, 16:] != NODATA_CLASS).all()
    assert not lines(capsys, "warning: ")
    assert predict(scene, models["rgbn"], tmp_path / "o4") == 2
    refused(capsys, tmp_path / "o4", "s.tif: has 4 band(s) (band 4 is flagged alpha and is a mask",
            "leaving 3 data band(s), but the model expects 4", "--bands to 1,2,3,4")  # fmt: skip


def test_nodata_shadowing_an_alpha_mask_is_said_once_in_geosegs_words(tmp_path, models, capsys):
    data = pixels(4)
    data[3] = 255
    scene = write(tmp_path / "s.tif", data, photometric="RGB", alpha="YES", nodata=0)
    assert predict(scene, models["rgb"], tmp_path / "o", "--block-size", "32") == 0
    warnings = lines(capsys, "warning: ")
    assert len(warnings) == 1 and "declares nodata 0 and an alpha mask (band 4)" in warnings[0]


# --- dtypes and normalisation -------------------------------------------------------------------


def test_uint16_into_a_uint8_model_is_refused_with_the_fix(tmp_path, models, capsys):
    scene = write(tmp_path / "s.tif", pixels(3, "uint16", high=9000))
    assert predict(scene, models["rgb"], tmp_path / "o") == 2
    refused(capsys, tmp_path / "o", "s.tif: pixels are uint16 but the model expects uint8",
            "gdal_translate -ot Byte -scale", "model-create")  # fmt: skip


def test_wrapped_uint16_model_with_a_scene_stretch(tmp_path, capsys):
    model = tmp_path / "m16.safetensors"
    assert run_app(["model-create", "--bands", "3", "--dtype", "uint16", "--stretch", "2,98",
                    "--mean", "0.4", "--classes", "bg,a,b", "--tile", "64", "--gsd", "0.5",
                    "--out", str(model)]) == 0  # fmt: skip
    assert run_app(["model-info", str(model)]) == 0
    assert "percentiles 2-98" in capsys.readouterr().out  # results go to stdout
    data = pixels(3, "uint16", high=9000)
    data[:, :8] = 0
    scene = write(tmp_path / "s.tif", data, nodata=0)
    assert predict(scene, model, tmp_path / "a", "--block-size", "32") == 0
    assert predict(scene, model, tmp_path / "b", "--block-size", "64") == 0
    first, second = classes(tmp_path / "a"), classes(tmp_path / "b")
    assert np.array_equal(first, second)  # the stretch is the scene's, not a block's
    assert (first[:8] == NODATA_CLASS).all() and (first[8:] != NODATA_CLASS).all()
    assert len(set(np.unique(first[8:]))) > 1  # scaled into range: not one saturated class
    byte = write(tmp_path / "byte.tif", pixels(3))  # a stretch scales any dtype
    assert predict(byte, model, tmp_path / "c") == 0
    assert run_app(["model-create", "--dtype", "uint16", "--stretch", "2,98", "--low", "0",
                    "--classes", "a,b", "--out", str(tmp_path / "x.safetensors")]) == 2  # fmt: skip
    assert "give --stretch (computed over each scene) or --low/--high" in refused(capsys, tmp_path)


def test_old_contract_version_still_loads(tmp_path, models):
    from geoseg.models.contract import ModelContract

    contract = read_contract(models["rgb"])
    old = (
        contract.to_json().replace('"stretch": null, ', "").replace('"version": 2', '"version": 1')
    )
    loaded = ModelContract.from_json(old)
    assert loaded.version == 1 and loaded.stretch is None and loaded.bands == 3


# --- nodata kinds -------------------------------------------------------------------------------


@pytest.mark.parametrize("declared", [float("nan"), None], ids=["nan-nodata", "undeclared"])
def test_float_with_nan_nodata(tmp_path, models, declared):
    data = pixels(3, "float32") / 255
    data[:, 40:] = np.nan
    scene = write(tmp_path / "s.tif", data.astype("float32"), nodata=declared)
    assert predict(scene, models["float"], tmp_path / "o") == 0
    result = classes(tmp_path / "o")
    assert (result[40:] == NODATA_CLASS).all() and (result[:40] != NODATA_CLASS).all()


def test_zero_collar_with_explicit_nodata(tmp_path, models):
    data = pixels(3)
    data[:, :, 56:] = 0
    scene = write(tmp_path / "s.tif", data)  # no declared nodata
    assert predict(scene, models["rgb"], tmp_path / "o", "--nodata", "0") == 0
    result = classes(tmp_path / "o")
    assert (result[:, 56:] == NODATA_CLASS).all() and (result[:, :56] != NODATA_CLASS).all()


def test_internal_mask(tmp_path, models):
    mask = np.full((SIZE, SIZE), 255, np.uint8)
    mask[48:] = 0
    scene = write(tmp_path / "s.tif", pixels(3), photometric="RGB", internal_mask=mask)
    assert predict(scene, models["rgb"], tmp_path / "o") == 0
    result = classes(tmp_path / "o")
    assert (result[48:] == NODATA_CLASS).all() and (result[:48] != NODATA_CLASS).all()


def test_all_nodata_scene_gives_empty_outputs_and_one_warning(tmp_path, models, capsys):
    scene = write(tmp_path / "s.tif", np.zeros((3, SIZE, SIZE), np.uint8), nodata=0)
    assert predict(scene, models["rgb"], tmp_path / "o", "--vector-format", "gpkg") == 0
    warnings = lines(capsys, "warning: ")
    assert len(warnings) == 1 and "s.tif: every pixel is nodata" in warnings[0]
    assert (classes(tmp_path / "o") == NODATA_CLASS).all()
    import pyogrio

    assert pyogrio.read_info(tmp_path / "o" / "s.gpkg", layer="s")["features"] == 0


def test_gsd_far_from_the_models_names_both(tmp_path, models, capsys):
    scene = write(tmp_path / "s.tif", pixels(3), gsd=5.0)
    assert predict(scene, models["rgb"], tmp_path / "o") == 0
    warnings = lines(capsys, "warning: ")
    assert len(warnings) == 1 and "pixel size 5 m differs from the model's 0.5 m" in warnings[0]
