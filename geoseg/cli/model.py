"""``geoseg model-create`` and ``geoseg model-info``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from geoseg.cli import options as opt
from geoseg.cli._app import app, console, emit, emit_json
from geoseg.cli._progress import summary_table
from geoseg.cli.options import parse_numbers, split_list
from geoseg.models.contract import (
    ModelContract,
    check_stretch,
    declared_normalization,
    describe,
    parse_color,
)
from geoseg.models.create import create_model
from geoseg.models.modelfile import file_sha256, read_contract


@app.command("model-info")
def model_info(
    model: Path = typer.Argument(..., help="geoseg model file."), json_output: bool = opt.JSON
) -> None:
    """Print a model's contract: architecture, bands, normalisation, classes and colours."""
    contract = read_contract(model)
    sha256 = file_sha256(model)
    if json_output:
        emit_json({"path": str(model), "sha256": sha256, "contract": dataclasses.asdict(contract)})
        return
    rows = [*describe(contract), ("sha256", sha256[:16] + "...")]
    emit(summary_table(str(model), rows))


@app.command("model-create")
def model_create(
    arch: str = opt.ARCH,
    encoder: str = opt.ENCODER,
    bands: int = typer.Option(3, help="Number of input bands."),
    classes: str = typer.Option(..., help="Class names, background first: background,building"),
    out: Path = typer.Option(..., "--out", "-o", help="Model file to write (.safetensors)."),
    weights: Path = typer.Option(
        None, help="SMP state dict trained elsewhere (.pt or .safetensors)."
    ),
    encoder_weights: Path = typer.Option(None, help="Local pretrained encoder state dict."),
    colors: str = typer.Option(None, help="One colour per class: '#000000;#ff0000' or r/g/b;..."),
    dtype: str = typer.Option(
        "uint8", help="Input pixel dtype: uint8, uint16, int16, float32 or float64."
    ),
    low: str = typer.Option(
        None, help="Value scaled to 0, one or one per band (default: the dtype's minimum)."
    ),
    high: str = typer.Option(
        None, help="Value scaled to 1, one or one per band (default: the dtype's maximum)."
    ),
    mean: str = typer.Option(None, help="Mean of the scaled [0, 1] values, per band (0.5)."),
    std: str = typer.Option(None, help="Std of the scaled [0, 1] values, per band (0.25)."),
    stretch: str = typer.Option(
        None,
        help="Percentiles low,high (e.g. 2,98) computed over each scene instead of --low/--high.",
    ),
    binary: bool = typer.Option(False, "--binary", help="One sigmoid output (2 classes)."),
    gsd: float = typer.Option(None, help="Ground sample distance (m) the model is meant for."),
    tile: int = typer.Option(512, help="Default tile size for prediction."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
) -> None:
    """Write a model file: random weights, or WEIGHTS trained elsewhere with SMP."""
    names = tuple(split_list(classes))
    palette = tuple(parse_color(c) for c in colors.split(";")) if colors else ()
    percentiles = check_stretch(parse_numbers(stretch, "stretch"))
    given = {"low": low, "high": high, "mean": mean, "std": std}
    scaling = {name: parse_numbers(text, name) for name, text in given.items()}
    norm = declared_normalization(dtype, bands, stretch=percentiles, **scaling)
    contract = ModelContract(
        arch=arch,
        encoder=encoder,
        bands=bands,
        dtype=dtype,
        classes=names,
        colors=palette,
        mode="binary" if binary else "multiclass",
        gsd=gsd,
        tile_size=tile,
        normalization=norm,
        stretch=percentiles,
    )
    path = create_model(
        out, contract, weights=weights, encoder_weights=encoder_weights, overwrite=overwrite
    )
    console.print(
        f"wrote {path} ({arch}/{encoder}, {bands} bands of {dtype}, classes: {', '.join(names)})"
    )
