"""QGIS styles for class polygons: a categorized renderer on ``class_id``, one colour per class.

QGIS opens a layer coloured when it finds a default style: in a GeoPackage, a row of the
``layer_styles`` table (the schema QGIS itself creates) with ``useAsDefault = 1``; for any other
file, a side-car ``<name>.qml`` next to it. Nothing here needs QGIS.

Examples
--------
>>> qml = categorized_qml({1: "water", 2: "forest"}, {1: (0, 0, 255), 2: (0, 128, 0)})
>>> 'attr="class_id"' in qml and 'v="0,128,0,255"' in qml
True
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from xml.sax.saxutils import quoteattr

QGIS_FIELD = "class_id"
STYLE_NAME = "geoseg classes"

LAYER_STYLES_DDL = """
CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256),
    f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
    useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""
"""The table QGIS creates when a style is saved into a GeoPackage (ISO-8601 ``update_time``)."""

Rgb = Sequence[int]


def _rgb(color: Rgb) -> str:
    return f"{int(color[0])},{int(color[1])},{int(color[2])}"


def _fill_symbol(name: int, color: Rgb) -> str:
    props = {
        "color": f"{_rgb(color)},255",
        "outline_color": "35,35,35,255",
        "outline_style": "solid",
        "outline_width": "0.1",
        "outline_width_unit": "MM",
        "style": "solid",
    }
    # QGIS >= 3.26 reads the Option map, older 3.x versions the legacy prop elements
    options = "".join(f'<Option name="{k}" value="{v}" type="QString"/>' for k, v in props.items())
    legacy = "".join(f'<prop k="{k}" v="{v}"/>' for k, v in props.items())
    lines = f'<Option type="Map">{options}</Option>{legacy}'
    return (
        f'<symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">'
        f'<layer class="SimpleFill" enabled="1" locked="0" pass="0">{lines}</layer></symbol>'
    )


def categorized_qml(names: Mapping[int, str], colors: Mapping[int, Rgb]) -> str:
    """A minimal QGIS 3 style: categorized fill symbols on ``class_id``.

    Parameters
    ----------
    names, colors
        Label and RGB colour of each class id that gets a category.

    Examples
    --------
    >>> categorized_qml({3: "urban"}, {3: (200, 0, 0)}).count("<category ")
    1
    """
    ids = sorted(names)
    categories = "\n".join(
        f'      <category value="{i}" symbol="{k}" label={quoteattr(names[i])} render="true"/>'
        for k, i in enumerate(ids)
    )
    symbols = "\n".join(f"      {_fill_symbol(k, colors[i])}" for k, i in enumerate(ids))
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology">\n'
        f'  <renderer-v2 type="categorizedSymbol" attr="{QGIS_FIELD}" symbollevels="0"'
        ' enableorderby="0" forceraster="0">\n'
        f"    <categories>\n{categories}\n    </categories>\n"
        f"    <symbols>\n{symbols}\n    </symbols>\n"
        "  </renderer-v2>\n"
        "</qgis>\n"
    )


def categorized_sld(layer: str, names: Mapping[int, str], colors: Mapping[int, Rgb]) -> str:
    """The same style as an OGC SLD 1.1 document (for tools other than QGIS)."""
    rules = "".join(
        f"<se:Rule><se:Name>{_escape(names[i])}</se:Name><ogc:Filter><ogc:PropertyIsEqualTo>"
        f"<ogc:PropertyName>{QGIS_FIELD}</ogc:PropertyName><ogc:Literal>{i}</ogc:Literal>"
        "</ogc:PropertyIsEqualTo></ogc:Filter><se:PolygonSymbolizer><se:Fill>"
        f'<se:SvgParameter name="fill">{_hex(colors[i])}</se:SvgParameter></se:Fill>'
        "</se:PolygonSymbolizer></se:Rule>"
        for i in sorted(names)
    )
    return (
        '<StyledLayerDescriptor version="1.1.0" xmlns="http://www.opengis.net/sld"'
        ' xmlns:se="http://www.opengis.net/se" xmlns:ogc="http://www.opengis.net/ogc">'
        f"<NamedLayer><se:Name>{_escape(layer)}</se:Name><UserStyle><se:Name>{STYLE_NAME}"
        f"</se:Name><se:FeatureTypeStyle>{rules}</se:FeatureTypeStyle></UserStyle></NamedLayer>"
        "</StyledLayerDescriptor>"
    )


def _escape(text: str) -> str:
    return quoteattr(text)[1:-1]


def _hex(color: Rgb) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in color[:3])


def write_gpkg_style(gpkg: Path, layer: str, qml: str, sld: str = "") -> None:
    """Store ``qml`` as the default QGIS style of ``layer`` in a (closed) GeoPackage.

    Creates ``layer_styles`` when absent and registers it in ``gpkg_contents`` as an attribute
    table, without which QGIS's OGR provider does not look for it.
    """
    with closing(sqlite3.connect(gpkg)) as db, db:
        geometry_column = db.execute(
            "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)
        ).fetchone()[0]
        db.execute(LAYER_STYLES_DDL)
        db.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, "
            "last_change) VALUES ('layer_styles', 'attributes', 'layer_styles', "
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
        )
        db.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,))
        db.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
            "owner, ui) VALUES ('', '', ?, ?, ?, ?, ?, 1, 'Written by geoseg', '', NULL)",
            (layer, geometry_column, STYLE_NAME, qml, sld),
        )
