"""``geoseg evaluate``: per-class IoU, F1, precision and recall of a prediction against truth."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from geoseg.cli import options as opt
from geoseg.cli._app import app, console, emit, emit_json
from geoseg.options import LabelOptions
from geoseg.training.evaluate import EvaluationReport, evaluate

COLUMNS = ("class", "IoU", "F1", "precision", "recall", "pixels")


@app.command("evaluate")
def evaluate_command(
    prediction: str = typer.Argument(..., help="Predicted class raster (or vector layer)."),
    truth: str = typer.Option(..., "--truth", "-t", help="Reference raster or layer (any CRS)."),
    class_field: str = opt.CLASS_FIELD,
    classes: str = opt.CLASSES,
    unlabeled: str = opt.UNLABELED,
    report_path: Path = typer.Option(None, "--report", help="Also write the report as JSON here."),
    json_output: bool = opt.JSON,
) -> None:
    """Compare PREDICTION with --truth window by window; nodata is not counted."""
    labels = LabelOptions(
        class_field=class_field, classes=tuple(opt.split_list(classes)) or None, unlabeled=unlabeled
    )
    report = evaluate(prediction, truth, labels, out_json=report_path)
    if json_output:
        emit_json(report.to_dict())
        return
    print_report(report)
    if report_path is not None:
        console.print(f"wrote {report_path}")


def print_report(report: EvaluationReport) -> None:
    """The per-class table with mean IoU and overall accuracy."""
    table = Table(title=f"{report.prediction} vs {report.truth}", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "class" else "right")
    rows = report.table_rows()
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i == len(rows) - 3)
    emit(table)
