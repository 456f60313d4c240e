"""``geoseg train``: train a model on GeoTIFFs and vector (or raster) labels."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from geoseg.cli import options as opt
from geoseg.cli._app import app, console, emit
from geoseg.cli._progress import summary_table
from geoseg.models.palette import read_classes_file
from geoseg.options import LabelOptions, TrainOptions
from geoseg.training.train import TrainProgress, TrainResult, train_model


def class_scores(iou: Mapping[str, float]) -> str:
    """Per-class IoU as ``background 0.97  building 0.08`` (empty without validation)."""
    return "  ".join(f"{name} {value:.2f}" for name, value in iou.items())


def epoch_line(p: TrainProgress) -> str:
    """One line per validated epoch: loss, mIoU and every class's IoU."""
    miou = "-" if p.miou is None else f"{p.miou:.3f}"
    return f"epoch {p.epoch}/{p.epochs}  loss {p.loss:.3f}  mIoU {miou}  {class_scores(p.iou)}"


@contextlib.contextmanager
def training_bar() -> Iterator[Callable[[TrainProgress], None]]:
    """A progress bar over all steps (epoch, loss, last validation mIoU and per-class IoU), and
    one line per validated epoch above it."""
    columns = (
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}  mIoU {task.fields[miou]}  {task.fields[iou]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("training", total=None, epoch="-", loss="-", miou="-", iou="")

        def update(p: TrainProgress) -> None:
            bar.update(
                task,
                completed=(p.epoch - 1) * p.steps + p.step,
                total=p.epochs * p.steps,
                epoch=f"{p.epoch}/{p.epochs}",
                loss=f"{p.loss:.3f}",
                miou="-" if p.miou is None else f"{p.miou:.3f}",
            )
            if p.phase == "validated":
                bar.update(task, iou=class_scores(p.iou))
                bar.console.print(epoch_line(p), highlight=False)

        yield update


@app.command()
def train(
    images: list[Path] = typer.Argument(..., help="Training images (GeoTIFF), alike bands/dtype."),
    labels: list[Path] = typer.Option(
        ..., "--labels", "-l", help="Vector layer or class raster: one, or one per image (repeat)."
    ),
    out: Path = opt.MODEL_OUT,
    class_field: str = opt.CLASS_FIELD,
    classes: str = opt.CLASSES,
    classes_file: Path = typer.Option(
        None, help="Class table (YAML or CSV: id, name, color); sets the classes and colours."
    ),
    arch: str = opt.ARCH,
    encoder: str = typer.Option(
        None,
        help="SMP encoder (resnet18, resnet34, efficientnet-b0, tu-<timm name>); default: "
        "resnet18, or resnet34 above 16 M labelled pixels.",
    ),
    encoder_weights: Path = typer.Option(
        None,
        help="Local pretrained encoder checkpoint (timm / torchvision / SMP; safetensors or a "
        "torch state dict); adapted to the band count. Nothing is downloaded.",
    ),
    tile: int = typer.Option(256, help="Chip size (multiple of 32); also the prediction tile."),
    epochs: int = typer.Option(None, help="Most epochs (default: ~1200 steps, 20 to 300)."),
    patience: int = typer.Option(
        None,
        help="Stop after this many epochs without a better mIoU (0: never; default: a quarter "
        "of the epochs, at least 10).",
    ),
    steps_per_epoch: int = typer.Option(
        None, help="Batches per epoch (default: the labelled pixels once)."
    ),
    batch_size: int = typer.Option(8, help="Chips per step."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (AdamW, warm-up then cosine)."),
    loss: str = typer.Option("ce+dice", help="ce, dice, focal, jaccard, lovasz, tversky, a+b."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    val_fraction: float = typer.Option(0.2, help="Held out: whole images if several, else strips."),
    unlabeled: str = opt.UNLABELED,
    resume: bool = typer.Option(False, "--resume", help="Continue from the checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model file."),
    seed: int = typer.Option(0, help="Random seed."),
    tune_crf: bool = typer.Option(
        False, "--tune-crf", help="Tune CRF parameters on the validation areas (predict --crf)."
    ),
) -> None:
    """Train a segmentation model on IMAGES and LABELS; keep the best by validation mIoU."""
    options = TrainOptions(
        arch=arch,
        encoder=encoder,
        encoder_weights=str(encoder_weights) if encoder_weights else None,
        tile=tile,
        epochs=epochs,
        patience=patience,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        lr=lr,
        loss=loss,
        device=device,
        val_fraction=val_fraction,
        seed=seed,
        tune_crf=tune_crf,
    )
    names, colors = read_classes_file(classes_file) if classes_file else (None, ())
    label_options = LabelOptions(
        class_field=class_field,
        classes=names or tuple(opt.split_list(classes)) or None,
        unlabeled=unlabeled,
        colors=colors,
    )
    with training_bar() as progress:
        result = train_model(
            images,
            labels,
            out,
            options,
            label_options=label_options,
            overwrite=overwrite,
            resume=resume,
            progress=progress,
        )
    print_summary(result)


def print_summary(result: TrainResult) -> None:
    """Per-class validation scores of the kept model, and the run's figures."""
    rows = result.table_rows()
    if rows:
        table = Table(title=f"validation (epoch {result.best_epoch})", title_justify="left")
        for column in ("class", "IoU", "F1"):
            table.add_column(column, justify="left" if column == "class" else "right")
        for row in rows:
            table.add_row(*row)
        emit(table)
    last = result.history[-1] if result.history else None
    per_epoch = sum(r.seconds for r in result.history) / max(len(result.history), 1)
    emit(
        summary_table(
            "summary",
            [
                ("model", str(result.model_path)),
                ("classes", ", ".join(result.contract.classes)),
                ("network", f"{result.contract.arch} / {result.contract.encoder}"),
                (
                    "encoder weights",
                    result.encoder_weights.describe() if result.encoder_weights else "random",
                ),
                ("epochs", f"{len(result.history)} ({per_epoch:.1f} s each)"),
                ("final loss", f"{last.loss:.4f}" if last else "-"),
                ("best mIoU", "-" if result.best_miou is None else f"{result.best_miou:.3f}"),
                ("time", f"{result.seconds:.1f} s"),
                ("checkpoint", str(result.checkpoint_path)),
            ],
        )
    )
