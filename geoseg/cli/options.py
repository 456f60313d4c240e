"""Options shared by several commands, declared once (like rasterio's ``rio/options.py``).

Flags exist only here and in the command modules; the library takes option bundles
(:mod:`geoseg.options`) and names options in its errors, which :func:`flag` turns into flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

FLAGS = {"vector_formats": "--vector-format"}
"""Options whose flag is not ``--`` + the option name with dashes."""


def flag(option: str) -> str:
    """The flag of an option, for error messages.

    Examples
    --------
    >>> flag("batch_size"), flag("vector_formats")
    ('--batch-size', '--vector-format')
    """
    return FLAGS.get(option, "--" + option.replace("_", "-"))


def split_list(text: str | None) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``.

    Examples
    --------
    >>> split_list("background, building,")
    ['background', 'building']
    """
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """``"4,3,2"`` -> ``(4, 3, 2)``; a typo is a usage error.

    Examples
    --------
    >>> parse_bands("4,3,2")
    (4, 3, 2)
    """
    if not text:
        return None
    try:
        return tuple(int(b) for b in split_list(text))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give 1-based band numbers like 1,2,3") from None


def parse_numbers(text: str | None, name: str) -> tuple[float, ...]:
    """``"0, 10000"`` -> ``(0.0, 10000.0)``; empty -> ``()``; a typo is a usage error.

    Examples
    --------
    >>> parse_numbers("0,1e4", "high"), parse_numbers(None, "low")
    ((0.0, 10000.0), ())
    """
    try:
        return tuple(float(v) for v in split_list(text))
    except ValueError:
        raise typer.BadParameter(f"{name} {text!r}: give numbers like 0,10000") from None


def option(default: Any, *names: str, help: str) -> Any:
    """A typer option (a thin alias, so shared options read as one table below)."""
    return typer.Option(default, *names, help=help)


DEVICE = option("auto", "--device", help="auto, cpu, cuda or cuda:N.")
TILE = option(None, "--tile", help="Tile size (multiple of 32); default: fastest for the scene.")
OVERLAP = option(None, "--overlap", help="Pixels shared by neighbouring tiles; default tile/8.")
BATCH_SIZE = option(4, "--batch-size", help="Tiles per model call.")
BLOCK_SIZE = option(None, "--block-size", help="Block size in pixels; default: from --memory-mb.")
MEMORY_MB = option(512, "--memory-mb", help="Memory for block buffers (MB); sets the block size.")
TTA = option(False, "--tta", help="Test-time augmentation (8 rotations/flips).")
BANDS = option(None, "--bands", help="1-based bands to use, e.g. 1,2,3 (default: all but alpha).")
NODATA = option(None, "--nodata", help="Nodata value when the file declares none.")
SIMPLIFY = option(0.0, "--simplify", help="Simplify polygons (metres), keeping shared borders.")
MIN_AREA = option(0.0, "--min-area", help="Drop regions smaller than this (m²).")
JSON = option(False, "--json", help="Print the result as one JSON document on stdout.")
OVERWRITE = option(False, "--overwrite", help="Replace existing outputs.")
CLASS_FIELD = option("class_name", "--class-field", help="Field of class names or ids (vectors).")
CLASSES = option(None, "--classes", help="Class names by id, background first: background,a,b.")
UNLABELED = option("background", "--unlabeled", help="Uncovered pixels: background or ignore.")
MODEL_OUT = option(..., "--out", "-o", help="Model file to write (.safetensors).")


def output_folder() -> Any:
    """``--out``: an output folder."""
    return typer.Option(..., "--out", "-o", help="Output folder.")


def as_path(value: str | None) -> Path | None:
    """An optional path argument."""
    return Path(value) if value else None


ARCHITECTURES_HELP = (
    "Architecture. SMP: unet, unetplusplus, manet, linknet, fpn, pspnet, deeplabv3, "
    "deeplabv3plus, pan, upernet, segformer, dpt. Classic: fcn32s, fcn16s, fcn8s, segnet, frrn, "
    "fcdensenet56, fcdensenet67, fcdensenet103, refinenet, gcn, icnet, enet."
)
ARCH = option("unet", "--arch", help=ARCHITECTURES_HELP)
ENCODER = option(
    "resnet18",
    "--encoder",
    help="SMP encoder (resnet18, resnet34, efficientnet-b0, tu-<timm name>); ignored by "
    "segnet, frrn, fcdensenet*, enet, which have their own.",
)
