"""``geoseg vectorize``: polygons from a class raster."""

from __future__ import annotations

from pathlib import Path

import typer

from geoseg.cli import options as opt
from geoseg.cli._app import app, emit
from geoseg.cli._progress import progress_bar, summary_table
from geoseg.options import VECTOR_FORMATS, VectorOptions
from geoseg.vector.vectorize import vectorize_raster


@app.command()
def vectorize(
    classes: Path = typer.Argument(..., help="Class raster (e.g. OUT/<stem>_classes.tif)."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Vector file; default <stem>.gpkg beside it."
    ),
    vector_format: str = typer.Option(
        None, help="gpkg, geojson, fgb, parquet or shp (default: from --out)."
    ),
    simplify: float = opt.SIMPLIFY,
    min_area: float = opt.MIN_AREA,
    block_size: int = typer.Option(2048, help="Pixels per block read (memory bound)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
) -> None:
    """Turn CLASSES into one polygon per connected region of each non-background class."""
    options = VectorOptions(simplify=simplify, min_area=min_area, block_size=block_size)
    if out is None:
        stem = classes.stem.removesuffix("_classes")
        out = classes.with_name(stem + VECTOR_FORMATS.get(vector_format or "gpkg", ".gpkg"))
    with progress_bar("vectorizing", "blocks") as progress:
        result = vectorize_raster(
            classes,
            out,
            options,
            vector_format=vector_format,
            overwrite=overwrite,
            progress=progress,
        )
    rows = [
        (name, f"{count} polygons, {result.area_m2.get(name, 0.0) / 1e4:,.2f} ha")
        for name, count in result.class_features.items()
    ]
    rows += [("time", f"{result.seconds:.1f} s"), ("output", str(result.path))]
    emit(summary_table("vectorize", rows))
