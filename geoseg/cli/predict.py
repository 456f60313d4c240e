"""``geoseg predict``: one scene to a class COG, optional confidence COG and a polygon layer."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from geoseg.cli._app import app, console
from geoseg.cli._progress import progress_bar, summary_table
from geoseg.engine.executors import make_executor
from geoseg.engine.scene import PredictResult, TilingOptions, check_positive, predict_scene


def parse_bands(text: str | None) -> list[int] | None:
    """``"4,3,2"`` -> ``[4, 3, 2]``."""
    if not text:
        return None
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"--bands {text!r}: give 1-based band numbers like 1,2,3"
        ) from None


@app.command()
def predict(
    scene: str = typer.Argument(..., help="Input raster (GeoTIFF, COG, VRT, /vsicurl/ URL)."),
    model: Path = typer.Option(..., "--model", "-m", help="geoseg model file (.safetensors)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    tile: int = typer.Option(None, help="Tile size (multiple of 32); default: the model's."),
    overlap: int = typer.Option(None, help="Pixels shared by neighbouring tiles; default tile/8."),
    batch_size: int = typer.Option(4, help="Tiles per model call."),
    block_size: int = typer.Option(None, help="Block size in pixels (memory vs recomputation)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    tta: bool = typer.Option(False, "--tta", help="Test-time augmentation (8 rotations/flips)."),
    bands: str = typer.Option(
        None, help="1-based bands to use, e.g. 1,2,3 (default: all but alpha)."
    ),
    nodata: float = typer.Option(None, help="Nodata value when the file declares none."),
    confidence: bool = typer.Option(
        False, "--confidence", help="Also write <stem>_confidence.tif."
    ),
    vector_format: str = typer.Option("gpkg", help="gpkg, geojson, fgb, parquet, shp or none."),
    simplify: float = typer.Option(0.0, help="Simplify polygons (metres), keeping shared borders."),
    min_area: float = typer.Option(0.0, help="Drop regions smaller than this (m²)."),
    workers: int = typer.Option(None, help="Run blocks on a local Dask cluster of N workers."),
    scheduler: str = typer.Option(
        None, help="Run blocks on this Dask scheduler (tcp://host:port)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    resume: bool = typer.Option(
        False, "--resume", help="Journal finished blocks; continue an interrupted identical run."
    ),
) -> None:
    """Segment SCENE with MODEL into OUT/<stem>_classes.tif and OUT/<stem>.gpkg."""
    check_positive("simplify", simplify)
    check_positive("min-area", min_area)
    tiling = TilingOptions(tile, overlap, batch_size, block_size)
    executor = make_executor(workers, scheduler)
    try:
        with progress_bar("segmenting", "tiles") as progress:
            result = predict_scene(
                scene, model, out, tiling=tiling, device=device, tta=tta, bands=parse_bands(bands),
                nodata=nodata, confidence=confidence, vector_format=vector_format,
                simplify=simplify, min_area=min_area, overwrite=overwrite, executor=executor,
                progress=progress, resume=resume,
            )  # fmt: skip
    finally:
        executor.close()
    print_summary(result)


def print_summary(result: PredictResult) -> None:
    """Area per class, time, throughput and outputs."""
    seg = result.segment
    areas = seg.area_ha()
    total = sum(areas.values()) or 1.0
    table = Table(title="area per class", title_justify="left")
    for column in ("class", "hectares", "share"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, ha in areas.items():
        table.add_row(name, f"{ha:,.2f}", f"{100 * ha / total:.1f} %")
    console.print(table)
    mpx = seg.scene_pixels / 1e6
    rows = [
        ("scene", f"{result.scene} ({mpx:.1f} Mpx)"),
        ("segment", f"{seg.seconds:.1f} s, {mpx / max(seg.seconds, 1e-9):.2f} Mpx/s, "
                    f"{seg.tiles} tiles ({seg.computed_pixels / max(seg.scene_pixels, 1):.2f}x pixels)"),
    ]  # fmt: skip
    if "vectorize" in result.seconds:
        rows.append(("vectorize", f"{result.seconds['vectorize']:.1f} s, "
                                  f"{result.vector_features} polygons"))  # fmt: skip
    rows += [("output", str(p)) for p in result.outputs]
    console.print(summary_table("summary", rows))
