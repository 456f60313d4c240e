"""``geoseg vectorize``: polygons from a class raster."""

from __future__ import annotations

from pathlib import Path

import typer

from geoseg.cli._app import app, console
from geoseg.cli._progress import progress_bar, summary_table
from geoseg.engine.scene import check_positive


@app.command()
def vectorize(
    classes: Path = typer.Argument(..., help="Class raster (e.g. OUT/<stem>_classes.tif)."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Vector file; default <stem>.gpkg beside it."
    ),
    vector_format: str = typer.Option(
        None, help="gpkg, geojson, fgb, parquet or shp (default: from --out)."
    ),
    simplify: float = typer.Option(0.0, help="Simplify polygons (metres), keeping shared borders."),
    min_area: float = typer.Option(0.0, help="Drop regions smaller than this (m²)."),
    block_size: int = typer.Option(2048, help="Pixels per block read (memory bound)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
) -> None:
    """Turn CLASSES into one polygon per connected region of each non-background class."""
    from geoseg.vector.vectorize import VECTOR_FORMATS, vectorize_raster

    check_positive("simplify", simplify)
    check_positive("min-area", min_area)
    if out is None:
        stem = classes.stem.removesuffix("_classes")
        out = classes.with_name(stem + VECTOR_FORMATS.get(vector_format or "gpkg", ".gpkg"))
    with progress_bar("vectorizing", "blocks") as progress:
        result = vectorize_raster(
            classes, out, vector_format=vector_format, simplify=simplify, min_area=min_area,
            block_size=block_size, overwrite=overwrite, progress=progress,
        )  # fmt: skip
    rows = [(name, f"{count} polygons, {result.area_m2.get(name, 0.0) / 1e4:,.2f} ha")
            for name, count in result.class_features.items()]  # fmt: skip
    rows += [("time", f"{result.seconds:.1f} s"), ("output", str(result.path))]
    console.print(summary_table("vectorize", rows))
