"""Side-cars that make a class COG name its classes in every GIS client.

GDAL reads a ``<file>.aux.xml`` (PAM) beside any raster and lets it override what the file says.
After the COGs are committed, :func:`write_raster_styles` writes:

* ``<stem>_classes.tif.aux.xml``: a colour table with one entry per model class (a TIFF colour
  map always has 256 entries), the category names (``gdalinfo`` lists them as *Categories*) and
  a thematic raster attribute table (value, class name, pixel count, red, green, blue, alpha)
  that GDAL, QGIS and ArcGIS read;
* ``<stem>_classes.qml``: a QGIS paletted renderer labelled with the class names, which QGIS
  loads as the layer's default style;
* ``<stem>_confidence.qml``: a red-to-green colour ramp over 0-100 % for the confidence COG.

Nodata (255) stays out of the colour table: every client draws a declared nodata value
transparent. Each file is written atomically.

Examples
--------
>>> xml = class_pam_xml(["background", "water"], [(224, 224, 216), (0, 0, 255)])
>>> "<Category>water</Category>" in xml and xml.count("<Entry ") == 2
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from geoseg.io.files import atomic_output

Rgb = Sequence[int]

RAT_FIELDS = (
    ("Value", 0, 5),  # GFT_Integer, GFU_MinMax
    ("Class_Name", 2, 2),  # GFT_String, GFU_Name
    ("Count", 1, 1),  # GFT_Real, GFU_PixelCount (ArcGIS's convention)
    ("Red", 0, 6),
    ("Green", 0, 7),
    ("Blue", 0, 8),
    ("Alpha", 0, 9),
)
"""Raster attribute table columns: name, GDAL field type, GDAL field usage."""

CONFIDENCE_RAMP = (
    (0, "#d7191c", "0 %"),
    (25, "#fdae61", "25 %"),
    (50, "#ffffbf", "50 %"),
    (75, "#a6d96a", "75 %"),
    (100, "#1a9641", "100 %"),
)
"""Confidence colour stops: value (percent), colour, label."""

QML_HEAD = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def aux_path(raster: Path) -> Path:
    """GDAL's PAM side-car of a raster: ``<name>.aux.xml``."""
    return raster.with_name(raster.name + ".aux.xml")


def qml_path(raster: Path) -> Path:
    """The style QGIS loads by default for a raster: ``<stem>.qml``."""
    return raster.with_suffix(".qml")


def _hex(color: Rgb) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in color[:3])


def class_pam_xml(
    names: Sequence[str],
    colors: Sequence[Rgb],
    counts: Sequence[int] | None = None,
    description: str = "classes",
) -> str:
    """The PAM document of a class raster: colour table, category names, attribute table."""
    entries = "".join(f'<Entry c1="{c[0]}" c2="{c[1]}" c3="{c[2]}" c4="255"/>' for c in colors)
    categories = "".join(f"<Category>{escape(n)}</Category>" for n in names)
    return (
        '<PAMDataset>\n  <PAMRasterBand band="1">\n'
        f"    <Description>{escape(description)}</Description>\n"
        f"    <CategoryNames>{categories}</CategoryNames>\n"
        "    <ColorInterp>Palette</ColorInterp>\n"
        f"    <ColorTable>{entries}</ColorTable>\n"
        f"{attribute_table_xml(names, colors, counts)}"
        "  </PAMRasterBand>\n</PAMDataset>\n"
    )


def attribute_table_xml(
    names: Sequence[str], colors: Sequence[Rgb], counts: Sequence[int] | None = None
) -> str:
    """A thematic ``GDALRasterAttributeTable``: one row per class.

    Examples
    --------
    >>> rat = attribute_table_xml(["background", "water"], [(0, 0, 0), (0, 0, 255)], [10, 5])
    >>> "<Row index=\\"1\\"><F>1</F><F>water</F><F>5</F><F>0</F><F>0</F><F>255</F>" in rat
    True
    """
    fields = "".join(
        f'<FieldDefn index="{i}"><Name>{name}</Name><Type>{kind}</Type><Usage>{usage}</Usage>'
        "</FieldDefn>"
        for i, (name, kind, usage) in enumerate(RAT_FIELDS)
    )
    rows = []
    for i, (name, color) in enumerate(zip(names, colors, strict=True)):
        count = int(counts[i]) if counts is not None else 0
        values = [i, escape(name), count, *(int(v) for v in color[:3]), 255]
        cells = "".join(f"<F>{v}</F>" for v in values)
        rows.append(f'<Row index="{i}">{cells}</Row>')
    return (
        '    <GDALRasterAttributeTable tableType="thematic">'
        f"{fields}{''.join(rows)}</GDALRasterAttributeTable>\n"
    )


def _pipe(renderer: str) -> str:
    return (
        f'{QML_HEAD}<qgis version="3.22.0" styleCategories="Symbology">\n  <pipe>\n'
        f"{renderer}"
        '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
        '    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0"/>\n'
        '    <rasterresampler maxOversampling="2"/>\n'
        "  </pipe>\n  <blendMode>0</blendMode>\n</qgis>\n"
    )


def paletted_qml(names: Sequence[str], colors: Sequence[Rgb]) -> str:
    """A QGIS paletted renderer on band 1: one entry per class, labelled with its name.

    Examples
    --------
    >>> paletted_qml(["background", "water"], [(0, 0, 0), (0, 0, 255)]).count("<paletteEntry")
    2
    """
    entries = "".join(
        f'        <paletteEntry value="{i}" color="{_hex(c)}" alpha="255" label={quoteattr(n)}/>\n'
        for i, (n, c) in enumerate(zip(names, colors, strict=True))
    )
    return _pipe(
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" '
        'nodataColor="">\n      <rasterTransparency/>\n'
        f"      <colorPalette>\n{entries}      </colorPalette>\n    </rasterrenderer>\n"
    )


def confidence_qml() -> str:
    """A QGIS pseudocolour renderer for a confidence raster: red (0 %) to green (100 %)."""
    items = "".join(
        f'          <item value="{v}" color="{c}" alpha="255" label="{label}"/>\n'
        for v, c, label in CONFIDENCE_RAMP
    )
    return _pipe(
        '    <rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" alphaBand="-1" '
        'classificationMin="0" classificationMax="100" nodataColor="">\n'
        "      <rasterTransparency/>\n      <rastershader>\n"
        '        <colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" '
        'minimumValue="0" maximumValue="100" labelPrecision="0">\n'
        f"{items}        </colorrampshader>\n      </rastershader>\n    </rasterrenderer>\n"
    )


def _write_text(path: Path, text: str) -> Path:
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_raster_styles(
    classes_path: str | os.PathLike[str],
    names: Sequence[str],
    colors: Sequence[Rgb],
    *,
    counts: Sequence[int] | None = None,
    confidence_path: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write the class raster's PAM side-car and QGIS styles (see the module); returns them.

    Call it once the COGs are in place: a side-car describes a complete raster.

    Examples
    --------
    >>> write_raster_styles("out/s_classes.tif", ["background", "water"],
    ...                     [(0, 0, 0), (0, 0, 255)])  # doctest: +SKIP
    [PosixPath('out/s_classes.tif.aux.xml'), PosixPath('out/s_classes.qml')]
    """
    classes = Path(classes_path)
    written = [
        _write_text(aux_path(classes), class_pam_xml(names, colors, counts)),
        _write_text(qml_path(classes), paletted_qml(names, colors)),
    ]
    if confidence_path is not None:
        written.append(_write_text(qml_path(Path(confidence_path)), confidence_qml()))
    return written
