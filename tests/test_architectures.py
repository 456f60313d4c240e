"""The classic architectures and CRF refinement through the normal pipeline.

Every architecture is in ``geoseg model-create --help``, trains with ``train_model`` and predicts
with ``predict_scene``; the class raster is byte-identical for two block sizes. The CRF keeps that
guarantee (blocks blend a halo of ``CrfParams.reach`` pixels) and changes boundaries.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import rasterio

from geoseg.cli import run_app
from geoseg.engine.scene import predict_scene
from geoseg.models.classic import CLASSIC_ARCHITECTURES
from geoseg.models.registry import architectures
from geoseg.options import (
    CrfParams,
    InferenceOptions,
    OutputOptions,
    PredictOptions,
    TilingOptions,
    TrainOptions,
)
from geoseg.synthetic.scenes import write_scenes
from geoseg.training.train import train_model


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two small synthetic aerial scenes: one to train on, one to predict."""
    return write_scenes(tmp_path_factory.mktemp("arch_scenes"), scenes=2, size=160, seed=4)


def read_classes(path):
    with rasterio.open(path) as ds:
        return ds.read(1)


def predict_twice(scene, model, folder, **inference):
    """Class rasters (bytes) for two block sizes, and the classes of the first."""
    outputs = []
    for block_size in (48, 1000):
        options = PredictOptions(
            tiling=TilingOptions(overlap=16, block_size=block_size),
            inference=InferenceOptions(device="cpu", **inference),
            output=OutputOptions(vector_formats=()),
        )
        result = predict_scene(scene, model, folder / f"b{block_size}", options)
        outputs.append(result.segment.classes_path.read_bytes())
    return outputs, read_classes(folder / "b48" / f"{scene.stem}_classes.tif")


def test_every_architecture_is_listed_in_model_create_help(capsys):
    assert run_app(["model-create", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    listed = set(re.findall(r"[a-z][a-z0-9]+", text.split("Architecture.")[1].split("--")[0]))
    assert set(architectures()) <= listed, sorted(set(architectures()) - listed)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(CLASSIC_ARCHITECTURES))
def test_classic_architecture_trains_and_predicts_block_size_invariant(tmp_path, scenes, arch):
    model = tmp_path / f"{arch}.safetensors"
    recipe = TrainOptions(
        arch=arch, tile=64, epochs=1, steps_per_epoch=3, batch_size=2, val_fraction=0.0,
        device="cpu",
    )  # fmt: skip
    result = train_model([scenes[0].image], [scenes[0].labels], model, recipe)
    assert result.contract.arch == arch and np.isfinite(result.history[-1].loss)
    (small, large), classes = predict_twice(scenes[1].image, model, tmp_path)
    assert small == large  # byte-identical class COG for two block sizes
    assert set(np.unique(classes)) <= {*range(len(result.contract.classes)), 255}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, scenes):
    """A quickly trained U-Net whose probabilities are soft enough for the CRF to matter."""
    model = tmp_path_factory.mktemp("crf_model") / "unet.safetensors"
    recipe = TrainOptions(tile=64, epochs=2, steps_per_epoch=8, batch_size=4, device="cpu")
    train_model([scenes[0].image], [scenes[0].labels], model, recipe)
    return model


def test_crf_output_is_byte_identical_for_any_block_size(tmp_path, scenes, trained):
    params = CrfParams(iterations=3, window=5)
    (small, large), _ = predict_twice(
        scenes[1].image, trained, tmp_path, crf=True, crf_params=params
    )
    assert small == large


def test_crf_changes_boundaries_but_not_most_pixels(tmp_path, scenes, trained):
    _, plain = predict_twice(scenes[1].image, trained, tmp_path / "plain")
    _, refined = predict_twice(scenes[1].image, trained, tmp_path / "crf", crf=True)
    valid = plain != 255
    assert np.array_equal(plain == 255, refined == 255)  # nodata untouched
    changed = np.mean(plain[valid] != refined[valid])
    assert 0.001 < changed < 0.3, changed


def test_predict_crf_flags_reach_the_engine(tmp_path, scenes, trained, capsys):
    args = ["predict", str(scenes[1].image), "-m", str(trained), "-o", str(tmp_path), "--device",
            "cpu", "--vector-format", "none", "--crf-iterations", "2", "--crf-window", "4"]  # fmt: skip
    assert run_app(args) == 2  # an even window is refused with the flag's name
    assert "--crf-window" in capsys.readouterr().err
    assert run_app([*args[:-1], "5"]) == 0


def test_tune_crf_stores_the_best_setting_in_the_contract(tmp_path, scenes):
    from geoseg.engine.scene import model_job
    from geoseg.models.modelfile import read_contract
    from geoseg.training.tune_crf import CANDIDATES

    model = tmp_path / "tuned.safetensors"
    recipe = TrainOptions(
        tile=64, epochs=1, steps_per_epoch=4, batch_size=4, device="cpu", val_fraction=0.3,
        tune_crf=True,
    )  # fmt: skip
    train_model([scenes[0].image], [scenes[0].labels], model, recipe)
    contract = read_contract(model)
    assert contract.crf is None or contract.crf in CANDIDATES
    job = model_job(str(scenes[1].image), model, contract, PredictOptions(
        inference=InferenceOptions(device="cpu", crf=True)))  # fmt: skip
    assert job.crf == (contract.crf or CrfParams())


def test_tuning_picks_the_highest_scoring_setting(monkeypatch):
    from geoseg.training import tune_crf

    fake = {None: (0.5, 0.1), CANDIDATES_PICK: (0.7, 0.2)}

    def score(chips, probabilities, params, num_classes):
        miou, bf = fake.get(params, (0.6, 0.9))
        return tune_crf.CrfScore(params=params, miou=miou, boundary_f1=bf)

    monkeypatch.setattr(tune_crf, "score", score)
    monkeypatch.setattr(tune_crf, "validation_chips", lambda data, norm: [])
    best, scores = tune_crf.tune_crf(lambda x: x, None, None, 3)  # type: ignore[arg-type]
    assert best == CANDIDATES_PICK and len(scores) == len(tune_crf.CANDIDATES) + 1


CANDIDATES_PICK = CrfParams(iterations=5, smoothness_weight=3.0, appearance_weight=5.0)
