"""Provenance: a STAC Item beside each scene's outputs, and the input fingerprint it records.

The item (``<stem>.stac.json``), built with `pystac <https://pystac.readthedocs.io>`_, says what
was made from what: the input and its fingerprint, the model (hash, contract, and the STAC
Machine Learning Model extension: ``mlm:`` name, architecture, input bands and scaling, output
classes), the parameters, software versions, the grid (``proj:``), the class table
(``classification:``), band nodata and dtype (``raster:bands``), each file's size and checksum
(``file:``, a multihash), and the footprint of the *valid* pixels in WGS84. Every file of the
scene is an asset, side-cars included (``.aux.xml``, ``.qml``, a Shapefile's parts), with hrefs
relative to the item, so the folder can be moved or synced as a whole. GIS catalogs
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
from geoseg.io.footprint import valid_footprint_wgs84
from geoseg.io.raster import raster_grid

if TYPE_CHECKING:
    from geoseg.models.contract import ModelContract

EXTENSIONS = {
    "classification": "https://stac-extensions.github.io/classification/v2.0.0/schema.json",
    "projection": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "file": "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "mlm": "https://stac-extensions.github.io/mlm/v1.4.0/schema.json",
    "processing": "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
}
"""The extensions every item declares (schemas vendored in ``tests/data/stac_schemas``)."""
MULTIHASH_SHA256 = "1220"
"""Multihash prefix of a SHA-256 digest (``file:checksum``): code 0x12, length 0x20."""
RECORD_SUFFIX = ".stac.json"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
VECTOR_TYPES = {
    ".gpkg": "application/geopackage+sqlite3",
    ".geojson": "application/geo+json",
    ".fgb": "application/vnd.flatgeobuf",
    ".parquet": "application/vnd.apache.parquet",
    ".shp": "application/x-shapefile",
}
SIDE_CAR_TYPES = {
    ".xml": ("application/xml", "GDAL PAM: colour table, category names, attribute table"),
    ".qml": ("application/xml", "QGIS style"),
    ".shx": ("application/octet-stream", "Shapefile index"),
    ".dbf": ("application/dbase", "Shapefile attributes"),
    ".prj": ("text/plain", "Shapefile CRS"),
    ".cpg": ("text/plain", "Shapefile encoding"),
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
        The class COG; its grid gives the ``proj:`` fields, its valid pixels the footprint.
    source, source_fingerprint
        The input and its :func:`fingerprint`.
    model
        Model name, file, hash and contract (class table and ``mlm:`` fields come from it).
    parameters
        The options that shape the result (compared on the next run).
    outputs
        Every other product (confidence COG, polygon layers, quicklook), linked as assets with
        their side-cars (:func:`side_files`).
    areas_ha
        Hectares per class.
    extra
        More properties (``geoseg:`` prefixed), e.g. execution options or tags.

    ``datetime`` is the processing time: geoseg does not know when the input was acquired.
    Hrefs are relative to the item (the input too, when it is a local file).

    Examples
    --------
    >>> item = scene_item("s", Path("out/s_classes.tif"), source="s.tif",
    ...                   source_fingerprint={}, model=info, parameters={}, outputs=[],
    ...                   areas_ha={})  # doctest: +SKIP
    >>> item["assets"]["classes"]["href"]  # doctest: +SKIP
    './s_classes.tif'
    """
    import pystac

    created = created or dt.datetime.now(dt.UTC)
    stamp = created.isoformat().replace("+00:00", "Z")
    geometry, bbox = valid_footprint_wgs84(classes_path)
    item = pystac.Item(
        item_id,
        json.loads(json.dumps(geometry)) if geometry else None,
        bbox,
        created,
        properties={"created": stamp, **_properties(classes_path, model, stamp)},
        stac_extensions=list(EXTENSIONS.values()),
    )
    item.properties.update(
        {
            "geoseg:input": {"href": source, "fingerprint": dict(source_fingerprint)},
            "geoseg:model": model.as_json(),
            "geoseg:parameters": dict(parameters),
            "geoseg:area_ha": {k: round(v, 6) for k, v in areas_ha.items()},
            **(extra or {}),
        }
    )
    folder = classes_path.parent
    item.add_link(pystac.Link("derived_from", _href(source, folder), title="input scene"))
    for key, asset in _assets(classes_path, outputs, model.contract).items():
        item.add_asset(key, asset)
    return dict(item.to_dict(include_self_link=False, transform_hrefs=False))


def _properties(classes_path: Path, model: ModelInfo, stamp: str) -> dict[str, Any]:
    """``proj:``, ``processing:`` and ``mlm:`` properties."""
    grid = raster_grid(classes_path)
    crs = grid.crs
    epsg = crs.to_epsg() if crs else None
    properties: dict[str, Any] = {
        "proj:code": f"EPSG:{epsg}" if epsg else None,
        "proj:shape": list(grid.shape),
        "proj:transform": list(grid.transform)[:6],
        "processing:datetime": stamp,
        "processing:lineage": f"segmented by geoseg with model {model.name} ({model.contract.arch}/"
        f"{model.contract.encoder})",
        "processing:software": software_versions(),
        **mlm_properties(model),
    }
    if epsg is None and crs:
        properties["proj:wkt2"] = crs.to_wkt()
    return properties


def mlm_properties(model: ModelInfo) -> dict[str, Any]:
    """The model in the STAC MLM extension (v1.4): name, architecture, input, output classes.

    The contract's scaling, ``clip((x - low) / (high - low), 0, 1)`` then ``(x - mean) / std``,
    is one ``clip`` to ``[low, high]`` followed by a ``z-score`` with mean ``low + mean * span``
    and standard deviation ``std * span`` in the input's units (MLM lists one object per band).
    """
    c = model.contract
    norm = c.normalization
    assert norm is not None
    names = list(c.band_names) or [f"band_{i}" for i in range(1, c.bands + 1)]
    scaling = []
    for low, high, mean, std in zip(norm.low, norm.high, norm.mean, norm.std, strict=True):
        span = high - low
        scaling.append({"type": "z-score", "mean": low + mean * span, "stddev": std * span})
    data_type = c.dtype if c.dtype in _MLM_TYPES else "float32"
    return {
        "mlm:name": model.name,
        "mlm:architecture": f"{c.arch} ({c.encoder} encoder)",
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "pytorch",
        "mlm:input": [
            {
                "name": "image",
                "bands": names,
                "input": {
                    "shape": [-1, c.bands, c.tile_size, c.tile_size],
                    "dim_order": ["batch", "channel", "height", "width"],
                    "data_type": data_type,
                },
                "value_scaling": scaling,
                "resize_type": None,
            }
        ],
        "mlm:output": [
            {
                "name": "classes",
                "tasks": ["semantic-segmentation"],
                "result": {
                    "shape": [-1, c.num_outputs, c.tile_size, c.tile_size],
                    "dim_order": ["batch", "channel", "height", "width"],
                    "data_type": "float32",
                },
                "classification:classes": class_table(c)[:-1],
                "post_processing_function": None,
            }
        ],
    }


_MLM_TYPES = ("uint8", "uint16", "int16", "float32", "float64")


def _href(source: str, folder: Path) -> str:
    """The input as the item links it: a URL as it is, a local file relative to the item."""
    if is_virtual_path(source):
        return source
    return Path(os.path.relpath(Path(source).resolve(), folder.resolve())).as_posix()


def _assets(classes: Path, outputs: Sequence[Path], contract: ModelContract) -> dict[str, Any]:
    """Every file as a :class:`pystac.Asset`, keyed by role, side-cars after their dataset."""
    import pystac

    assets: dict[str, Any] = {}
    for path in [classes, *outputs]:
        key, fields = _describe(path, classes, contract)
        extra = {**file_fields(path), **fields.pop("extra_fields", {})}
        assets[key] = pystac.Asset(f"./{path.name}", extra_fields=extra, **fields)
        for side in side_files(path):
            media, title = SIDE_CAR_TYPES[side.suffix]
            roles = ["metadata", "style"] if side.suffix == ".qml" else ["metadata"]
            part = "aux" if side.suffix == ".xml" else side.suffix.lstrip(".")
            assets[f"{key}_{part}"] = pystac.Asset(
                f"./{side.name}",
                title,
                media_type=media,
                roles=roles,
                extra_fields=file_fields(side),
            )
    return assets


def _describe(path: Path, classes: Path, contract: ModelContract) -> tuple[str, dict[str, Any]]:
    """Asset key and fields (title, media type, roles, band fields) of a product."""
    if path == classes:
        band = {"nodata": NODATA_CLASS, "data_type": "uint8"}
        return "classes", {
            "title": "class raster",
            "media_type": COG_TYPE,
            "roles": ["data"],
            "extra_fields": {
                "raster:bands": [band],
                "classification:classes": class_table(contract),
            },
        }
    if path.suffix == ".tif" and path.stem.endswith("_confidence"):
        band = {"nodata": NODATA_CLASS, "data_type": "uint8", "unit": "percent"}
        return "confidence", {
            "title": "confidence (%)",
            "media_type": COG_TYPE,
            "roles": ["data"],
            "extra_fields": {"raster:bands": [band]},
        }
    if path.suffix == ".png":
        return "thumbnail", {
            "title": "quicklook",
            "media_type": "image/png",
            "roles": ["thumbnail"],
        }
    media = VECTOR_TYPES.get(path.suffix, "application/octet-stream")
    key = f"polygons_{path.suffix.lstrip('.')}"
    return key, {"title": "class polygons", "media_type": media, "roles": ["data"]}


def file_fields(path: Path) -> dict[str, Any]:
    """``file:size`` and ``file:checksum`` (SHA-256 multihash, hex) of a local file.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "a.bin"
    >>> _ = path.write_bytes(b"abc")
    >>> file_fields(path)["file:checksum"][:12]
    '1220ba7816bf'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {
        "file:size": path.stat().st_size,
        "file:checksum": MULTIHASH_SHA256 + digest.hexdigest(),
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


def side_files(path: Path) -> list[Path]:
    """The files that travel with an output: GDAL's ``.aux.xml``, a ``.qml`` style, a
    Shapefile's parts (those that exist).

    Examples
    --------
    >>> side_files(Path("/nonexistent/a.shp"))
    []
    """
    names = [path.with_name(path.name + ".aux.xml"), path.with_suffix(".qml")]
    if path.suffix == ".shp":
        names += [path.with_suffix(s) for s in (".shx", ".dbf", ".prj", ".cpg")]
    return [p for p in names if p.exists()]
