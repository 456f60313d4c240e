"""Training and reference labels: vector layers or class rasters, as class chips on an image's grid.

A label file is either a vector layer OGR reads (GeoPackage, GeoJSON, Shapefile, ...) with a class
field holding names or integer ids, or a class raster on any grid. Either way a
:class:`LabelSource` bound to one image's grid answers ``chip(window)``: a ``uint8`` array of class
ids on exactly the image pixels of ``window``, with :data:`IGNORE` (255) where nothing is known.

- Vector features are read once per image, only those intersecting the image (an OGR bbox
  filter), reprojected to the image's CRS and put in a spatial index; each chip rasterizes only
  the features intersecting its window, with the window's own transform.
- Class rasters are resampled (nearest) onto the window's grid with
  :func:`rasterio.warp.reproject`, so only the source pixels under the window are read.

Class ids follow one scheme for every file: index 0 is background; names from the files are
sorted (or given); raster ids are remapped by name when the raster carries class names.

Examples
--------
>>> spec = LabelSpec("buildings.gpkg", class_field="class_name")  # doctest: +SKIP
>>> classes = resolve_classes([spec.inspect()], None)  # doctest: +SKIP
>>> labels = spec.open(grid, classes)  # doctest: +SKIP
>>> chip = labels.chip(Window(0, 0, 256, 256))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioError

from geoseg.conventions import NODATA_CLASS
from geoseg.errors import InvalidInputError, choice_error
from geoseg.geo.geobox import RasterGrid
from geoseg.geo.window import Window
from geoseg.io.files import Closing, require_file
from geoseg.io.raster import open_dataset, read_class_info, to_rio

IGNORE = NODATA_CLASS
"""Label value of pixels that do not count: unlabeled (``ignore`` mode), nodata, outside."""
BACKGROUND = "background"
Unlabeled = Literal["background", "ignore"]
UNLABELED_CHOICES = ("background", "ignore")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".img", ".jp2")
MAX_CLASSES = 255
TRANSFORM_ERRORS: tuple[type[Exception], ...] = (RasterioError, CRSError, CPLE_BaseError)
"""What rasterio raises when PROJ cannot transform between two CRSs."""


class LabelSource(Protocol):
    """Class ids on one image's grid, window by window."""

    def chip(self, window: Window) -> np.ndarray:
        """``uint8`` class ids ``(window.height, window.width)``; :data:`IGNORE` where unknown."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class FoundClasses:
    """The classes a label file uses: names (vector names, raster tags) or only integer ids."""

    source: str
    names: tuple[str, ...] | None
    max_id: int


def is_raster_path(path: str | os.PathLike[str]) -> bool:
    """True for raster files (by suffix); everything else is read as a vector layer."""
    return Path(path).suffix.lower() in RASTER_SUFFIXES


def check_unlabeled(unlabeled: str) -> Unlabeled:
    """Validate the ``unlabeled`` mode."""
    if unlabeled not in UNLABELED_CHOICES:
        raise choice_error("unlabeled mode", unlabeled, UNLABELED_CHOICES)
    return unlabeled  # type: ignore[return-value]


@dataclass(frozen=True)
class LabelSpec:
    """A label file and how to read it (small and picklable).

    Parameters
    ----------
    path
        A vector layer (class field of names or ids) or a class raster.
    class_field
        Attribute holding the class of each feature (vectors only).
    unlabeled
        ``background``: pixels no feature covers are background (complete footprints);
        ``ignore``: they do not count (sparse labels). Class rasters: nodata is always ignored.
    """

    path: str
    class_field: str = "class_name"
    unlabeled: Unlabeled = "background"

    def __post_init__(self) -> None:
        require_file(self.path, "labels file")
        check_unlabeled(self.unlabeled)

    @property
    def is_raster(self) -> bool:
        """Whether the labels are a class raster."""
        return is_raster_path(self.path)

    def inspect(self) -> FoundClasses:
        """The class names or ids the file uses."""
        if self.is_raster:
            return raster_classes(self.path)
        return vector_classes(self.path, self.class_field)

    def open(self, grid: RasterGrid, classes: Sequence[str]) -> LabelSource:
        """A :class:`LabelSource` on ``grid`` with ids in the scheme ``classes``."""
        if self.is_raster:
            return RasterLabels(self.path, grid, classes)
        return VectorLabels(self.path, grid, classes, self.class_field, self.unlabeled)


# --- class discovery -------------------------------------------------------------------------


def field_names(path: str | os.PathLike[str]) -> list[str]:
    """The attribute fields of a vector layer."""
    import pyogrio

    try:
        return [str(f) for f in pyogrio.read_info(os.fspath(path))["fields"]]
    except Exception as exc:  # pyogrio raises DataSourceError and friends
        raise InvalidInputError(f"{path}: OGR cannot read it as a vector layer ({exc})") from exc


def check_field(path: str | os.PathLike[str], class_field: str) -> None:
    """Raise listing the available fields when ``class_field`` is missing."""
    fields = field_names(path)
    if class_field not in fields:
        raise InvalidInputError(
            f"{path}: no field {class_field!r}; available fields: {', '.join(fields) or 'none'}; "
            "set `class_field` to one of them",
            option="class_field",
        )


def read_field_values(path: str | os.PathLike[str], class_field: str) -> np.ndarray:
    """The class field's values (no geometry), nulls dropped."""
    import pyogrio

    check_field(path, class_field)
    frame = pyogrio.read_dataframe(os.fspath(path), columns=[class_field], read_geometry=False)
    return frame[class_field].dropna().to_numpy()


def as_ids(values: np.ndarray) -> np.ndarray | None:
    """Integer ids if every value is a whole number, else None (the values are names)."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f" and np.all(np.mod(values, 1) == 0):
        return values.astype(np.int64)
    return None


FLAG_VALUES = frozenset({"yes", "true", "1", "1.0", "y", "t"})
"""Values of an OSM-style flag field (``building=yes``): the class is named after the field."""


def flag_values(values: np.ndarray, class_field: str) -> np.ndarray:
    """``values``, or the field's name for each when every value flags it (``yes``/``true``/1).

    Examples
    --------
    >>> flag_values(np.array(["yes", "Yes", "true"]), "building").tolist()
    ['building', 'building', 'building']
    """
    if len(values) and {str(v).strip().lower() for v in values} <= FLAG_VALUES:
        return np.full(len(values), class_field, dtype=object)
    return values


def vector_classes(path: str | os.PathLike[str], class_field: str) -> FoundClasses:
    """Names (or ids) in a vector layer's class field (a flag field gives the field's name)."""
    values = read_field_values(path, class_field)
    if not len(values):
        raise InvalidInputError(
            f"{path}: the layer has no features with a value in `class_field` "
            f"({class_field!r}); add labelled polygons, or pick the layer or field that has them",
            option="class_field",
        )
    values = flag_values(values, class_field)
    ids = as_ids(values)
    if ids is not None:
        return FoundClasses(os.fspath(path), None, int(ids.max(initial=0)))
    names = tuple(sorted({str(v) for v in values}))
    return FoundClasses(os.fspath(path), names, len(names))


def raster_classes(path: str | os.PathLike[str]) -> FoundClasses:
    """Class names from a class raster's ``CLASS_NAMES`` tag, or else its largest id."""
    with open_dataset(path) as ds:
        if "CLASS_NAMES" in ds.tags():
            names = tuple(read_class_info(ds).class_names)
            return FoundClasses(os.fspath(path), names, len(names) - 1)
        return FoundClasses(os.fspath(path), None, raster_max_id(ds))


def raster_max_id(ds: Any) -> int:
    """The largest class id in band 1 (nodata and 255 excluded), read block by block."""
    top = 0
    for _, window in ds.block_windows(1):
        values = ds.read(1, window=window)
        values = values[
            (values != IGNORE) & (values != (ds.nodata if ds.nodata is not None else IGNORE))
        ]
        top = max(top, int(values.max(initial=0)))
    return top


def resolve_classes(
    found: Sequence[FoundClasses], classes: Sequence[str] | None
) -> tuple[str, ...]:
    """The class scheme for every label file: index 0 is background.

    With ``classes`` given, every name in the files must be one of them. Otherwise names are
    ``background`` followed by the files' other names, sorted; files with ids only give
    ``background, class_1, ...``.

    Examples
    --------
    >>> resolve_classes([FoundClasses("a.gpkg", ("water", "building"), 2)], None)
    ('background', 'building', 'water')
    """
    names = {n for f in found if f.names for n in f.names}
    if classes:
        check_known(found, tuple(classes))
        result = tuple(classes)
    elif names:
        result = (BACKGROUND, *sorted(names - {BACKGROUND}))
    else:
        top = max((f.max_id for f in found), default=1)
        result = (BACKGROUND, *(f"class_{i}" for i in range(1, max(top, 1) + 1)))
    if len(result) > MAX_CLASSES:
        raise InvalidInputError(f"{len(result)} classes; at most {MAX_CLASSES} are supported")
    if len(result) < 2:
        raise InvalidInputError(
            f"only the classes {list(result)}; give at least one besides background"
        )
    return result


def check_known(found: Sequence[FoundClasses], classes: tuple[str, ...]) -> None:
    """Raise when a file uses a class name or id outside ``classes``."""
    for f in found:
        unknown = sorted(set(f.names or ()) - set(classes))
        if unknown:
            raise InvalidInputError(
                f"{f.source}: classes {unknown} are not in `classes` ({','.join(classes)}); "
                "add them",
                option="classes",
            )
        if f.names is None and f.max_id >= len(classes):
            raise InvalidInputError(
                f"{f.source}: class id {f.max_id} but only {len(classes)} classes given; "
                "give one name per id (background first)"
            )


# --- vector labels ---------------------------------------------------------------------------


def same_crs(a: CRS | str | None, b: CRS | str | None) -> bool:
    """Whether two CRS definitions are equal (None only equals None)."""
    if a is None or b is None:
        return a is None and b is None
    return bool(CRS.from_user_input(a) == CRS.from_user_input(b))


def layer_bbox(path: str, grid: RasterGrid, layer_crs: Any) -> tuple[float, float, float, float]:
    """The image's bounds in the layer's CRS (densified edges), for OGR's bbox filter."""
    from rasterio.warp import transform_bounds

    bounds = grid.bounds
    if same_crs(layer_crs, grid.crs):
        return bounds
    if layer_crs is None:
        raise InvalidInputError(
            f"{path}: has no CRS (a Shapefile without its .prj?), so the labels cannot be placed "
            f"on the image; assign the right one (ogr2ogr -a_srs {crs_name(grid.crs)} out.gpkg "
            f"{Path(path).name})"
        )
    if grid.crs is None:
        raise InvalidInputError(
            f"{path}: the image has no CRS, so these labels (in {crs_name(layer_crs)}) cannot be "
            "placed on it; assign the image its CRS (gdal_edit.py -a_srs)"
        )
    try:
        west, south, east, north = transform_bounds(grid.crs, layer_crs, *bounds, densify_pts=21)
    except TRANSFORM_ERRORS as exc:
        raise untransformable(path, layer_crs, grid.crs) from exc
    return west, south, east, north


def crs_name(crs: Any) -> str:
    """``EPSG:<code>`` when the CRS has one, else its name (for messages)."""
    if crs is None:
        return "no CRS"
    import pyproj

    parsed = pyproj.CRS.from_user_input(CRS.from_user_input(crs).to_wkt())
    epsg = parsed.to_epsg()
    return f"EPSG:{epsg}" if epsg else repr(parsed.name)


def untransformable(path: str, layer_crs: Any, image_crs: Any) -> InvalidInputError:
    """The error for a label CRS that PROJ cannot transform to the image's."""
    target = crs_name(image_crs)
    return InvalidInputError(
        f"{path}: its CRS ({crs_name(layer_crs)}) cannot be transformed to the image's "
        f"({target}); reproject the labels (ogr2ogr -t_srs {target}) or assign the right CRS"
    )


def repair(geometries: np.ndarray) -> np.ndarray:
    """Make invalid polygons valid (e.g. self-intersecting rings), keeping only their areas.

    ``make_valid`` turns a bow-tie into two triangles; degenerate parts (lines, points) are
    dropped, so a zero-area sliver never burns a line of pixels.

    Examples
    --------
    >>> import shapely
    >>> bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    >>> fixed = repair(np.array([bowtie]))[0]
    >>> fixed.geom_type, float(fixed.area)
    ('MultiPolygon', 2.0)
    """
    import shapely

    invalid = ~shapely.is_valid(geometries)
    if not invalid.any():
        return geometries
    fixed = geometries.copy()
    fixed[invalid] = [polygonal(g) for g in shapely.make_valid(geometries[invalid])]
    return fixed


def polygonal(geometry: Any) -> Any:
    """The polygons of a geometry (collections filtered), empty when it has none."""
    import shapely

    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return geometry
    parts = shapely.get_parts(geometry)
    polygons = [p for p in parts if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(polygons) if polygons else shapely.Polygon()


def read_features(path: str, class_field: str, grid: RasterGrid) -> Any:
    """Features of a vector layer intersecting the image, reprojected to its CRS."""
    import pyogrio

    check_field(path, class_field)
    crs = pyogrio.read_info(path).get("crs")
    frame = pyogrio.read_dataframe(path, columns=[class_field], bbox=layer_bbox(path, grid, crs))
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty & frame[class_field].notna()]
    frame = frame.set_geometry(repair(frame.geometry.to_numpy()), crs=frame.crs)
    frame = frame[~frame.geometry.is_empty]
    if len(frame) and not same_crs(frame.crs, grid.crs):
        try:
            frame = frame.to_crs(grid.crs)
        except Exception as exc:  # pyproj's CRSError / ProjError
            raise untransformable(path, crs, grid.crs) from exc
    return frame


def layer_extent(path: str, crs: Any) -> tuple[float, float, float, float] | None:
    """A vector layer's bounds in ``crs`` (None when it has no features or cannot be moved)."""
    import pyogrio
    from rasterio.warp import transform_bounds

    info = pyogrio.read_info(path)
    bounds, layer_crs = info.get("total_bounds"), info.get("crs")
    if bounds is None or not np.all(np.isfinite(bounds)):
        return None
    if same_crs(layer_crs, crs) or layer_crs is None or crs is None:
        return tuple(float(v) for v in bounds)  # type: ignore[return-value]
    try:
        west, south, east, north = transform_bounds(layer_crs, crs, *bounds, densify_pts=21)
    except TRANSFORM_ERRORS:
        return None
    return west, south, east, north


def class_ids(values: np.ndarray, classes: Sequence[str], source: str) -> np.ndarray:
    """Map a class field's names (or ids) to ids in the scheme ``classes``."""
    ids = as_ids(values)
    if ids is None:
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted({str(v) for v in values} - set(index))
        if unknown:
            raise InvalidInputError(f"{source}: classes {unknown} are not in {list(classes)}")
        ids = np.array([index[str(v)] for v in values], dtype=np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= len(classes)):
        raise InvalidInputError(
            f"{source}: class ids must be in 0..{len(classes) - 1}, found {ids.min()}..{ids.max()}"
        )
    return ids.astype(np.uint8)


class VectorLabels(Closing):
    """Rasterizes a vector layer's features onto windows of one image's grid.

    Parameters
    ----------
    path
        Vector layer; any CRS (reprojected to the image's).
    grid
        The image's grid.
    classes
        The class scheme (index 0 background).
    class_field
        The field of class names or ids.
    unlabeled
        Value of pixels no feature covers: background (0) or :data:`IGNORE`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        grid: RasterGrid,
        classes: Sequence[str],
        class_field: str = "class_name",
        unlabeled: Unlabeled = "background",
    ) -> None:
        from shapely import STRtree

        frame = read_features(os.fspath(path), class_field, grid)
        self.grid = grid
        self.geometries = frame.geometry.to_numpy()
        values = flag_values(frame[class_field].to_numpy(), class_field)
        self.ids = class_ids(values, classes, os.fspath(path))
        self.fill = 0 if check_unlabeled(unlabeled) == "background" else IGNORE
        self.tree = STRtree(self.geometries)

    def chip(self, window: Window) -> np.ndarray:
        """Class ids on ``window``; features later in the file win where they overlap."""
        from rasterio.features import rasterize
        from shapely import box

        shape = (window.height, window.width)
        hits = np.sort(self.tree.query(box(*self.grid[window].bounds)))
        if not len(hits):
            return np.full(shape, self.fill, np.uint8)
        shapes = zip(self.geometries[hits], self.ids[hits].tolist(), strict=True)
        transform = self.grid.window_transform(window)
        return rasterize(
            shapes, out_shape=shape, transform=transform, fill=self.fill, dtype="uint8"
        )

    def close(self) -> None:
        """Nothing to release (features live in memory)."""


# --- raster labels ---------------------------------------------------------------------------


def raster_lookup(names: Sequence[str] | None, count: int, classes: Sequence[str]) -> np.ndarray:
    """A 256-entry table mapping a class raster's values to ids in ``classes`` (255: ignore)."""
    lut = np.full(256, IGNORE, np.uint8)
    if names is None:
        lut[: min(count, MAX_CLASSES)] = np.arange(min(count, MAX_CLASSES))
        return lut
    index = {name: i for i, name in enumerate(classes)}
    for value, name in enumerate(names[:MAX_CLASSES]):
        lut[value] = index.get(name, IGNORE)
    return lut


class RasterLabels(Closing):
    """Reads a class raster on any grid as chips of one image's grid (nearest resampling).

    Values the scheme does not know, the raster's nodata and pixels outside it are :data:`IGNORE`.
    """

    def __init__(
        self, path: str | os.PathLike[str], grid: RasterGrid, classes: Sequence[str]
    ) -> None:
        self.path = os.fspath(path)
        self.grid = grid
        self._ds = open_dataset(path)
        found = raster_classes(path)
        self.lut = raster_lookup(found.names, len(classes), classes)
        self.same_grid = (
            same_crs(self._ds.crs, grid.crs)
            and self._ds.transform.almost_equals(grid.transform)
            and (self._ds.height, self._ds.width) == (grid.height, grid.width)
        )

    def chip(self, window: Window) -> np.ndarray:
        """Class ids on ``window`` (a plain read when the raster shares the image's grid)."""
        raw = self._read_same_grid(window) if self.same_grid else self._warp(window)
        values = np.clip(raw, 0, 255).astype(np.uint8)
        out = self.lut[values]
        if self._ds.nodata is not None:
            out[raw == self._ds.nodata] = IGNORE
        return out

    def _read_same_grid(self, window: Window) -> np.ndarray:
        return self._ds.read(1, window=to_rio(window))

    def _warp(self, window: Window) -> np.ndarray:
        from rasterio import band
        from rasterio.enums import Resampling
        from rasterio.warp import reproject

        nodata = self._ds.nodata if self._ds.nodata is not None else IGNORE
        out = np.full((window.height, window.width), nodata, dtype=self._ds.dtypes[0])
        reproject(
            band(self._ds, 1),
            out,
            src_nodata=self._ds.nodata,
            dst_nodata=nodata,
            dst_transform=self.grid.window_transform(window),
            dst_crs=self.grid.crs,
            resampling=Resampling.nearest,
        )
        return out

    def close(self) -> None:
        """Close the raster."""
        self._ds.close()


def label_specs(
    labels: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    count: int,
    class_field: str,
    unlabeled: str,
) -> list[LabelSpec]:
    """One :class:`LabelSpec` per image: a single labels file for all, or one each."""
    paths = [labels] if isinstance(labels, str | os.PathLike) else list(labels)
    if len(paths) == 1:
        paths = paths * count
    if len(paths) != count:
        raise InvalidInputError(
            f"{len(paths)} label files for {count} images; give one for all or one per image"
        )
    mode = check_unlabeled(unlabeled)
    return [LabelSpec(os.fspath(p), class_field, mode) for p in paths]
