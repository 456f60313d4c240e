"""``geoseg evaluate``: per-class IoU, F1, precision and recall of a prediction against truth."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from geoseg.cli._app import app, console
from geoseg.training.evaluate import EvaluationReport, evaluate

COLUMNS = ("class", "IoU", "F1", "precision", "recall", "pixels")


@app.command("evaluate")
def evaluate_command(
    prediction: str = typer.Argument(..., help="Predicted class raster (or vector layer)."),
    truth: str = typer.Option(..., "--truth", "-t", help="Reference raster or layer (any CRS)."),
    class_field: str = typer.Option("class_name", help="Field of class names or ids (vectors)."),
    classes: str = typer.Option(None, help="Class names by id when the inputs carry ids only."),
    unlabeled: str = typer.Option("background", help="Uncovered pixels: background or ignore."),
    json_out: Path = typer.Option(None, "--json", help="Also write the report as JSON here."),
) -> None:
    """Compare PREDICTION with --truth window by window; nodata is not counted."""
    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    report = evaluate(
        prediction, truth, class_field=class_field, classes=names, unlabeled=unlabeled,
        out_json=json_out,
    )  # fmt: skip
    print_report(report)
    if json_out is not None:
        console.print(f"wrote {json_out}")


def print_report(report: EvaluationReport) -> None:
    """The per-class table with mean IoU and overall accuracy."""
    table = Table(title=f"{report.prediction} vs {report.truth}", title_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "class" else "right")
    rows = report.table_rows()
    for i, row in enumerate(rows):
        table.add_row(*row, end_section=i == len(rows) - 3)
    console.print(table)
