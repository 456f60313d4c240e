"""``geoseg model-edit``: rename classes and change their colours; the weights stay as they are."""

from __future__ import annotations

from pathlib import Path

import typer

from geoseg.cli._app import app, console
from geoseg.errors import InvalidInputError, ModelFileError
from geoseg.models.contract import parse_color
from geoseg.models.edit import edit_contract, weights_sha256


def parse_pairs(items: list[str] | None, option: str) -> dict[str, str]:
    """``["a=b", "c=d"]`` -> ``{"a": "b", "c": "d"}``.

    Examples
    --------
    >>> parse_pairs(["water=lake", " tree = forest "], "rename")
    {'water': 'lake', 'tree': 'forest'}
    """
    pairs = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise InvalidInputError(f"{item!r} is not NAME=VALUE; fix `{option}`", option=option)
        pairs[name.strip()] = value.strip()
    return pairs


@app.command("model-edit")
def model_edit(
    model: Path = typer.Argument(..., help="geoseg model file to edit."),
    rename: list[str] = typer.Option(None, "--rename", help="Rename a class: old=new (repeat)."),
    color: list[str] = typer.Option(
        None, "--color", help="Colour a class: name=#rrggbb or name=r/g/b (repeat; new names)."
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Write here instead of in place."),
) -> None:
    """Change class names and colours in MODEL's contract; the weights are copied byte for byte."""
    colors = {k: parse_color(v) for k, v in parse_pairs(color, "color").items()}
    before = weights_sha256(model)
    path = edit_contract(model, parse_pairs(rename, "rename"), colors, out)
    if weights_sha256(path) != before:  # pragma: no cover - a broken edit_contract
        raise ModelFileError(f"{path}: the weights changed while editing; restore {model}")
    console.print(f"wrote {path} (weights unchanged, sha256 {before[:16]}...)")
