"""Provenance: a STAC Item beside each scene's outputs, and the input fingerprint it records.

The item (``<stem>.stac.json``) says what was made from what: the input and its fingerprint,
the model file's hash and contract, the parameters, software versions, the class table
(classification extension), the grid (projection extension), the footprint in WGS84, and assets
pointing at the class COG, confidence COG, polygon layers and quicklook. GIS catalogs
(stac-fastapi, pgstac, QGIS's STAC browser) can index it as it is.

It is written last and atomically, so its presence means the outputs are complete; the batch
runner compares its recorded fingerprint, model hash and parameters to decide what to re-run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.conventions import NODATA_CLASS
from geoseg.io.files import atomic_output, is_virtual_path
from geoseg.io.raster import raster_grid

if TYPE_CHECKING:
    from geoseg.models.contract import ModelContract

STAC_VERSION = "1.0.0"
EXTENSIONS = {
    "classification": "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
    "projection": "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "processing": "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
}
RECORD_SUFFIX = ".stac.json"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
VECTOR_TYPES = {
    ".gpkg": "application/geopackage+sqlite3",
    ".geojson": "application/geo+json",
    ".fgb": "application/vnd.flatgeobuf",
    ".parquet": "application/vnd.apache.parquet",
    ".shp": "application/x-shapefile",
}
SOFTWARE = (
    "geoseg",
    "torch",
    "segmentation-models-pytorch",
    "numpy",
    "rasterio",
    "shapely",
    "pyogrio",
)
FULL_HASH_LIMIT = 8 << 20
"""Files up to this size are hashed whole; larger ones by their first and last MiB."""
EDGE_BYTES = 1 << 20


def fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A cheap identity of an input file, recorded in the STAC item and compared on the next run.

    Files up to :data:`FULL_HASH_LIMIT` bytes: size and the SHA-256 of the whole file (exact).
    Larger files: size, modification time (ns) and the SHA-256 of the first and last MiB, so a
    multi-GB scene costs two reads of 1 MiB; the mtime catches edits in the middle. A GDAL URL
    (``/vsicurl/``, ``s3://``) is taken as immutable: its fingerprint is the URL itself.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.bin"
    >>> _ = path.write_bytes(b"abc")
    >>> fingerprint(path)["sha256"][:12]
    'ba7816bf8f01'
    """
    text = os.fspath(path)
    if is_virtual_path(text):
        return {"url": text}
    stat = os.stat(text)
    digest = hashlib.sha256()
    with open(text, "rb") as fh:
        if stat.st_size <= FULL_HASH_LIMIT:
            digest.update(fh.read())
            return {"size": stat.st_size, "sha256": digest.hexdigest()}
        digest.update(fh.read(EDGE_BYTES))
        fh.seek(-EDGE_BYTES, os.SEEK_END)
        digest.update(fh.read(EDGE_BYTES))
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256_head_tail": digest.hexdigest(),
    }


def software_versions() -> dict[str, str]:
    """Versions of Python, GDAL and the packages that shape the result."""
    import rasterio

    versions = {"python": platform.python_version(), "gdal": rasterio.__gdal_version__}
    for name in SOFTWARE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def class_table(contract: ModelContract) -> list[dict[str, Any]]:
    """``classification:classes`` entries: value, machine name, title, colour; nodata last."""
    classes = [
        {"value": i, "name": _machine_name(name), "title": name, "color_hint": _hex(color)}
        for i, (name, color) in enumerate(zip(contract.classes, contract.colors, strict=True))
    ]
    return [*classes, {"value": NODATA_CLASS, "name": "nodata", "title": "no data", "nodata": True}]


def _machine_name(name: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in name) or "_"


def _hex(color: Sequence[int]) -> str:
    return "".join(f"{int(v):02X}" for v in color[:3])


@dataclass(frozen=True)
class ModelInfo:
    """The model as the record names it: catalog name, file, hash and contract."""

    name: str
    path: str
    sha256: str
    contract: ModelContract

    def as_json(self) -> dict[str, Any]:
        c = self.contract
        return {
            "name": self.name,
            "href": self.path,
            "sha256": self.sha256,
            "arch": c.arch,
            "encoder": c.encoder,
            "bands": c.bands,
            "dtype": c.dtype,
            "mode": c.mode,
            "tile_size": c.tile_size,
            "gsd": c.gsd,
        }


def scene_item(
    item_id: str,
    classes_path: Path,
    *,
    source: str,
    source_fingerprint: Mapping[str, Any],
    model: ModelInfo,
    parameters: Mapping[str, Any],
    outputs: Sequence[Path],
    areas_ha: Mapping[str, float],
    extra: Mapping[str, Any] | None = None,
    created: dt.datetime | None = None,
) -> dict[str, Any]:
    """A STAC Item describing one scene's outputs (all in ``classes_path``'s folder).

    Parameters
    ----------
    item_id
        Unique id of the item (e.g. the catalog's scene id).
    classes_path
        The class COG; its grid gives the ``proj:`` fields and the footprint.
    source, source_fingerprint
        The input and its :func:`fingerprint`.
    model
        Model name, file, hash and contract (the class table comes from it).
    parameters
        The options that shape the result (compared on the next run).
    outputs
        Every other product (confidence COG, polygon layers, quicklook), linked as assets.
    areas_ha
        Hectares per class.
    extra
        More properties (``geoseg:`` prefixed), e.g. execution options or tags.

    ``datetime`` is the processing time: geoseg does not know when the input was acquired.
    Asset hrefs are relative to the item, so the folder can be moved or synced as a whole.
    """
    grid = raster_grid(classes_path)
    crs, transform, shape = grid.crs, grid.transform, grid.shape
    created = created or dt.datetime.now(dt.UTC)
    stamp = created.isoformat().replace("+00:00", "Z")
    geometry, bbox = grid.footprint_wgs84() if crs else (None, None)
    properties: dict[str, Any] = {
        "datetime": stamp,
        "created": stamp,
        "proj:epsg": crs.to_epsg() if crs else None,
        "proj:shape": list(shape),
        "proj:transform": list(transform)[:6],
        "processing:datetime": stamp,
        "processing:lineage": f"segmented by geoseg with model {model.name} ({model.contract.arch}/"
        f"{model.contract.encoder})",
        "processing:software": software_versions(),
        "geoseg:input": {"href": source, "fingerprint": dict(source_fingerprint)},
        "geoseg:model": model.as_json(),
        "geoseg:parameters": dict(parameters),
        "geoseg:area_ha": {k: round(v, 6) for k, v in areas_ha.items()},
        **(extra or {}),
    }
    if properties["proj:epsg"] is None and crs:
        properties["proj:wkt2"] = crs.to_wkt()
    item: dict[str, Any] = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": list(EXTENSIONS.values()),
        "id": item_id,
        "geometry": geometry,
        "properties": properties,
        "links": [{"rel": "derived_from", "href": _href(source), "title": "input scene"}],
        "assets": _assets(classes_path, outputs, model.contract),
    }
    if bbox is not None:
        item["bbox"] = bbox
    return item


def _href(source: str) -> str:
    return source if is_virtual_path(source) else Path(source).resolve().as_uri()


def _assets(classes: Path, outputs: Sequence[Path], contract: ModelContract) -> dict[str, Any]:
    assets: dict[str, Any] = {
        "classes": {
            "href": f"./{classes.name}",
            "type": COG_TYPE,
            "title": "class raster",
            "roles": ["data"],
            "classification:classes": class_table(contract),
        }
    }
    for path in outputs:
        key, asset = _asset(path)
        assets[key] = {"href": f"./{path.name}", **asset}
    return assets


def _asset(path: Path) -> tuple[str, dict[str, Any]]:
    if path.suffix == ".tif" and path.stem.endswith("_confidence"):
        return "confidence", {"type": COG_TYPE, "title": "confidence (%)", "roles": ["data"]}
    if path.suffix == ".png":
        return "thumbnail", {"type": "image/png", "title": "quicklook", "roles": ["thumbnail"]}
    media = VECTOR_TYPES.get(path.suffix, "application/octet-stream")
    return f"polygons_{path.suffix.lstrip('.')}", {
        "type": media,
        "title": "class polygons",
        "roles": ["data"],
    }


def record_path(out_dir: str | os.PathLike[str], stem: str) -> Path:
    """``<out_dir>/<stem>.stac.json``."""
    return Path(out_dir) / f"{stem}{RECORD_SUFFIX}"


def write_item(item: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a STAC item atomically (replacing an older one)."""
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(item, indent=2) + "\n", encoding="utf-8")
    return Path(path)


def read_item(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A STAC item, or None when missing or unreadable (then the outputs count as incomplete)."""
    try:
        item = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return item if isinstance(item, dict) and item.get("type") == "Feature" else None


def asset_paths(item: Mapping[str, Any], folder: str | os.PathLike[str]) -> list[Path]:
    """Local paths of an item's assets (hrefs are relative to the item's folder)."""
    return [Path(folder) / a["href"] for a in item.get("assets", {}).values()]
