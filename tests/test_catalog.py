"""The data catalog: schema, types, references, one-line errors that name the YAML path."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

import geoseg.cli.catalog  # noqa: F401  (registers the commands)
from geoseg.batch.catalog import (
    Catalog,
    Defaults,
    Execution,
    Schedule,
    discover_files,
    load_catalog,
    scene_id,
    validate_catalog,
)
from geoseg.cli import run_app
from geoseg.errors import CatalogError
from geoseg.options import InferenceOptions, InputOptions, OutputOptions, TilingOptions
from geoseg.testing import create_test_model, write_test_scene

REPO = Path(__file__).resolve().parents[1]
VALID = """
models:
  unet: models/m.safetensors
scenes:
  - id: tiles
    path: scenes/*.tif
    model: unet
    tags: [a, b]
  - id: one
    path: one.tif
    bands: [1, 2, 3]
    nodata: 0
outputs:
  path: out
  vector_formats: [gpkg, fgb]
  confidence: true
  min_area: 2
defaults: {tile: 64, overlap: 16, batch_size: 8, device: cpu}
execution: {workers: 2}
schedule: {cron: "30 3 * * 1-5", timezone: Europe/Berlin}
"""


@pytest.fixture
def folder(tmp_path) -> Path:
    """A catalog folder with a (fake) model file; only its existence matters to loading."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.safetensors").write_bytes(b"x")
    return tmp_path


def write(folder: Path, text: str, name: str = "cat.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def edited(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new)


def test_valid_catalog_maps_onto_typed_parameters(folder):
    catalog = load_catalog(write(folder, VALID))
    assert isinstance(catalog, Catalog)
    assert catalog.name == "cat"
    assert catalog.models == {"unet": folder / "models" / "m.safetensors"}
    tiles, one = catalog.scenes
    assert tiles.path == str(folder / "scenes" / "*.tif") and tiles.is_glob
    assert tiles.tags == ("a", "b")
    assert one.model == "unet"  # the only model is the default
    assert (one.bands, one.nodata, one.is_glob) == ((1, 2, 3), 0.0, False)
    assert catalog.outputs.path == str(folder / "out")
    assert catalog.outputs.vector_formats == ("gpkg", "fgb")
    assert catalog.defaults == Defaults(tile=64, overlap=16, batch_size=8, device="cpu")
    assert catalog.defaults.tiling == TilingOptions(
        tile=64, overlap=16, batch_size=8, block_size=None
    )
    assert catalog.defaults.inference == InferenceOptions(device="cpu", tta=False)
    assert one.input == InputOptions(bands=(1, 2, 3), nodata=0.0)
    assert catalog.outputs.options == OutputOptions(
        vector_formats=("gpkg", "fgb"), confidence=True, min_area=2.0
    )
    assert catalog.execution == Execution(workers=2)
    assert catalog.schedule == Schedule(cron="30 3 * * 1-5", timezone="Europe/Berlin")


def test_optional_sections_default(folder):
    text = "models: {m: models/m.safetensors}\nscenes: [{id: a, path: a.tif}]\noutputs: {path: o}\n"
    catalog = load_catalog(write(folder, text))
    assert catalog.defaults == Defaults()
    assert catalog.execution == Execution()
    assert catalog.schedule is None
    assert catalog.outputs.vector_formats == ("gpkg",)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "models:",
            "colour: red\nmodels:",
            "colour: unknown key; valid keys: name, models, scenes",
        ),
        (
            "batch_size: 8",
            "batchsize: 8",
            "defaults.batchsize: unknown key; valid keys: tile, overlap",
        ),
        (
            "    nodata: 0",
            "    no_data: 0",
            "scenes[1].no_data: unknown key; valid keys: id, path, model",
        ),
        ("    path: one.tif\n", "", "scenes[1].path: required"),
        ("tile: 64", "tile: big", "defaults.tile: expected an integer, got str 'big'"),
        (
            "confidence: true",
            "confidence: 1",
            "outputs.confidence: expected true or false, got int 1",
        ),
        (
            "min_area: 2",
            "min_area: -1",
            "outputs.min_area: min area -1.0 is invalid; set outputs.min_area to a number >= 0",
        ),
        (
            "tile: 64",
            "tile: 100",
            "defaults.tile: tile size 100 is not a positive multiple of 32; "
            "set defaults.tile to e.g. 96",
        ),
        (
            "overlap: 16",
            "overlap: 40",
            "defaults.overlap: overlap 40 must be less than half the tile (32); "
            "lower defaults.overlap",
        ),
        (
            "device: cpu",
            "device: gpu",
            "defaults.device: unknown device 'gpu'; choose one of: auto, cpu, cuda",
        ),
        (
            "bands: [1, 2, 3]",
            "bands: [0, 1]",
            "scenes[1].bands: bands [0, 1] are invalid: band numbers start at 1; "
            "set scenes[1].bands to e.g. 1,2,3",
        ),
        ("bands: [1, 2, 3]", "bands: 3", "scenes[1].bands: expected a list, got int 3"),
        (
            "    model: unet\n",
            "    model: unet2\n",
            "scenes[0].model: unknown model 'unet2'; choose one of: unet",
        ),
        ("id: one", "id: tiles", "scenes[1].id: duplicate id 'tiles' (also scenes[0])"),
        ("id: one", "id: 'a b'", "scenes[1].id: 'a b': use letters, digits"),
        ("id: one", "id: 2021", "scenes[1].id: expected text, got int 2021 (quote it)"),
        (
            "[gpkg, fgb]",
            "[gpkg, kml]",
            "outputs.vector_formats: unknown vector format 'kml'; "
            "choose one of: fgb, geojson, gpkg",
        ),
        (
            "path: out",
            "path: s3://bucket/out",
            "outputs.path: 's3://bucket/out': only local folders",
        ),
        ("models/m.safetensors", "models/nope.safetensors", "models.unet: file not found: "),
        ("{workers: 2}", "{workers: 2, scheduler: 'tcp://h:8786'}", "execution: give workers"),
        ("{workers: 2}", "{workers: 0}", "execution.workers: must be >= 1, got 0"),
        ('cron: "30 3 * * 1-5"', "cron: daily", "schedule.cron: 'daily' is not a cron expression"),
        ("Europe/Berlin", "Europe/Berln", "schedule.timezone: unknown timezone 'Europe/Berln'"),
        (
            "schedule: {",
            "schedule: {when: x, ",
            "schedule.when: unknown key; valid keys: cron, timezone",
        ),
    ],
)
def test_each_error_names_its_yaml_path(folder, old, new, expected):
    with pytest.raises(CatalogError) as info:
        load_catalog(write(folder, edited(old, new)))
    message = str(info.value)
    assert message.startswith("cat.yaml: ")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "cat.yaml: (top level): expected a mapping with keys name, models"),
        (
            "models: {m: models/m.safetensors}\nscenes: []\noutputs: {path: o}\n",
            "cat.yaml: scenes: expected a list",
        ),
        (
            "models: {m: models/m.safetensors}\nscenes: [{id: a, path: a}]\n",
            "cat.yaml: outputs: required section",
        ),
        (
            "models: {}\nscenes: [{id: a, path: a}]\noutputs: {path: o}\n",
            "cat.yaml: models: expected a mapping of model name -> model file",
        ),
        ("models: {a: x\n  b: [\n", "cat.yaml: line "),
    ],
)
def test_structure_errors(folder, text, expected):
    with pytest.raises(CatalogError, match="^" + expected.replace("(", r"\(").replace(")", r"\)")):
        load_catalog(write(folder, text))


def test_scene_model_is_required_when_there_are_several(folder):
    text = edited(
        "  unet: models/m.safetensors", "  unet: models/m.safetensors\n  fpn: models/m.safetensors"
    )
    with pytest.raises(
        CatalogError, match=r"scenes\[1\].model: required; choose one of: unet, fpn"
    ):
        load_catalog(write(folder, text))


def test_yaml_is_loaded_safely(folder, tmp_path):
    marker = tmp_path / "pwned"
    text = f"models: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(CatalogError, match=r"models: YAML tag !!python/object/apply:os.system"):
        load_catalog(write(folder, text))
    assert not marker.exists()


def test_missing_catalog_file(tmp_path):
    with pytest.raises(CatalogError, match=r"nope\.yaml: catalog file not found"):
        load_catalog(tmp_path / "nope.yaml")


def test_globs_expand_when_discovered(folder):
    catalog = load_catalog(write(folder, VALID))
    tiles, one = catalog.scenes
    assert discover_files(tiles) == []
    (folder / "scenes").mkdir()
    for name in ("b.tif", "a.tif", "a.txt"):
        (folder / "scenes" / name).write_bytes(b"")
    found = discover_files(tiles)
    assert [Path(f).name for f in found] == ["a.tif", "b.tif"]
    assert scene_id(tiles, found[0]) == "tiles/a"
    assert discover_files(one) == [str(folder / "one.tif")]  # listed even while missing
    assert scene_id(one, str(folder / "one.tif")) == "one"


def test_urls_are_kept_as_given(folder):
    text = edited("path: one.tif", "path: /vsicurl/https://example.com/one.tif")
    one = load_catalog(write(folder, text)).scenes[1]
    assert one.path == "/vsicurl/https://example.com/one.tif" and not one.is_glob


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    return create_test_model(path, "unet", "resnet18", 3, ["background", "a", "b"], tile_size=64)


def real_catalog(tmp_path: Path, model_file: Path) -> Path:
    (tmp_path / "models").mkdir(exist_ok=True)
    shutil.copy(model_file, tmp_path / "models" / "m.safetensors")
    (tmp_path / "scenes").mkdir(exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
    for name in ("scenes/x.tif", "one.tif"):
        write_test_scene(tmp_path / name, pixels)
    return write(tmp_path, VALID.replace("execution: {workers: 2}", ""))


def test_validate_reads_contracts_and_lists_files(tmp_path, model_file):
    report = validate_catalog(real_catalog(tmp_path, model_file))
    assert report.contracts["unet"].classes == ("background", "a", "b")
    assert [Path(f).name for f in report.files["tiles"]] == ["x.tif"]
    assert [Path(f).name for f in report.files["one"]] == ["one.tif"]


def test_validate_names_a_missing_scene_file(tmp_path, model_file):
    path = real_catalog(tmp_path, model_file)
    (tmp_path / "one.tif").unlink()
    with pytest.raises(
        CatalogError, match=r"^cat.yaml: scenes\[1\].path: file not found: .*one.tif$"
    ):
        validate_catalog(path)


def test_validate_refuses_a_model_that_is_not_one(folder):
    with pytest.raises(CatalogError, match=r"^cat.yaml: models.unet: .*not a geoseg model file"):
        validate_catalog(write(folder, VALID))


def test_cli_validate_prints_scenes_and_models(tmp_path, model_file, capsys):
    assert run_app(["catalog", "validate", str(real_catalog(tmp_path, model_file))]) == 0
    err = capsys.readouterr().out  # results go to stdout
    for text in (
        "models",
        "unet/resnet18",
        "3 x uint8",
        "background",
        "x.tif",
        "ok: 1 model(s), 2 scene(s)",
    ):
        assert text in err
    assert "30 3 * * 1-5 (Europe/Berlin)" in err


def test_cli_validate_reports_scenes_that_do_not_fit_the_model(tmp_path, model_file, capsys):
    path = real_catalog(tmp_path, model_file)
    write_test_scene(tmp_path / "scenes" / "two.tif", np.zeros((2, 32, 32), np.uint8))
    assert run_app(["catalog", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "tiles/two:" in err and "2 band(s) but the model expects 3" in err
    assert "1 of 3 scene(s) cannot be processed" in err


def test_cli_validate_error_is_one_line(folder, capsys):
    assert run_app(["catalog", "validate", str(write(folder, edited("tile: 64", "tile: x")))]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["error: cat.yaml: defaults.tile: expected an integer, got str 'x'"]


def test_shipped_catalog_is_valid(tmp_path, model_file):
    """data_catalog.yaml works once the demo has written its model and scenes."""
    shutil.copy(REPO / "data_catalog.yaml", tmp_path)
    (tmp_path / "geoseg_demo" / "scenes").mkdir(parents=True)
    shutil.copy(model_file, tmp_path / "geoseg_demo" / "model.safetensors")
    pixels = np.zeros((3, 32, 32), np.uint8)
    for name in ("scene_00.tif", "scene_00_classes.tif", "scene_01.tif"):
        write_test_scene(tmp_path / "geoseg_demo" / "scenes" / name, pixels)
    report = validate_catalog(tmp_path / "data_catalog.yaml")
    assert [Path(f).name for f in report.files["demo"]] == ["scene_00.tif", "scene_01.tif"]
    assert report.catalog.outputs.path == str(tmp_path / "geoseg_demo" / "catalog_out")
    assert report.catalog.schedule is not None


def test_cli_validate_json_and_the_catalog_schema(tmp_path, model_file, capsys):
    import json

    import jsonschema

    catalog = real_catalog(tmp_path, model_file)
    assert run_app(["catalog", "validate", str(catalog), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["problems"] == {}
    assert list(doc["models"]) == ["unet"] and doc["models"]["unet"]["bands"] == 3
    assert run_app(["catalog", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    import yaml

    valid = yaml.safe_load(textwrap.dedent(VALID))
    jsonschema.validate(valid, schema)  # the shipped shape validates against the schema
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**valid, "defaults": {"tiel": 64}}, schema)  # unknown key
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**valid, "defaults": {"batch_size": "8"}}, schema)  # wrong type


def test_shipped_catalog_validates_against_the_schema():
    import jsonschema
    import yaml

    from geoseg.batch.catalog import catalog_schema

    shipped = yaml.safe_load((REPO / "data_catalog.yaml").read_text())
    jsonschema.validate(shipped, catalog_schema())
