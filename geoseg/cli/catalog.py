"""``geoseg catalog validate`` and ``geoseg run-catalog``: a data catalog without Prefect."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from geoseg.batch.catalog import (
    Catalog,
    CatalogReport,
    catalog_schema_json,
    load_catalog,
    validate_catalog,
)
from geoseg.batch.outcomes import BatchSummary, SceneOutcome
from geoseg.batch.runner import SceneRun, check_scene, plan_scenes, retrying, run_batch
from geoseg.cli import options as opt
from geoseg.cli._app import app, console, emit, emit_json
from geoseg.cli._progress import progress_bar
from geoseg.errors import GeosegError

catalog_app = typer.Typer(help="Check data catalogs (data_catalog.yaml).", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
STATUS_STYLE = {"done": "green", "skipped": "dim", "failed": "bold red"}
SHOW_FILES = 3
EXIT_FAILED = 1
"""Exit status when a scene failed (SystemExit: run_app drops typer.Exit's code)."""


@catalog_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of data_catalog.yaml (for editors: yaml-language-server)."""
    typer.echo(catalog_schema_json())


@catalog_app.command("validate")
def validate(
    file: Path = typer.Argument(..., help="The catalog (data_catalog.yaml)."),
    json_output: bool = opt.JSON,
) -> None:
    """Check FILE: schema, models, the scenes each entry finds now, each scene against its model."""
    report = validate_catalog(file)
    problems = check_scenes(plan_scenes(report.catalog), show=not json_output)
    scenes = sum(len(files) for files in report.files.values())
    if json_output:
        emit_json(validation_document(report, problems))
    else:
        emit(models_table(report), scenes_table(report), settings_line(report.catalog))
        if problems:
            console.print(f"[bold red]{len(problems)} of {scenes} scene(s) cannot be processed[/]")
        else:
            emit(f"[green]ok:[/] {len(report.contracts)} model(s), {scenes} scene(s)")
    if problems:
        raise SystemExit(EXIT_FAILED)


def validation_document(report: CatalogReport, problems: dict[str, str]) -> dict[str, object]:
    """The ``--json`` document of ``catalog validate``."""
    return {
        "catalog": str(report.catalog.path),
        "ok": not problems,
        "models": {
            name: {"path": str(report.catalog.models[name]), "arch": c.arch, "bands": c.bands,
                   "dtype": c.dtype, "classes": list(c.classes)}
            for name, c in report.contracts.items()
        },
        "scenes": {entry: list(files) for entry, files in report.files.items()},
        "problems": problems,
    }  # fmt: skip


def models_table(report: CatalogReport) -> Table:
    """One row per model: file, architecture, input, classes, tile."""
    table = Table(title="models", title_justify="left")
    for column in ("name", "file", "network", "input", "classes", "tile"):
        table.add_column(column)
    for name, contract in report.contracts.items():
        table.add_row(
            name,
            str(report.catalog.models[name]),
            f"{contract.arch}/{contract.encoder}",
            f"{contract.bands} x {contract.dtype}",
            ", ".join(contract.classes),
            f"{contract.tile_size} px",
        )
    return table


def scenes_table(report: CatalogReport) -> Table:
    """One row per entry: its path or glob, model, and the files found now."""
    table = Table(title="scenes", title_justify="left")
    for column in ("id", "path", "model", "found"):
        table.add_column(column)
    for entry in report.catalog.scenes:
        files = report.files[entry.id]
        names = ", ".join(Path(f).name for f in files[:SHOW_FILES])
        more = f", ... (+{len(files) - SHOW_FILES})" if len(files) > SHOW_FILES else ""
        found = f"{len(files)}: {names}{more}" if files else "[yellow]0 (nothing matches yet)[/]"
        table.add_row(entry.id, entry.path, entry.model, found)
    return table


def check_scenes(runs: list[SceneRun], show: bool = True) -> dict[str, str]:
    """Check every scene against its model contract; print each problem (``show``); return them."""
    problems = {}
    for run in runs:
        try:
            check_scene(run)
        except GeosegError as exc:
            problems[run.id] = str(exc)
            if show:
                console.print(f"[red]{run.id}:[/] {exc}", highlight=False, soft_wrap=True)
    return problems


def settings_line(catalog: Catalog) -> str:
    """Outputs, execution and schedule in one line."""
    ex = catalog.execution
    where = (
        f"Dask scheduler {ex.scheduler}"
        if ex.scheduler
        else f"local Dask cluster of {ex.workers} worker(s)"
        if ex.workers
        else "in-process"
    )
    when = f"{catalog.schedule.cron} ({catalog.schedule.timezone})" if catalog.schedule else "none"
    formats = ", ".join(catalog.outputs.vector_formats) or "no polygons"
    return f"outputs: {catalog.outputs.path} ({formats}); blocks run: {where}; schedule: {when}"


@app.command("run-catalog")
def run_catalog(
    file: Path = typer.Argument(..., help="The catalog (data_catalog.yaml)."),
    only: list[str] = typer.Option(None, "--only", help="Entry or scene id to run (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Re-run scenes that are up to date."),
    retries: int = typer.Option(2, help="Retries of a scene after an I/O or network error."),
    json_output: bool = opt.JSON,
) -> None:
    """Segment every scene of FILE that is not up to date; exit 1 if any scene failed."""
    catalog = load_catalog(file)
    summary = run_batch(
        catalog,
        only or None,
        force=force,
        runner=retrying(retries),
        scene_progress=lambda run: progress_bar(run.id, "tiles"),
        on_outcome=None if json_output else print_outcome,
    )
    if json_output:
        emit_json(summary.as_json())
    else:
        emit(summary_table(summary), summary.headline())
    if summary.failed:
        raise SystemExit(EXIT_FAILED)


def print_outcome(outcome: SceneOutcome) -> None:
    """One line per finished scene."""
    style = STATUS_STYLE[outcome.status]
    console.print(
        f"[{style}]{outcome.status:>7}[/] {outcome.id}: {outcome.reason} ({outcome.seconds:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )


def summary_table(summary: BatchSummary) -> Table:
    """Scene, status, hectares per class, seconds."""
    names = summary.class_names()
    table = Table(title=f"catalog run ({summary.seconds:.1f} s)", title_justify="left")
    table.add_column("scene")
    table.add_column("status")
    for name in names:
        table.add_column(f"{name} (ha)", justify="right")
    table.add_column("s", justify="right")
    for o in summary.outcomes:
        areas = [f"{o.areas_ha[n]:,.2f}" if n in o.areas_ha else "" for n in names]
        status = f"[{STATUS_STYLE[o.status]}]{o.status}[/]"
        table.add_row(o.id, status, *areas, f"{o.seconds:.1f}")
    return table
