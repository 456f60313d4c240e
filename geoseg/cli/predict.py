"""``geoseg predict``: one scene to a class COG, optional confidence COG and polygon layers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from geoseg.cli import options as opt
from geoseg.cli._app import app, emit, emit_json
from geoseg.cli._progress import progress_bar, summary_table
from geoseg.engine.executors import make_executor
from geoseg.engine.provenance import write_predict_item
from geoseg.engine.scene import PredictResult, predict_scene
from geoseg.options import (
    CrfParams,
    InferenceOptions,
    InputOptions,
    OutputOptions,
    PredictOptions,
    TilingOptions,
)


@app.command()
def predict(
    scene: str = typer.Argument(..., help="Input raster (GeoTIFF, COG, VRT, /vsicurl/ URL)."),
    model: Path = typer.Option(..., "--model", "-m", help="geoseg model file (.safetensors)."),
    out: Path = opt.output_folder(),
    tile: int = opt.TILE,
    overlap: int = opt.OVERLAP,
    batch_size: int = opt.BATCH_SIZE,
    block_size: int = opt.BLOCK_SIZE,
    memory_mb: int = opt.MEMORY_MB,
    device: str = opt.DEVICE,
    tta: bool = opt.TTA,
    crf: bool = typer.Option(
        False, "--crf", help="Refine boundaries with a local CRF (the model's tuned parameters)."
    ),
    crf_iterations: int = typer.Option(None, help="CRF mean-field steps (overrides the model's)."),
    crf_window: int = typer.Option(None, help="CRF window side in pixels, odd (overrides)."),
    bands: str = opt.BANDS,
    nodata: float = opt.NODATA,
    read_threads: int = typer.Option(
        None, "--read-threads", help="Threads decoding the input (default: up to 4)."
    ),
    confidence: bool = typer.Option(
        False, "--confidence", help="Also write <stem>_confidence.tif."
    ),
    vector_format: str = typer.Option(
        "gpkg", help="gpkg, geojson, fgb, parquet, shp, several (gpkg,fgb) or none."
    ),
    simplify: float = opt.SIMPLIFY,
    min_area: float = opt.MIN_AREA,
    workers: int = typer.Option(None, help="Run blocks on a local Dask cluster of N workers."),
    scheduler: str = typer.Option(
        None, help="Run blocks on this Dask scheduler (tcp://host:port)."
    ),
    overwrite: bool = opt.OVERWRITE,
    resume: bool = typer.Option(
        False, "--resume", help="Journal finished blocks; continue an interrupted identical run."
    ),
    stac: bool = typer.Option(
        False, "--stac", help="Also write OUT/<stem>.stac.json, a STAC Item listing every file."
    ),
    json_output: bool = opt.JSON,
) -> None:
    """Segment SCENE with MODEL into OUT/<stem>_classes.tif and OUT/<stem>.gpkg."""
    options = PredictOptions(
        input=InputOptions(
            bands=opt.parse_bands(bands),
            nodata=nodata,
            **({"read_threads": read_threads} if read_threads else {}),
        ),
        tiling=TilingOptions(
            tile=tile,
            overlap=overlap,
            batch_size=batch_size,
            block_size=block_size,
            memory_mb=memory_mb,
        ),
        inference=InferenceOptions(
            device=device,
            tta=tta,
            crf=crf or bool(crf_iterations or crf_window),
            crf_params=crf_override(crf_iterations, crf_window),
        ),
        output=OutputOptions(
            vector_formats=tuple(opt.split_list(vector_format)),
            confidence=confidence,
            simplify=simplify,
            min_area=min_area,
        ),
        overwrite=overwrite,
        resume=resume,
    )
    executor = make_executor(workers, scheduler)
    try:
        with progress_bar("segmenting", "tiles") as progress:
            result = predict_scene(scene, model, out, options, executor=executor, progress=progress)
    finally:
        executor.close()
    record = write_predict_item(result, model, options) if stac else None
    if json_output:
        emit_json(predict_document(result, record))
    else:
        print_summary(result, record)


def predict_document(result: PredictResult, record: Path | None = None) -> dict[str, Any]:
    """The ``--json`` document of a prediction (keys documented in the README)."""
    seg = result.segment
    areas = seg.area_ha()
    total = sum(areas.values()) or 1.0
    return {
        "scene": result.scene,
        "pixels": seg.scene_pixels,
        "classes": {
            name: {"pixels": int(n), "hectares": round(ha, 6), "share": round(ha / total, 6)}
            for (name, ha), n in zip(areas.items(), seg.class_pixels, strict=True)
        },
        "tiles": {
            "computed": seg.tiles, "planned": seg.planned_tiles, "size": seg.tile,
            "overlap": seg.overlap, "block": seg.block_size,
            "redundancy": round(seg.computed_pixels / max(seg.scene_pixels, 1), 4),
        },
        "polygons": {"features": result.vector_features, "below_4_pixels": result.small_features},
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "outputs": [str(p) for p in result.outputs],
        "record": str(record) if record else None,
    }  # fmt: skip


def small_note(small: int) -> str:
    """How many sub-pixel-scale polygons were kept, with the option that removes them.

    Examples
    --------
    >>> small_note(0), small_note(12)
    ('', ' (12 below 4 pixels: set --min-area to drop them)')
    """
    return f" ({small} below 4 pixels: set --min-area to drop them)" if small else ""


def crf_override(iterations: int | None, window: int | None) -> CrfParams | None:
    """CRF parameters from the flags, or None to use the model's tuned ones."""
    if iterations is None and window is None:
        return None
    defaults = CrfParams()
    return CrfParams(
        iterations=defaults.iterations if iterations is None else iterations,
        window=defaults.window if window is None else window,
    )


def print_summary(result: PredictResult, record: Path | None = None) -> None:
    """Area per class, time, throughput and outputs."""
    seg = result.segment
    areas = seg.area_ha()
    total = sum(areas.values()) or 1.0
    table = Table(title="area per class", title_justify="left")
    for column in ("class", "hectares", "share"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, ha in areas.items():
        table.add_row(name, f"{ha:,.2f}", f"{100 * ha / total:.1f} %")
    mpx = seg.scene_pixels / 1e6
    redundancy = seg.computed_pixels / max(seg.scene_pixels, 1)
    rows = [
        ("scene", f"{result.scene} ({mpx:.1f} Mpx)"),
        (
            "segment",
            f"{seg.seconds:.1f} s, {mpx / max(seg.seconds, 1e-9):.2f} Mpx/s, "
            f"{seg.tiles} tiles of {seg.tile} px, overlap {seg.overlap} "
            f"({redundancy:.2f}x pixels)" + skipped_note(seg.planned_tiles - seg.tiles),
        ),
    ]
    if "vectorize" in result.seconds:
        vectorize = f"{result.seconds['vectorize']:.1f} s, {result.vector_features} polygons"
        rows.append(("vectorize", vectorize + small_note(result.small_features)))
    rows += [("output", str(p)) for p in result.outputs]
    rows += [("record", str(record))] if record else []
    emit(table, summary_table("summary", rows))


def skipped_note(skipped: int) -> str:
    """How many planned tiles were not computed (all nodata, or finished by an earlier run).

    Examples
    --------
    >>> skipped_note(0), skipped_note(3)
    ('', '; 3 skipped (all nodata or resumed)')
    """
    return f"; {skipped} skipped (all nodata or resumed)" if skipped > 0 else ""
