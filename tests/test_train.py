"""Training on tiny generated scenes: learning, sparse labels, uint16, normalisation, resume."""

from __future__ import annotations

import json
import re

import geopandas as gpd
import numpy as np
import pytest
from rasterio.features import rasterize
from shapely import affinity
from shapely.geometry import Point, box

from geoseg.engine.scene import predict_scene
from geoseg.errors import InvalidInputError, OutputExistsError, UnknownChoiceError
from geoseg.geo.window import Window
from geoseg.io.labels import IGNORE
from geoseg.io.raster import write_raster
from geoseg.models.contract import ModelContract
from geoseg.models.modelfile import read_contract
from geoseg.options import (
    LOSSES,
    InferenceOptions,
    LabelOptions,
    OutputOptions,
    PredictOptions,
    TilingOptions,
    TrainOptions,
)
from geoseg.testing import UTM_CRS, utm_transform
from geoseg.training.evaluate import evaluate
from geoseg.training.losses import build_loss, learning_rate
from geoseg.training.sampling import ChipSampler, ImageArea, Survey, split_areas
from geoseg.training.train import (
    TrainProgress,
    checkpoint_path,
    load_checkpoint,
    make_trainer,
    read_checkpoint_meta,
    train_model,
)

CLASSES = ("background", "building", "water")
COLORS = np.array([[90, 120, 80], [200, 70, 60], [40, 70, 170]], np.float32)  # per class, RGB
FAST = {"tile": 64, "batch_size": 4, "encoder": "resnet18", "device": "cpu"}


def easy_scene(tmp_path, name="scene", size=192, seed=0, value_range=(0, 255), dtype="uint8"):
    """Boxes (building) and discs (water) on grass, colour + noise; labels in a GeoPackage.

    Returns the image path, labels path, truth raster path and the class array.
    """
    rng = np.random.default_rng(seed)
    shapes = []
    for i in range(14):
        c, r = rng.uniform(12, size - 12, 2), rng.uniform(5, 13)
        shapes.append(
            (box(*(c - r), *(c + r)), "building") if i % 2 else (Point(c).buffer(r), "water")
        )
    t = utm_transform(0.5)
    geoms = [affinity.affine_transform(g, [t.a, t.b, t.d, t.e, t.c, t.f]) for g, _ in shapes]
    frame = gpd.GeoDataFrame({"class_name": [n for _, n in shapes]}, geometry=geoms, crs=UTM_CRS)
    ids = [(g, CLASSES.index(n)) for g, n in zip(geoms, frame.class_name, strict=True)]
    classes = rasterize(ids, out_shape=(size, size), transform=t, dtype="uint8")
    image = COLORS[classes].transpose(2, 0, 1) + rng.normal(0, 12, (3, size, size))
    lo, hi = value_range
    image = np.clip(lo + image / 255 * (hi - lo), lo, hi).astype(dtype)
    paths = [tmp_path / f"{name}{suffix}" for suffix in (".tif", ".gpkg", "_truth.tif")]
    write_raster(paths[0], image, UTM_CRS, t)
    frame.to_file(paths[1])
    tags = {"CLASS_NAMES": json.dumps(list(CLASSES))}
    write_raster(paths[2], classes, UTM_CRS, t, nodata=255, tags=tags)
    return (*map(str, paths), classes)


def test_training_lowers_the_loss_and_raises_miou(tmp_path):
    image, labels, _, _ = easy_scene(tmp_path)
    options = TrainOptions(epochs=4, steps_per_epoch=12, val_fraction=0.25, lr=3e-3, **FAST)
    result = train_model([image], labels, tmp_path / "m.safetensors", options)
    first, last = result.history[0], result.history[-1]
    assert last.loss < 0.7 * first.loss
    assert result.best_miou is not None and result.best_miou > max(first.miou or 0, 0.6)
    assert set(result.best.iou) == set(CLASSES) and result.model_path.exists()
    assert read_contract(result.model_path).classes == CLASSES


@pytest.fixture(scope="module")
def uint16_model(tmp_path_factory):
    """A model trained on a uint16 scene with values in [1000, 3000]; a second scene validates."""
    tmp = tmp_path_factory.mktemp("uint16")
    kw = {"value_range": (1000, 3000), "dtype": "uint16"}
    train = easy_scene(tmp, "train", seed=1, **kw)
    val = easy_scene(tmp, "val", size=128, seed=2, **kw)
    options = TrainOptions(epochs=5, steps_per_epoch=15, val_fraction=0.5, lr=3e-3, **FAST)
    result = train_model([train[0], val[0]], [train[1], val[1]], tmp / "m.safetensors", options)
    return tmp, train, val, result


def predict(image, model, out_dir, overlap=16):
    """Run ``predict_scene`` (no polygons) and return the class raster's path."""
    options = PredictOptions(
        tiling=TilingOptions(overlap=overlap), inference=InferenceOptions(device="cpu"),
        output=OutputOptions(vector_formats=()),
    )  # fmt: skip
    result = predict_scene(image, model, out_dir, options)
    return result.segment.classes_path


def test_uint16_trains_and_predicts_through_predict_scene(uint16_model):
    tmp, (image, _, truth, _), _, result = uint16_model
    contract = read_contract(result.model_path)
    assert contract.dtype == "uint16" and contract.tile_size == 64 and contract.gsd == 0.5
    assert evaluate(predict(image, result.model_path, tmp / "pred"), truth).miou > 0.7


def test_predict_uses_the_stored_normalization(uint16_model):
    import rasterio

    tmp, (train_image, *_), (image, _, truth, _), result = uint16_model
    norm = read_contract(result.model_path).normalization
    with rasterio.open(train_image) as ds:
        pixels = ds.read().reshape(3, -1)
    np.testing.assert_allclose(norm.low, np.percentile(pixels, 1, axis=1))  # every pixel sampled
    np.testing.assert_allclose(norm.high, np.percentile(pixels, 99, axis=1))
    assert all(1000 <= low < high <= 3000 for low, high in zip(norm.low, norm.high, strict=True))
    # Predicting the held-out scene on the validation's tiles (no overlap) reproduces its score.
    same = evaluate(predict(image, result.model_path, tmp / "same", overlap=0), truth)
    assert same.miou == pytest.approx(result.best_miou, abs=1e-3)
    # The same scene stored with another scaling is normalised with the stored figures, not its own.
    with rasterio.open(image) as ds:
        write_raster(tmp / "rescaled.tif", ds.read() // 3, ds.crs, ds.transform)
    other = evaluate(predict(tmp / "rescaled.tif", result.model_path, tmp / "other", 0), truth)
    assert other.miou < same.miou - 0.3


def test_sparse_labels_with_ignore_do_not_teach_background(tmp_path):
    """Left half water, right half building; only small boxes are labeled, never background."""
    size, t = 128, utm_transform(0.5)
    rng = np.random.default_rng(5)
    classes = np.where(np.arange(size)[None, :] < size // 2, 2, 1).repeat(size, 0).astype(np.uint8)
    image = COLORS[classes].transpose(2, 0, 1) + rng.normal(0, 12, (3, size, size))
    write_raster(tmp_path / "s.tif", np.clip(image, 0, 255).astype(np.uint8), UTM_CRS, t)
    boxes = [box(10, 10, 30, 30), box(20, 80, 40, 100), box(90, 20, 110, 40), box(80, 90, 100, 110)]
    geoms = [affinity.affine_transform(g, [t.a, t.b, t.d, t.e, t.c, t.f]) for g in boxes]
    gpd.GeoDataFrame({"class_name": ["water", "water", "building", "building"]}, geometry=geoms,
                     crs=UTM_CRS).to_file(tmp_path / "sparse.gpkg")  # fmt: skip
    options = TrainOptions(val_fraction=0, epochs=2, steps_per_epoch=10, lr=3e-3, **FAST)
    result = train_model([tmp_path / "s.tif"], tmp_path / "sparse.gpkg", tmp_path / "m.safetensors",
                         options, label_options=LabelOptions(unlabeled="ignore"))  # fmt: skip
    assert result.contract.classes == CLASSES
    import rasterio

    with rasterio.open(predict(tmp_path / "s.tif", result.model_path, tmp_path / "pred")) as ds:
        predicted = ds.read(1)
    assert (predicted == 0).mean() < 0.05  # background was never labeled, so never learned
    assert (predicted == classes).mean() > 0.9


def test_one_class_trains_a_binary_model_from_a_class_raster(tmp_path):
    image, _, _, classes = easy_scene(tmp_path, size=96)
    binary = np.where(classes == 2, 1, 0).astype(np.uint8)
    write_raster(tmp_path / "water.tif", binary, UTM_CRS, utm_transform(0.5), nodata=255,
                 tags={"CLASS_NAMES": json.dumps(["background", "water"])})  # fmt: skip
    options = TrainOptions(epochs=1, steps_per_epoch=2, val_fraction=0.3, **FAST)
    result = train_model([image], tmp_path / "water.tif", tmp_path / "m.safetensors", options)
    contract = read_contract(result.model_path)
    assert contract.mode == "binary" and contract.classes == ("background", "water")
    assert contract.num_outputs == 1 and result.best_miou is not None
    report = evaluate(predict(image, result.model_path, tmp_path / "pred"), tmp_path / "water.tif")
    assert report.classes == ["background", "water"] and report.pixels == 96 * 96


@pytest.mark.parametrize("mode", ["multiclass", "binary"])
@pytest.mark.parametrize("name", [*LOSSES, "ce+dice"])
def test_losses_ignore_unlabeled_pixels(name, mode):
    import torch

    gen = torch.Generator().manual_seed(0)
    k = 3 if mode == "multiclass" else 1
    logits = torch.randn(2, k, 16, 16, generator=gen)
    target = torch.randint(0, 3 if mode == "multiclass" else 2, (2, 16, 16), generator=gen)
    target[:, :, 8:] = IGNORE
    loss = build_loss(name, mode, np.ones(3 if mode == "multiclass" else 2))
    changed = logits.clone()
    changed[:, :, :, 8:] = torch.randn(2, k, 16, 8, generator=gen) * 10
    assert torch.isfinite(loss(logits, target))
    torch.testing.assert_close(loss(changed, target), loss(logits, target))


def test_sampler_keeps_chips_out_of_validation_and_favours_rare_classes():
    split = split_areas([(512, 512)], 0.25, 64)
    assert split.val[0].window == Window(384, 0, 128, 512)
    counts = np.zeros((2, 16, 16), np.int64)
    counts[0] = 1024
    counts[1, 3, 5] = 100  # a rare class: 0.04 % of the pixels, in one cell
    counts[0, 3, 5] = 924
    sampler = ChipSampler([Survey(counts, np.empty((3, 0)))], split.train, 64)
    chips = sampler.sample(2000, np.random.default_rng(0))
    assert all(c.window.row_stop <= 384 and c.window.col_stop <= 512 for c in chips)
    covers = [c.window.intersection(Window(96, 160, 32, 32)) is not None for c in chips]
    assert np.mean(covers) > 0.25  # about half the draws aim at the rare class


def test_split_holds_out_whole_images_when_there_are_several():
    split = split_areas([(100, 100)] * 5, 0.2, 64)
    assert [a.image for a in split.val] == [4] and len(split.train) == 4
    assert split_areas([(100, 100)] * 2, 0.2, 64).val == [
        ImageArea(0, Window(80, 0, 20, 100)), ImageArea(1, Window(80, 0, 20, 100)),
    ]  # fmt: skip
    with pytest.raises(InvalidInputError, match="smaller than the tile"):
        split_areas([(100, 100)], 0.5, 64)


def checkpoint_tensors(out):
    from safetensors.torch import load_file

    return load_file(str(checkpoint_path(out)))


def assert_restores_the_checkpoint(out):
    """A fresh trainer loading the checkpoint holds exactly its weights and optimizer state."""
    import torch

    saved = checkpoint_tensors(out)
    contract = ModelContract.from_json(read_checkpoint_meta(checkpoint_path(out))["contract"])
    trainer = make_trainer(contract, "ce", np.ones(len(CLASSES)), 1e-3, "cpu")
    state = load_checkpoint(checkpoint_path(out), trainer)
    assert state.epoch == 1 and state.step == 3
    weights = trainer.net.state_dict()
    assert weights and all(torch.equal(v, saved[f"model.{k}"]) for k, v in weights.items())
    optim = trainer.optimizer.state_dict()["state"]
    restored = {f"optim.{i}.{name}": t for i, values in optim.items() for name, t in values.items()}
    assert restored.keys() == {k for k in saved if k.startswith("optim.")} != set()
    assert all(torch.equal(t.cpu(), saved[k]) for k, t in restored.items())


class SimulatedKillError(Exception):
    pass


def interrupt(progress: TrainProgress) -> None:
    """A progress callback that stops the run once the first epoch is validated and saved."""
    if progress.phase == "validated":
        raise SimulatedKillError


def test_resume_continues_after_the_last_epoch(tmp_path):
    import torch

    image, labels, _, _ = easy_scene(tmp_path, size=128)
    out, whole = tmp_path / "m.safetensors", tmp_path / "whole.safetensors"
    kw = {"val_fraction": 0.25, "steps_per_epoch": 3, **FAST}
    with pytest.raises(SimulatedKillError):  # killed after the first of two epochs
        train_model([image], labels, out, TrainOptions(epochs=2, **kw), progress=interrupt)
    assert checkpoint_path(out).exists() and not out.exists()  # not finished: no final name
    assert_restores_the_checkpoint(out)
    with pytest.raises(InvalidInputError, match="made for 2 epochs, not 3; set epochs to 2"):
        train_model([image], labels, out, TrainOptions(epochs=3, **kw), resume=True)
    resumed = train_model([image], labels, out, TrainOptions(epochs=2, **kw), resume=True)
    assert out.exists()
    with pytest.raises(OutputExistsError):
        train_model([image], labels, out, TrainOptions(epochs=2, **kw))
    uninterrupted = train_model([image], labels, whole, TrainOptions(epochs=2, **kw))
    assert [r.epoch for r in resumed.history] == [1, 2]
    assert [r.loss for r in resumed.history] == pytest.approx(
        [r.loss for r in uninterrupted.history], rel=1e-5
    )
    after, expected = checkpoint_tensors(out), checkpoint_tensors(whole)
    assert after.keys() == expected.keys()
    for key, value in expected.items():  # the continued run is the uninterrupted run
        torch.testing.assert_close(after[key], value, rtol=1e-4, atol=1e-6, msg=key)
    with pytest.raises(InvalidInputError, match="differs from this run in tile_size"):
        train_model([image], labels, out, TrainOptions(epochs=3, **{**kw, "tile": 96}), resume=True)


def test_bad_inputs_say_what_to_do(tmp_path):
    image, labels, _, _ = easy_scene(tmp_path, size=96)
    with pytest.raises(
        UnknownChoiceError, match="unknown loss 'dice2'; choose one of: ce, ce\\+dice, dice"
    ):
        train_model([image], labels, tmp_path / "m.safetensors", TrainOptions(loss="ce+dice2"))
    with pytest.raises(InvalidInputError, match="no field 'kind'; available fields: class_name"):
        train_model([image], labels, tmp_path / "m.safetensors",
                    label_options=LabelOptions(class_field="kind"))  # fmt: skip


def test_learning_rate_warms_up_then_decays():
    rates = [learning_rate(s, 100, 1e-3) for s in range(100)]
    assert rates[0] < rates[4] == pytest.approx(1e-3) and rates[-1] < 2e-5


def test_cli_trains_with_a_progress_bar_and_summary(tmp_path, capsys):
    import geoseg.cli.train  # noqa: F401  (registers the command)
    from geoseg.cli._app import run_app

    image, labels, _, _ = easy_scene(tmp_path, size=96)
    out = str(tmp_path / "m.safetensors")
    args = ["train", image, "--labels", labels, "--out", out, "--tile", "64", "--epochs", "1",
            "--steps-per-epoch", "2", "--batch-size", "2", "--device", "cpu",
            "--val-fraction", "0.3"]  # fmt: skip
    assert run_app(args) == 0
    captured = capsys.readouterr()
    out_text, err = captured.out, captured.err  # the summary is a result (stdout); progress: stderr
    assert "best mIoU" in out_text and "water" in out_text and read_contract(out).tile_size == 64
    assert re.search(r"epoch 1/1  loss [0-9.]+  mIoU [0-9.]+  background [0-9.]+  building", err)
    assert run_app([*args, "--overwrite", "--loss", "hinge"]) == 2
    assert "unknown loss 'hinge'; choose one of" in capsys.readouterr().err
