"""Colours for class names: a land-cover palette, and class tables read from a file.

A model without explicit colours gets them from :data:`LAND_COVER` by class name (``water`` is
blue, ``building`` red, ``road`` grey, ...); names it does not know get distinct colours by
position. ``geoseg train --classes-file`` reads a small class table (id, name, colour) with
:func:`read_classes_file`.

Examples
--------
>>> palette_colors(["background", "Water", "tree cover", "building", "thing"])[1:4]
((31, 120, 180), (34, 139, 34), (220, 20, 60))
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from geoseg.errors import GeosegError, InvalidInputError

Rgb = tuple[int, int, int]

BACKGROUND: Rgb = (224, 224, 216)
"""Background: a muted light grey, so the classes stand out."""

LAND_COVER: dict[str, Rgb] = {
    "background": BACKGROUND,
    "water": (31, 120, 180),
    "tree": (34, 139, 34),
    "building": (220, 20, 60),
    "road": (128, 128, 128),
    "crop": (255, 215, 0),
    "grass": (152, 230, 120),
    "bare": (166, 110, 60),
    "shrub": (107, 142, 35),
    "wetland": (0, 150, 160),
    "snow": (240, 248, 255),
    "cloud": (250, 250, 250),
    "shadow": (60, 60, 60),
    "vehicle": (255, 0, 255),
    "clutter": (255, 140, 0),
}
"""The land-cover palette, keyed by canonical class name."""

SYNONYMS: dict[str, str] = {
    **{w: "water" for w in ("river", "lake", "sea", "ocean", "pond", "waterbody", "stream")},
    **{w: "tree" for w in ("trees", "forest", "woodland", "wood", "canopy")},
    **{w: "building" for w in ("buildings", "house", "roof", "urban", "built")},
    **{w: "road" for w in ("roads", "street", "pavement", "impervious", "parking", "railway")},
    **{w: "crop" for w in ("crops", "cropland", "agriculture", "farmland", "field", "fields")},
    **{w: "grass" for w in ("grassland", "meadow", "lawn", "pasture", "vegetation", "low")},
    **{w: "bare" for w in ("soil", "sand", "rock", "barren", "dirt")},
    **{w: "shrub" for w in ("shrubs", "scrub", "bush", "shrubland")},
    **{w: "wetland" for w in ("marsh", "swamp", "mangrove", "bog")},
    **{w: "snow" for w in ("ice", "glacier")},
    **{w: "vehicle" for w in ("car", "cars", "vehicles", "truck")},
    "unlabeled": "background",
    "nodata": "background",
    "other": "clutter",
}
"""Other words for the palette's names (a class name matches by any of its words)."""

FALLBACK: tuple[Rgb, ...] = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 225, 25),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
)
"""Distinct colours by position, for names the palette does not know."""


def palette_key(name: str) -> str | None:
    """The palette entry a class name matches (whole name first, then any word), or None.

    Examples
    --------
    >>> palette_key("Bare_Soil"), palette_key("low vegetation"), palette_key("x")
    ('bare', 'grass', None)
    """
    text = name.strip().lower().replace("_", " ").replace("-", " ")
    words = [text, *text.split()]
    for word in words:
        key = word if word in LAND_COVER else SYNONYMS.get(word)
        if key:
            return key
    return None


def palette_colors(classes: int | Sequence[str]) -> tuple[Rgb, ...]:
    """One colour per class: the palette's by name, else a distinct one by position.

    An integer gives colours for that many unnamed classes (background first).

    Examples
    --------
    >>> palette_colors(2)
    ((224, 224, 216), (230, 25, 75))
    """
    if isinstance(classes, int):
        names = ["background", *(f"class_{i}" for i in range(1, classes))]
    else:
        names = list(classes)
    colors = []
    for i, name in enumerate(names):
        key = palette_key(name)
        colors.append(LAND_COVER[key] if key else FALLBACK[i % len(FALLBACK)])
    return tuple(colors)


def read_classes_file(path: str | os.PathLike[str]) -> tuple[tuple[str, ...], tuple[Rgb, ...]]:
    """Class names by id and their colours from a YAML or CSV class table.

    CSV: a header ``id,name,color`` (colour optional per row: ``#rrggbb`` or ``r/g/b``); YAML: a
    list of ``{id, name, color}`` mappings. Ids must be 0, 1, 2, ... (0 is background, in any
    order in the file); a missing colour comes from the palette.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "classes.csv"
    >>> _ = path.write_text("id,name,color\\n1,water,#0000ff\\n0,background,\\n")
    >>> read_classes_file(path)
    (('background', 'water'), ((224, 224, 216), (0, 0, 255)))
    """
    from geoseg.io.files import require_file

    require_file(path, "classes file")
    rows = _yaml_rows(path) if Path(path).suffix.lower() in (".yaml", ".yml") else _csv_rows(path)
    by_id = {_row_id(path, row): row for row in rows}
    if sorted(by_id) != list(range(len(by_id))) or len(by_id) < 2:
        raise InvalidInputError(
            f"{path}: class ids {sorted(by_id)} must be 0, 1, 2, ... (0 is background, at least "
            "two classes); fix `classes_file`",
            option="classes_file",
        )
    names = tuple(str(by_id[i].get("name") or "").strip() for i in range(len(by_id)))
    if not all(names):
        raise InvalidInputError(
            f"{path}: every class needs a name; fix `classes_file`", option="classes_file"
        )
    defaults = palette_colors(names)
    colors = tuple(_row_color(path, by_id[i], defaults[i]) for i in range(len(names)))
    return names, colors


def _csv_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [{str(k).strip().lower(): v for k, v in row.items() if k} for row in rows]


def _yaml_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and "classes" in data:
        data = data["classes"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InvalidInputError(
            f"{path}: expected a list of {{id, name, color}} entries; fix `classes_file`",
            option="classes_file",
        )
    return data


def _row_id(path: str | os.PathLike[str], row: dict[str, Any]) -> int:
    try:
        return int(str(row.get("id", "")).strip())
    except ValueError:
        raise InvalidInputError(
            f"{path}: class id {row.get('id')!r} is not an integer; fix `classes_file`",
            option="classes_file",
        ) from None


def _row_color(path: str | os.PathLike[str], row: dict[str, Any], default: Rgb) -> Rgb:
    from geoseg.models.contract import parse_color

    text = str(row.get("color") or row.get("colour") or "").strip()
    if not text:
        return default
    try:
        return parse_color(text)
    except GeosegError as exc:
        raise InvalidInputError(
            f"{path}: {exc}; fix `classes_file`", option="classes_file"
        ) from None
