"""``geoseg demo`` (the main job on a fresh machine) and ``geoseg synth`` (synthetic scenes)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import typer

from geoseg.cli._app import app, console, emit
from geoseg.cli._progress import progress_bar, summary_table
from geoseg.cli.evaluate import print_report
from geoseg.cli.train import training_bar


@app.command()
def demo(
    out: Path = typer.Option(Path("geoseg_demo"), "--out", "-o", help="Output folder."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    epochs: int = typer.Option(None, help="Training epochs (default: enough for mIoU >= 0.9)."),
) -> None:
    """Generate synthetic scenes, train a model, segment a held-out scene and score it."""
    from geoseg.demo import DemoOptions, run_demo

    options = DemoOptions(device=device)
    if epochs is not None:
        options = DemoOptions(device=device, epochs=epochs)
    console.print(f"geoseg demo in {out}/ (a second run reuses what exists)")
    with contextlib.ExitStack() as training, contextlib.ExitStack() as segmenting:
        train_progress = training.enter_context(training_bar())
        bar: list[Callable[[int, int], None]] = []

        def predict_progress(done: int, total: int) -> None:
            if not bar:  # one live display at a time: close the training bar first
                training.close()
                bar.append(segmenting.enter_context(progress_bar("segmenting", "tiles")))
            bar[0](done, total)

        result = run_demo(out, options, train_progress, predict_progress)
    print_report(result.report)
    rows = [(stage, f"{s:.0f} s") for stage, s in result.seconds.items()]
    rows += [("held-out mIoU", f"{result.report.miou:.3f}")]
    rows += [("output", str(p)) for p in result.outputs]
    emit(summary_table("demo", rows))


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder for the scenes."),
    scenes: int = typer.Option(3, help="Number of scenes."),
    size: int = typer.Option(1024, help="Scene size in pixels (square)."),
    seed: int = typer.Option(0, help="Random seed (same seed, same scenes)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files."),
) -> None:
    """Write synthetic georeferenced aerial scenes with ground truth (raster and polygons)."""
    from geoseg.synthetic.scenes import write_scenes

    files = write_scenes(out, scenes, size, seed, overwrite=overwrite)
    rows = [(f.image.stem, f"{f.image.name}, {f.classes.name}, {f.labels.name}") for f in files]
    emit(summary_table(f"{len(files)} scene(s) in {out}", rows))
