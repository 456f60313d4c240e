"""Streaming vector output: record batches in, one complete file (and QGIS style) out.

GDAL's vector drivers take an Arrow stream (``pyogrio.raw.write_arrow``), so GeoPackage (in
transactions), GeoJSON, FlatGeobuf and Shapefile are all written batch by batch from a
generator, never from a table held whole; GeoParquet is written with ``pyarrow`` one row group
per batch. Everything goes to a temporary name beside the target and is renamed into place only
when complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyproj

from geoseg.errors import InvalidInputError, choice_error
from geoseg.io.files import atomic_output
from geoseg.io.qgis import categorized_qml, categorized_sld, write_gpkg_style
from geoseg.options import VECTOR_FORMATS

OGR_DRIVERS = {"gpkg": "GPKG", "geojson": "GeoJSON", "fgb": "FlatGeobuf", "shp": "ESRI Shapefile"}
DATASET_OPTIONS = {"gpkg": {"VERSION": "1.2"}}
"""GeoPackage 1.2: what GDAL >= 2.2 and QGIS 3.x open without a warning (GDAL 3.6 writes 1.2 by
default, newer GDAL 1.4, which older readers flag as an unknown version)."""
SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg")
BATCH_FEATURES = 10_000
"""Features per written batch (a GeoPackage transaction, a Parquet row group)."""

SCHEMA = pa.schema(
    [
        ("class_id", pa.int32()),
        ("class_name", pa.string()),
        ("area_m2", pa.float64()),
        ("geometry", pa.binary()),  # WKB
    ]
)
"""The fields of every vector output."""

Rgb = Sequence[int]


def resolve_output(out_path: str | os.PathLike[str], vector_format: str | None) -> tuple[str, Path]:
    """The format (from ``vector_format`` or the suffix; no suffix: GeoPackage) and the path.

    Examples
    --------
    >>> resolve_output("fields.fgb", None)
    ('fgb', PosixPath('fields.fgb'))
    >>> resolve_output("fields", None)
    ('gpkg', PosixPath('fields.gpkg'))
    """
    out = Path(out_path)
    suffix = out.suffix.lower()
    if vector_format is None:
        by_suffix = {s: name for name, s in VECTOR_FORMATS.items()}
        if not suffix:
            return "gpkg", out.with_suffix(".gpkg")
        if suffix not in by_suffix:
            raise choice_error("vector format", out.name, list(VECTOR_FORMATS))
        return by_suffix[suffix], out
    name = vector_format.lower()
    if name not in VECTOR_FORMATS:
        raise choice_error("vector format", vector_format, list(VECTOR_FORMATS))
    if suffix != VECTOR_FORMATS[name]:
        raise InvalidInputError(
            f"{out}: the suffix does not match vector format {name!r}; "
            f"name it {out.with_suffix(VECTOR_FORMATS[name]).name}"
        )
    return name, out


def rebatch(
    batches: Iterable[pa.RecordBatch], rows: int = BATCH_FEATURES
) -> Iterator[pa.RecordBatch]:
    """Join small batches into batches of at least ``rows`` records (the last may be smaller)."""
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.concat_batches(held)
            held, count = [], 0
    if count:
        yield pa.concat_batches(held)


class _RememberError:
    """Keeps an exception raised while GDAL pulls batches (GDAL reports any as a RuntimeError)."""

    def __init__(self, batches: Iterable[pa.RecordBatch]) -> None:
        self.batches = batches
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self.batches
        except BaseException as exc:
            self.error = exc
            raise


def write_ogr(
    batches: Iterable[pa.RecordBatch],
    path: Path,
    vector_format: str,
    layer: str,
    crs: pyproj.CRS | None,
) -> None:
    """Stream batches in :data:`SCHEMA` into one polygon layer of a GDAL vector file."""
    from pyogrio.raw import write_arrow  # GDAL vector drivers: imported when first needed

    stream = _RememberError(batches)
    reader = pa.RecordBatchReader.from_batches(SCHEMA, iter(stream))
    try:
        write_arrow(
            reader,
            path,
            layer=layer,
            driver=OGR_DRIVERS[vector_format],
            geometry_name="geometry",
            geometry_type="Polygon",
            crs=None if crs is None else crs.to_wkt(),
            encoding="UTF-8" if vector_format == "shp" else None,
            layer_options={"RFC7946": "YES"} if vector_format == "geojson" else None,
            dataset_options=DATASET_OPTIONS.get(vector_format),
        )
    except Exception:
        if stream.error is not None:
            raise stream.error from None
        raise


def write_parquet(batches: Iterable[pa.RecordBatch], path: Path, crs: pyproj.CRS | None) -> None:
    """Stream batches in :data:`SCHEMA` into a GeoParquet 1.1 file, one row group per batch."""
    column = {
        "encoding": "WKB",
        "geometry_types": ["Polygon"],
        "orientation": "counterclockwise",
        "crs": None if crs is None else crs.to_json_dict(),  # null: unknown (absent: CRS84)
    }
    geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
    schema = SCHEMA.with_metadata({"geo": json.dumps(geo)})
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch)


def write_vector(
    batches: Iterable[pa.RecordBatch],
    out: Path,
    vector_format: str,
    crs: pyproj.CRS | None,
    style: tuple[Mapping[int, str], Mapping[int, Rgb]],
    overwrite: bool = False,
) -> None:
    """Write the batches and a QGIS style, atomically.

    Parameters
    ----------
    batches
        Record batches in :data:`SCHEMA`, coordinates in ``crs`` (GeoJSON: already in WGS84).
    out, vector_format
        Target path and one of :data:`VECTOR_FORMATS`.
    crs
        The raster's CRS (ignored for GeoJSON, which is always EPSG:4326).
    style
        Names and RGB colours of the class ids to style; GeoPackage stores the style in its
        ``layer_styles`` table, the other formats get a ``.qml`` side-car.
    overwrite
        Replace an existing output.
    """
    layer = out.stem
    qml = categorized_qml(*style)
    extra: tuple[str, ...] = () if vector_format == "gpkg" else (".qml",)
    extra += SHAPEFILE_PARTS if vector_format == "shp" else ()
    with atomic_output(out, overwrite, extra) as tmp:
        if vector_format == "parquet":
            write_parquet(batches, tmp, crs)
        else:
            target = pyproj.CRS("EPSG:4326") if vector_format == "geojson" else crs
            write_ogr(batches, tmp, vector_format, layer, target)
        if vector_format == "gpkg":
            write_gpkg_style(tmp, layer, qml, categorized_sld(layer, *style))
        else:
            tmp.with_suffix(".qml").write_text(qml, encoding="utf-8")
