"""Train a segmentation model on GeoTIFFs and vector (or raster) labels; write a geoseg model file.

:func:`train_model` delegates: labels to :mod:`geoseg.io.labels`, the spatial split, label survey,
chip sampling and augmentation to :mod:`geoseg.training.sampling`, scores to :mod:`geoseg.training.evaluate`. The
model file it writes carries the contract (classes, bands, dtype, the normalisation measured on
the training images, GSD, tile), so ``predict`` normalises exactly as training did.

Each epoch trains on randomly drawn chips and then scores the held-out areas; the model with the
best mean IoU so far is kept under a hidden partial name (``.<stem>.partial.safetensors``) and
renamed to ``out`` only when the last epoch is done, so a file named ``out`` is always a finished
model. A checkpoint beside it (``<out>.ckpt.safetensors``: weights, optimizer state, history and
the schedule as metadata) lets ``resume=True`` continue after the last finished epoch, with the
same schedule: resuming with other ``epochs`` (or steps, learning rate) is refused, because the
learning-rate schedule is laid out over the whole run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from geoseg.errors import InvalidInputError
from geoseg.geo.window import cover
from geoseg.io.checks import check_raster
from geoseg.io.files import atomic_output, check_writable, writing
from geoseg.io.labels import IGNORE, label_specs, resolve_classes
from geoseg.models.contract import Mode, ModelContract, Normalization, default_colors
from geoseg.models.modelfile import file_sha256, save_model_file
from geoseg.models.predictor import resolve_device, scores_to_probabilities
from geoseg.models.pretrained import EncoderLoad
from geoseg.models.registry import build_network, check_arch, check_encoder, load_encoder_weights
from geoseg.options import LabelOptions, TrainOptions
from geoseg.training.losses import build_loss, class_weights, learning_rate
from geoseg.training.metrics import Scores, confusion_matrix, fmt, per_class
from geoseg.training.sampling import TrainingSet
from geoseg.training.tune_crf import store_tuned_crf
from geoseg.training.watch import LearningWatch

CHECKPOINT_KEY = "geoseg_checkpoint"
T = TypeVar("T")


@dataclass(frozen=True)
class TrainProgress:
    """What the progress callback receives after every step and after each validation."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    miou: float | None = None
    phase: str = "train"
    iou: Mapping[str, float] = field(default_factory=dict)
    """Per-class validation IoU of the last validated epoch (``phase == "validated"``)."""


Progress = Callable[[TrainProgress], None]


@dataclass
class EpochRecord:
    """One epoch: mean training loss, and validation scores (None without validation)."""

    epoch: int
    loss: float
    lr: float
    seconds: float
    miou: float | None = None
    accuracy: float | None = None
    iou: dict[str, float] = field(default_factory=dict)
    f1: dict[str, float] = field(default_factory=dict)


@dataclass(kw_only=True)
class TrainResult:
    """What :func:`train_model` produced."""

    model_path: Path
    checkpoint_path: Path
    contract: ModelContract
    history: list[EpochRecord]
    best_epoch: int | None
    best_miou: float | None
    seconds: float
    encoder_weights: EncoderLoad | None = None

    @property
    def best(self) -> EpochRecord | None:
        """The record of the epoch whose model was kept."""
        return next((r for r in self.history if r.epoch == self.best_epoch), None)

    def table_rows(self) -> list[tuple[str, str, str]]:
        """Rows ``(class, IoU, F1)`` of the kept model's validation."""
        best = self.best
        if best is None or best.miou is None:
            return []
        rows = [(n, fmt(best.iou[n]), fmt(best.f1[n])) for n in self.contract.classes]
        return [*rows, ("mean", fmt(best.miou), "")]


# --- one epoch --------------------------------------------------------------------------------


@dataclass
class Trainer:
    """The network, optimizer and loss on a device."""

    net: Any
    optimizer: Any
    loss: Callable[[Any, Any], Any]
    device: str
    mode: str

    def to_device(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
        import torch

        xt = torch.from_numpy(x).to(self.device).contiguous(memory_format=torch.channels_last)
        return xt, torch.from_numpy(y.astype(np.int64)).to(self.device)

    def autocast(self) -> Any:
        import torch

        bf16 = self.device.startswith("cuda") and torch.cuda.is_bf16_supported()
        return torch.autocast("cuda" if bf16 else "cpu", dtype=torch.bfloat16, enabled=bf16)

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float | None:
        """One optimisation step; None when the batch has no labeled pixel."""
        if not (y != IGNORE).any():
            return None
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.net.train()
        xt, yt = self.to_device(x, y)
        with self.autocast():
            loss = self.loss(self.net(xt).float(), yt)
            aux = getattr(self.net, "aux_logits", ())  # ICNet's cascade label guidance
            if aux:
                from geoseg.models.classic.icnet import cascade_loss

                loss = loss + cascade_loss([a.float() for a in aux], yt, self.loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, K, H, W)`` of a normalised batch (float32)."""
        import torch

        self.net.eval()
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        with torch.inference_mode(), self.autocast():
            logits = self.net(xt.contiguous(memory_format=torch.channels_last)).float()
        mode: Mode = "binary" if self.mode == "binary" else "multiclass"
        probs: np.ndarray = scores_to_probabilities(logits, mode).cpu().numpy()
        return probs

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class ids ``(N, H, W)`` of a normalised batch."""
        import torch

        self.net.eval()
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        with torch.inference_mode(), self.autocast():
            logits = self.net(xt.contiguous(memory_format=torch.channels_last)).float()
        if self.mode == "binary":
            return (logits[:, 0] > 0).to(torch.uint8).cpu().numpy()
        return logits.argmax(dim=1).to(torch.uint8).cpu().numpy()


def validate(trainer: Trainer, data: TrainingSet, norm: Normalization, batch_size: int) -> Scores:
    """Scores over every validation area, in non-overlapping tiles."""
    confusion = np.zeros((data.num_classes,) * 2, np.int64)
    for area in data.split.val:
        chips = [data.validation_chip(area.image, w, norm) for w in cover(area.window, data.tile)]
        for group in same_shape_groups(chips, batch_size):
            pred = trainer.predict(np.stack([x for x, _ in group]))
            confusion += confusion_matrix(np.stack([y for _, y in group]), pred, data.num_classes)
    return Scores.from_confusion(confusion)


def same_shape_groups(items: list[tuple[np.ndarray, np.ndarray]], size: int) -> list[list[Any]]:
    """Consecutive runs of at most ``size`` items with equal shapes (to stack into batches)."""
    groups: list[list[Any]] = []
    for item in items:
        if groups and len(groups[-1]) < size and groups[-1][0][1].shape == item[1].shape:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


# --- checkpoints ------------------------------------------------------------------------------


def checkpoint_path(out: str | os.PathLike[str]) -> Path:
    """``model.safetensors`` -> ``model.ckpt.safetensors``."""
    path = Path(out)
    return path.with_name(f"{path.stem}.ckpt.safetensors")


def partial_model_path(out: str | os.PathLike[str]) -> Path:
    """``model.safetensors`` -> ``.model.partial.safetensors``: the best model until training ends."""
    path = Path(out)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


@dataclass
class RunState:
    """Where a run stands: the last finished epoch, global step, history and best score."""

    epoch: int = 0
    step: int = 0
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    best_miou: float | None = None


def save_checkpoint(
    path: Path, trainer: Trainer, contract: ModelContract, state: RunState, schedule: dict[str, Any]
) -> None:
    """Weights, optimizer tensors and (as metadata) the contract, run state, param groups and the
    schedule (:meth:`EpochPlan.schedule`)."""
    from safetensors.torch import save_file

    optim = trainer.optimizer.state_dict()
    tensors = {
        f"model.{k}": v.detach().contiguous().cpu() for k, v in trainer.net.state_dict().items()
    }
    for index, values in optim["state"].items():
        tensors.update({f"optim.{index}.{k}": v.contiguous().cpu() for k, v in values.items()})
    meta = {
        "contract": contract.to_json(),
        "param_groups": optim["param_groups"],
        "schedule": schedule,
        **asdict(state),
    }
    with atomic_output(path, overwrite=True) as tmp:
        save_file(tensors, os.fspath(tmp), metadata={CHECKPOINT_KEY: json.dumps(meta)})


def load_checkpoint(path: Path, trainer: Trainer) -> RunState:
    """Restore weights and optimizer state; return the run state."""
    from safetensors.torch import load_file

    meta = read_checkpoint_meta(path)
    tensors = load_file(os.fspath(path))
    trainer.net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    trainer.optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    history = [EpochRecord(**r) for r in meta["history"]]
    return RunState(meta["epoch"], meta["step"], history, meta["best_epoch"], meta["best_miou"])


def read_checkpoint_meta(path: Path) -> dict[str, Any]:
    """The checkpoint's metadata (contract, run state)."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as fh:
        meta: dict[str, Any] = json.loads((fh.metadata() or {})[CHECKPOINT_KEY])
    return meta


def check_resumable(path: Path, contract: ModelContract) -> ModelContract:
    """The checkpoint's contract, if it fits this run (same network, classes, tile, input)."""
    saved = ModelContract.from_json(read_checkpoint_meta(path)["contract"])
    keys = ("arch", "encoder", "bands", "dtype", "classes", "mode", "tile_size")
    diff = [k for k in keys if getattr(saved, k) != getattr(contract, k)]
    if diff:
        raise InvalidInputError(
            f"{path}: the checkpoint differs from this run in {', '.join(diff)}; run with the same "
            "options, or without `resume` (or delete the checkpoint) to start over",
            option="resume",
        )
    return saved


def check_schedule(path: Path, plan: EpochPlan) -> None:
    """Refuse to resume a checkpoint made for another schedule (epochs, steps, learning rate).

    The learning rate follows one warm-up and cosine decay over ``epochs x steps``; continuing with
    other values would silently bend it. Checkpoints written before the schedule was recorded
    are accepted as they are.
    """
    saved = read_checkpoint_meta(path).get("schedule")
    if not saved or saved == plan.schedule():
        return
    if saved["epochs"] != plan.epochs:
        raise InvalidInputError(
            f"{path}: the checkpoint was made for {saved['epochs']} epochs, not {plan.epochs}; "
            f"set `epochs` to {saved['epochs']} to resume, or start over without `resume`",
            options=("epochs", "resume"),
        )
    raise InvalidInputError(
        f"{path}: the checkpoint was made for {saved['steps']} steps per epoch at learning rate "
        f"{saved['lr']}; set `steps_per_epoch` and `lr` to those to resume, or start over "
        "without `resume`",
        options=("steps_per_epoch", "lr", "resume"),
    )


# --- the whole run ----------------------------------------------------------------------------


def make_contract(
    data: TrainingSet, classes: Sequence[str], arch: str, encoder: str, tile: int
) -> ModelContract:
    """The contract of the model being trained (normalisation measured on the training images)."""
    grid = data.readers[0].grid
    gsds = [g for g in (r.grid.gsd for r in data.readers) if g]
    return ModelContract(
        arch=arch,
        encoder=encoder,
        bands=grid.count,
        dtype=grid.dtype,
        classes=tuple(classes),
        colors=default_colors(classes),
        mode="binary" if len(classes) == 2 else "multiclass",
        normalization=data.normalization(),
        gsd=float(np.mean(gsds)) if gsds else None,
        tile_size=tile,
    )


def make_trainer(
    contract: ModelContract,
    loss: str,
    weights: np.ndarray,
    lr: float,
    device: str,
    start: RunStart | None = None,
) -> Trainer:
    """Network (channels-last; encoder from ``start.encoder_weights`` if given), AdamW, loss."""
    import torch

    net = build_network(contract.arch, contract.encoder, contract.bands, contract.num_outputs)
    if start is not None and start.encoder_weights:
        start.encoder_load = load_encoder_weights(net, start.encoder_weights)
    net = net.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    return Trainer(
        net, optimizer, build_loss(loss, contract.mode, weights, device), device, contract.mode
    )


def prefetched(make: Callable[[], T], count: int) -> Iterator[T]:
    """``count`` results of ``make()``, each made in a worker thread while the previous is used.

    One worker calls ``make`` in order, so random draws happen in the same sequence as without it;
    reading and rasterizing (GDAL releases the GIL) overlaps the optimisation step.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="geoseg-chips") as pool:
        pending = pool.submit(make) if count else None
        for i in range(count):
            assert pending is not None
            item = pending.result()
            pending = pool.submit(make) if i + 1 < count else None
            yield item


def run_epoch(
    trainer: Trainer, data: TrainingSet, norm: Normalization, state: RunState, plan: EpochPlan
) -> float:
    """Train one epoch of ``plan.steps`` batches; returns the mean loss."""
    import torch

    rng = np.random.default_rng([plan.seed, state.epoch + 1])
    torch.manual_seed(plan.seed * 100_003 + state.epoch + 1)

    def make_batch() -> tuple[np.ndarray, np.ndarray]:
        return data.batch(data.sampler.sample(plan.batch_size, rng), norm, rng)

    losses = []
    for i, (x, y) in enumerate(prefetched(make_batch, plan.steps)):
        loss = trainer.step(x, y, learning_rate(state.step, plan.total_steps, plan.lr))
        state.step += 1
        if loss is not None:
            losses.append(loss)
        if plan.progress:
            mean = float(np.mean(losses)) if losses else math.nan
            plan.progress(
                TrainProgress(
                    state.epoch + 1, plan.epochs, i + 1, plan.steps, mean, state.best_miou
                )
            )
    return float(np.mean(losses)) if losses else math.nan


@dataclass(frozen=True, kw_only=True)
class EpochPlan:
    """Steps and learning-rate schedule of a run."""

    epochs: int
    steps: int
    batch_size: int
    lr: float
    seed: int
    progress: Progress | None = None

    @property
    def total_steps(self) -> int:
        """Steps in the whole run (the schedule's length)."""
        return self.epochs * self.steps

    def schedule(self) -> dict[str, Any]:
        """What lays out the learning rate over the run (recorded in the checkpoint)."""
        return {"epochs": self.epochs, "steps": self.steps, "lr": self.lr}


# --- a recipe that scales with the data (issue 13) ---------------------------------------------

MIN_STEPS = 4
"""Fewest steps per epoch (an epoch also validates, so very short ones waste time)."""
RUN_STEPS = 1200
"""Steps a run aims at when ``epochs`` is not given. Trained from scratch on a small label set,
a U-Net is still learning at 400 steps: on real imagery (``benchmarks/bench_real.py``) 1200 steps
raised held-out tree IoU from 0.562 to 0.623 (means of 3 seeds; benchmarks/RESULTS.md)."""
MAX_AUTO_EPOCHS = 300
LARGE_DATA_PIXELS = 16_000_000
"""Labelled training pixels above which the default encoder is resnet34 (below: resnet18)."""
MIN_PATIENCE = 10
"""Fewest epochs without a better validation mIoU before a run stops early by default."""


def default_steps(labelled: int, tile: int, batch_size: int) -> int:
    """Steps per epoch: chips covering the labelled training pixels about once.

    Examples
    --------
    >>> default_steps(4_000_000, 256, 8), default_steps(10_000, 256, 8)
    (8, 4)
    """
    return max(MIN_STEPS, math.ceil(labelled / (tile * tile * batch_size)))


def default_epochs(steps: int) -> int:
    """Epochs for about :data:`RUN_STEPS` steps in all: at least 20, at most 300.

    Examples
    --------
    >>> default_epochs(4), default_epochs(6), default_epochs(100)
    (300, 200, 20)
    """
    return int(np.clip(math.ceil(RUN_STEPS / steps), 20, MAX_AUTO_EPOCHS))


def default_patience(epochs: int) -> int:
    """Epochs without a better validation mIoU that stop a run: a quarter of the planned epochs.

    A fixed count would be measured in epochs whose length depends on the data: with small label
    sets (short epochs) it stopped runs while the learning rate was still near its peak and the
    validation score, noisy there, still rising.

    Examples
    --------
    >>> default_patience(200), default_patience(20)
    (50, 10)
    """
    return max(MIN_PATIENCE, math.ceil(epochs / 4))


def default_encoder(labelled: int) -> str:
    """``resnet18`` for small label sets, ``resnet34`` above :data:`LARGE_DATA_PIXELS`.

    Examples
    --------
    >>> default_encoder(2_000_000), default_encoder(50_000_000)
    ('resnet18', 'resnet34')
    """
    return "resnet34" if labelled > LARGE_DATA_PIXELS else "resnet18"


def make_plan(opts: TrainOptions, data: TrainingSet, progress: Progress | None) -> EpochPlan:
    """The run's epochs and steps: given, or scaled with the labelled training pixels."""
    labelled = data.labelled_pixels()
    steps = opts.steps_per_epoch or default_steps(labelled, opts.tile, opts.batch_size)
    return EpochPlan(
        epochs=opts.epochs or default_epochs(steps),
        steps=steps,
        batch_size=opts.batch_size,
        lr=opts.lr,
        seed=opts.seed,
        progress=progress,
    )


def make_watch(
    opts: TrainOptions, data: TrainingSet, names: Sequence[str], epochs: int
) -> LearningWatch | None:
    """The learning watch of a run with validation (none without)."""
    if not data.split.val:
        return None
    patience = default_patience(epochs) if opts.patience is None else opts.patience
    return LearningWatch(names, data.frequencies(), epochs, patience)


def finish_epoch(
    trainer: Trainer,
    data: TrainingSet,
    contract: ModelContract,
    state: RunState,
    record: EpochRecord,
    out: Path,
    plan: EpochPlan,
    started: float,
) -> None:
    """Validate, keep the model (under its partial name) if it is the best so far, checkpoint."""
    assert contract.normalization is not None
    if data.split.val:
        scores = validate(trainer, data, contract.normalization, plan.batch_size)
        record.accuracy = scores.accuracy
        record.miou = None if math.isnan(scores.miou) else scores.miou  # no labeled pixel
        record.iou = per_class(scores.iou, contract.classes)
        record.f1 = per_class(scores.f1, contract.classes)
    record.seconds = time.perf_counter() - started
    state.history.append(record)
    state.epoch = record.epoch
    improved = record.miou is not None and (
        state.best_miou is None or record.miou > state.best_miou
    )
    if improved or record.miou is None:
        state.best_epoch, state.best_miou = record.epoch, record.miou
        save_model_file(partial_model_path(out), trainer.net.state_dict(), contract, overwrite=True)
    save_checkpoint(checkpoint_path(out), trainer, contract, state, plan.schedule())


def train_model(
    images: Sequence[str | os.PathLike[str]],
    labels: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    options: TrainOptions | None = None,
    *,
    label_options: LabelOptions | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a model on images and labels and write the best one (by validation mIoU) to ``out``.

    Parameters
    ----------
    images
        GeoTIFFs (any raster GDAL reads) with the same bands and dtype.
    labels
        One labels file for all images, or one per image: a vector layer (GeoPackage, GeoJSON,
        Shapefile, any CRS) with a class field, or a class raster on any grid.
    out
        The model file to write (``.safetensors``); a checkpoint goes beside it.
    options
        The network (SMP architecture and encoder, random initialisation: nothing is
        downloaded) and the recipe: chip size (also the model's prediction tile), epochs, steps,
        batch size, peak learning rate of AdamW (5 % warm-up, cosine decay), loss (``ce``,
        ``dice``, ``focal``, ``jaccard``, ``lovasz``, ``tversky`` or a sum like ``ce+dice``),
        device, validation share (whole images, the last ones, when that rounds to at least one
        image, else the bottom strip of each; 0 disables validation) and seed.
    label_options
        Class field of vector labels, class names by id (background first; default:
        ``background`` + the names found, sorted; two classes train a binary model), and whether
        uncovered pixels are ``background`` or ``ignore`` (sparse labels).
    overwrite
        Replace an existing ``out``.
    resume
        Continue from the checkpoint beside ``out`` (if there is one).
    progress
        Called with a :class:`TrainProgress` after every step.

    Examples
    --------
    >>> result = train_model(["a.tif", "b.tif"], "labels.gpkg", "m.safetensors")  # doctest: +SKIP
    >>> result.best_miou  # doctest: +SKIP
    0.93
    """
    started = time.perf_counter()
    opts, lab = options or TrainOptions(), label_options or LabelOptions()
    paths, out = check_inputs(images, out, overwrite or (resume and checkpoint_path(out).exists()))
    arch, device = check_arch(opts.arch), resolve_device(opts.device)
    if opts.encoder:
        check_encoder(opts.encoder)
    specs = label_specs(labels, len(paths), lab.class_field, lab.unlabeled)
    names = resolve_classes([s.inspect() for s in dict.fromkeys(specs)], lab.classes)
    with closing(TrainingSet(paths, specs, names, opts.tile, opts.val_fraction, opts.seed)) as data:
        encoder = opts.encoder or default_encoder(data.labelled_pixels())
        contract = make_contract(data, names, arch, encoder, opts.tile)
        contract = dataclasses.replace(
            contract,
            colors=lab.colors or contract.colors,  # classes file
            encoder_weights_sha256=file_sha256(opts.encoder_weights)
            if opts.encoder_weights
            else None,
        )
        if resume and checkpoint_path(out).exists():
            contract = check_resumable(checkpoint_path(out), contract)
        plan = make_plan(opts, data, progress)
        if resume and checkpoint_path(out).exists():
            check_schedule(checkpoint_path(out), plan)
        start = RunStart(opts.encoder_weights, make_watch(opts, data, names, plan.epochs))
        state = fit(data, contract, plan, opts.loss, device, out, resume, start)
        if opts.tune_crf:
            contract, _ = store_tuned_crf(out, data, contract, device)
    return TrainResult(
        model_path=out,
        checkpoint_path=checkpoint_path(out),
        contract=contract,
        history=state.history,
        best_epoch=state.best_epoch,
        best_miou=state.best_miou,
        seconds=time.perf_counter() - started,
        encoder_weights=start.encoder_load,
    )


def check_inputs(
    images: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], replace: bool
) -> tuple[list[str], Path]:
    """Image paths that exist, and an output that may be written."""
    paths = [os.fspath(p) for p in images]
    if not paths:
        raise InvalidInputError("no images given; pass at least one GeoTIFF")
    for p in paths:
        check_raster(p, "image")
    check_writable(Path(out), replace)
    return paths, Path(out)


def fit(
    data: TrainingSet,
    contract: ModelContract,
    plan: EpochPlan,
    loss: str,
    device: str,
    out: Path,
    resume: bool,
    start: RunStart | None = None,
) -> RunState:
    """The epoch loop, starting after the checkpoint's last epoch when resuming."""
    import torch

    ckpt = checkpoint_path(out)
    torch.manual_seed(plan.seed)
    weights = class_weights(data.frequencies())
    trainer = make_trainer(contract, loss, weights, plan.lr, device, start)
    state = load_checkpoint(ckpt, trainer) if resume and ckpt.exists() else RunState()
    norm = contract.normalization
    assert norm is not None
    for epoch in range(state.epoch + 1, plan.epochs + 1):
        tic = time.perf_counter()
        mean_loss = run_epoch(trainer, data, norm, state, plan)
        lr = learning_rate(state.step - 1, plan.total_steps, plan.lr)
        record = EpochRecord(epoch, mean_loss, lr, 0.0)
        finish_epoch(trainer, data, contract, state, record, out, plan, tic)
        if plan.progress:
            plan.progress(validated_progress(plan, record))
        if start is not None and start.watch is not None and watch_stops(start.watch, state):
            break
    publish_model(out)
    return state


def publish_model(out: Path) -> None:
    """Training is complete: rename the best model from its partial name to ``out``."""
    partial = partial_model_path(out)
    if partial.exists():
        with writing(out):
            os.replace(partial, out)


# --- watching the run (issue 13): per-class progress, stalled classes, early stopping --------


@dataclass
class RunStart:
    """How a run starts and is watched: a pretrained encoder file and the learning watch.

    ``encoder_load`` is filled in when the encoder weights are loaded.
    """

    encoder_weights: str | None = None
    watch: LearningWatch | None = None
    encoder_load: EncoderLoad | None = None


def validated_progress(plan: EpochPlan, record: EpochRecord) -> TrainProgress:
    """The progress report after an epoch's validation, with per-class IoU."""
    return TrainProgress(
        record.epoch, plan.epochs, plan.steps, plan.steps, record.loss, record.miou, "validated",
        iou=dict(record.iou),
    )  # fmt: skip


def watch_stops(watch: LearningWatch, state: RunState) -> bool:
    """Warn about a stalled class (once) and say whether to stop early."""
    watch.after_epoch(state.history)
    return watch.should_stop(state.history, state.best_epoch)
