"""Broken catalogs and broken model files, through the CLI as a user runs it.

Every case ends with exit code 2 and one ``error:`` line that names the file (and, in a catalog,
the YAML path), the problem and the fix, without a traceback. Nothing in a file is executed: the
payloads would create a marker file, and the tests check that it does not exist.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from geoseg.cli import run_app
from geoseg.testing import create_test_model, write_test_scene

REPO = Path(__file__).resolve().parents[2]
MARKER = "geoseg_pwned"


def one_line_error(capsys, *fragments: str) -> str:
    """The single stderr line, checked to start with ``error:`` and contain ``fragments``."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "segmenting" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


class Payload:
    """Unpickling this runs a shell command that creates ``path`` (what an attacker would do)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


# --- catalogs ----------------------------------------------------------------------------------

CATALOG = """\
models:
  m: m.safetensors
scenes:
  - {id: a, path: a.tif}
  - {id: b, path: a.tif}
  - {id: c, path: a.tif}
  - {id: d, path: a.tif}
outputs: {path: out}
defaults: {batch_size: 2}
schedule: {cron: "0 2 * * *"}
"""


@pytest.fixture(scope="module")
def catalog_folder(tmp_path_factory) -> Path:

    folder = tmp_path_factory.mktemp("catalog")
    write_test_scene(folder / "a.tif", np.zeros((3, 32, 32), np.uint8))
    create_test_model(folder / "m.safetensors", "unet", "resnet18", 3, ["bg", "x"], tile_size=32)
    return folder


def catalog(folder: Path, old: str, new: str) -> Path:
    assert old in CATALOG, old
    path = folder / "cat.yaml"
    path.write_text(CATALOG.replace(old, new))
    return path


CATALOG_CASES = [
    # (old, new, fragments of the error line)
    ("defaults: {batch_size: 2}", "defaults: {batch_size: 2, tiel: 64}",
     ["defaults.tiel: unknown key", "valid keys: tile, overlap"]),
    ("scenes:", "sceens: []\nscenes:", ["sceens: unknown key", "valid keys:"]),
    ("defaults: {batch_size: 2}", "defaults: {batch_size: four}",
     ["defaults.batch_size: expected an integer, got str 'four'"]),
    ("{id: b, path: a.tif}", "{id: b, path: a.tif, bands: 1-3}",
     ["scenes[1].bands: expected a list, got str '1-3'"]),
    ("{id: c, path: a.tif}", "{id: c, path: 12}", ["scenes[2].path: expected text", "(quote it)"]),
    ("{id: d, path: a.tif}", "{id: d, path: missing.tif}",
     ["scenes[3].path: file not found:", "missing.tif"]),
    ("m: m.safetensors", "m: nope.safetensors", ["models.m: file not found:", "nope.safetensors"]),
    ("{id: c, path: a.tif}", "{id: a, path: a.tif}",
     ["scenes[2].id: duplicate id 'a' (also scenes[0])"]),
    ("{id: d, path: a.tif}", "{id: d, path: a.tif, path: missing.tif}",
     ["scenes[3].path: duplicate key", "keep one"]),
    ("defaults: {batch_size: 2}", "defaults: {batch_size: 2}\ndefaults: {batch_size: 8}",
     ["defaults: duplicate key (lines 9 and 10); keep one"]),
    ("{id: a, path: a.tif}", "{id: a, path: !!python/object/apply:os.system ['touch PWN']}",
     ["scenes[0].path: YAML tag !!python/object/apply:os.system", "not allowed", "remove the tag"]),
    ("outputs: {path: out}", "outputs: !!python/object/new:os.system [touch PWN]",
     ["outputs: YAML tag !!python/object/new:os.system", "remove the tag"]),
    ("{id: b, path: a.tif}", "{id: b, path: !!python/name:os.system ''}",
     ["scenes[1].path: YAML tag !!python/name:os.system"]),
    ("defaults: {batch_size: 2}", "defaults: {batch_size: 2",
     ["line 10", "YAML syntax error"]),
    ('cron: "0 2 * * *"', 'cron: "0 2 * *"', ["schedule.cron:", "give 5 fields"]),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "fragments"), CATALOG_CASES)
def test_catalog_mistakes_are_one_line_with_the_yaml_path(
    catalog_folder, capsys, monkeypatch, old, new, fragments
):
    monkeypatch.chdir(catalog_folder)  # a tag that ran would create ./PWN
    path = catalog(catalog_folder, old, new)
    assert run_app(["catalog", "validate", str(path)]) == 2
    one_line_error(capsys, "error: cat.yaml: ", *fragments)
    assert not (catalog_folder / "PWN").exists()


def test_run_catalog_stops_before_any_scene_on_a_duplicate_key(catalog_folder, capsys):
    path = catalog(catalog_folder, "{id: a, path: a.tif}", "{id: a, path: a.tif, model: m, id: z}")
    assert run_app(["run-catalog", str(path)]) == 2
    one_line_error(capsys, "cat.yaml: scenes[0].id: duplicate key")
    assert not (catalog_folder / "out").exists()


def test_flows_serve_with_a_typo_is_one_line_exit_2(catalog_folder):
    pytest.importorskip("prefect")
    path = catalog(catalog_folder, "defaults: {batch_size: 2}", "defaults: {batch_sise: 2}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DO_NOT_TRACK": "1"}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "flows.serve", str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: cat.yaml: defaults.batch_sise: unknown key; valid keys: tile, overlap, "
        "batch_size, block_size, memory_mb, device, tta, crf"
    ]


# --- model files -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A valid model, and broken ones made from it."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("models")
    good = create_test_model(
        folder / "good.safetensors", "unet", "resnet18", 3, ["bg", "x"], tile_size=32
    )
    data = good.read_bytes()
    files = {"good": good}

    def add(name: str, content: bytes) -> None:
        files[name] = folder / name
        files[name].write_bytes(content)

    add("corrupt.safetensors", os.urandom(4096))
    add("truncated.safetensors", data[: len(data) // 2])
    add("empty.safetensors", b"")
    scene = Path(write_test_scene(folder / "scene.tif", np.zeros((3, 32, 32), "uint8")))
    add("geotiff.safetensors", scene.read_bytes())
    add("pickle.safetensors", pickle.dumps({"w": Payload(folder / MARKER)}))
    add("payload.pt", _torch_payload(folder / MARKER))
    add("payload_renamed.safetensors", files["payload.pt"].read_bytes())

    tensors = load_file(good)
    contract = json.loads(read_meta(good)["geoseg_contract"])
    for name, text in {
        "not_json": "{arch: unet",
        "a_list": json.dumps(["unet", "resnet18"]),
        "no_classes": json.dumps({k: v for k, v in contract.items() if k != "classes"}),
        "extra_field": json.dumps({**contract, "clases": ["a"]}),
        "bad_colours": json.dumps({**contract, "colors": [[0, 0, 0]]}),
        "bad_bands": json.dumps({**contract, "bands": "three"}),
        "five_classes": json.dumps({**contract, "classes": list("abcde"), "colors": []}),
    }.items():
        files[name] = folder / f"{name}.safetensors"
        save_file(
            tensors, files[name], metadata={"format": "geoseg-model", "geoseg_contract": text}
        )
    files["foreign"] = folder / "foreign.safetensors"  # safetensors, but no geoseg contract
    save_file(tensors, files["foreign"])
    return files


def read_meta(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata())


def _torch_payload(marker: Path) -> bytes:
    """A torch.save file whose unpickling would run ``touch marker``."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save({"encoder.weight": Payload(marker)}, buffer)
    return buffer.getvalue()


MODEL_INFO_CASES = [
    ("corrupt.safetensors", ["not a geoseg model file (safetensors)", "model-create"]),
    ("truncated.safetensors", ["not a geoseg model file (safetensors)"]),
    ("empty.safetensors", ["not a geoseg model file (safetensors)"]),
    ("geotiff.safetensors", ["not a geoseg model file (safetensors)"]),
    ("pickle.safetensors", ["not a geoseg model file (safetensors)"]),
    ("payload_renamed.safetensors", ["not a geoseg model file (safetensors)"]),
    ("foreign", ["a safetensors file without a geoseg contract", "model-create"]),
    ("not_json", ["the model contract is malformed: not valid JSON", "recreate the file"]),
    ("a_list", ["the model contract is malformed: expected a JSON object, got list"]),
    ("no_classes", ["malformed: missing field(s) ['classes']", "valid fields: arch"]),
    ("extra_field", ["malformed: unknown field(s) ['clases']"]),
    ("bad_colours", ["the model contract is inconsistent: 2 classes but 1 colours"]),
    ("bad_bands", ["the model contract is malformed: bands should be a JSON integer, got 'three'"]),
]


@pytest.mark.parametrize(("name", "fragments"), MODEL_INFO_CASES)
def test_broken_model_files_are_one_line(models, capsys, name, fragments):
    path = models[name]
    assert run_app(["model-info", str(path)]) == 2
    one_line_error(capsys, f"error: {path}: ", *fragments)
    assert not (path.parent / MARKER).exists()


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("payload.pt", ["refused to load: not a plain tensor state dict", "torch.save"]),
        ("pickle.safetensors", ["not a readable safetensors file", "torch.save"]),
        ("payload_renamed.safetensors", ["not a readable safetensors file"]),
        ("truncated.safetensors", ["not a readable safetensors file", "truncated"]),
        ("corrupt.safetensors", ["not a readable safetensors file"]),
    ],
)
def test_bad_weights_for_model_create_are_refused_without_running_code(
    models, tmp_path, capsys, name, fragments
):
    path = models[name]
    args = ["model-create", "--classes", "bg,x", "--weights", str(path)]
    assert run_app([*args, "--out", str(tmp_path / "m.safetensors")]) == 2
    one_line_error(capsys, f"error: {path}: ", *fragments)
    assert not (path.parent / MARKER).exists()
    assert not list(tmp_path.iterdir())  # nothing written


def test_predict_with_a_model_whose_weights_do_not_fit_its_contract(models, tmp_path, capsys):
    scene = write_test_scene(tmp_path / "s.tif", np.zeros((3, 64, 64), "uint8"))
    path = models["five_classes"]
    args = ["predict", str(scene), "-m", str(path), "-o", str(tmp_path / "out"), "--device", "cpu"]
    assert run_app(args) == 2
    one_line_error(capsys, f"error: {path}: the weights do not fit the contract's network",
                   "size mismatch", "recreate it with 'geoseg model-create'")  # fmt: skip
    assert not list((tmp_path / "out").glob("*"))


def test_predict_with_a_truncated_model_is_one_line(models, tmp_path, capsys):
    scene = write_test_scene(tmp_path / "s.tif", np.zeros((3, 64, 64), "uint8"))
    path = models["truncated.safetensors"]
    assert run_app(["predict", str(scene), "-m", str(path), "-o", str(tmp_path / "out")]) == 2
    one_line_error(capsys, f"error: {path}: not a geoseg model file")


def test_model_files_in_a_catalog_are_checked_by_validate(models, tmp_path, capsys):
    text = f"""\
        models: {{m: {models["not_json"]}}}
        scenes: [{{id: a, path: "*.tif"}}]
        outputs: {{path: out}}
        """
    path = tmp_path / "cat.yaml"
    path.write_text(textwrap.dedent(text))
    assert run_app(["catalog", "validate", str(path)]) == 2
    one_line_error(capsys, "error: cat.yaml: models.m: ", str(models["not_json"]), "not valid JSON")
