"""The only module that opens rasters.

Three layers, as in rio-tiler: small functions that take an *open* rasterio dataset;
:class:`SceneReader`, which owns opening and closing an input scene; and
:class:`ClassRasterWriter`, the single writer of a class raster (and its optional confidence
raster, in :mod:`geoseg.io.class_raster`), which finishes as a Cloud-Optimized GeoTIFF renamed
into place only when complete. GDAL settings are scoped with :func:`gdal_env`.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NodataShadowWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window as RioWindow

from geoseg.conventions import NODATA_CLASS
from geoseg.errors import AlphaBandWarning, InvalidInputError, RasterReadError, RemoteReadError
from geoseg.geo.geobox import RasterGrid
from geoseg.geo.window import Window
from geoseg.io.files import (
    Closing,
    Committing,
    PendingOutput,
    atomic_output,
    is_virtual_path,
    require_file,
)
from geoseg.options import InputOptions

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "float32", "float64")
GDAL_CACHE_MB = 64
"""GDAL's block cache while geoseg reads (GDAL's default is 5 % of RAM): each window is read once,
so a big cache only holds stale blocks and makes peak memory grow with the scene. An explicit
``GDAL_CACHEMAX`` in the environment wins."""
GDAL_WRITE_ENV = {"GDAL_NUM_THREADS": "ALL_CPUS"}
"""GDAL settings while writing COGs."""
ALPHA_SAMPLE_SIDE = 256
"""Side of the decimated read that decides whether a band flagged alpha is a mask."""


GDAL_HTTP_ENV = {"GDAL_HTTP_MAX_RETRY": "3", "GDAL_HTTP_RETRY_DELAY": "1"}
"""GDAL's retries of failed HTTP requests (429, 5xx) on ``/vsicurl/`` and other virtual paths
(GDAL's default is none); the same variables in the environment win."""


@contextmanager
def gdal_env(**options: Any) -> Iterator[None]:
    """GDAL settings for geoseg's reads and writes, scoped with :class:`rasterio.Env`.

    Reads of virtual paths retry failed HTTP requests (:data:`GDAL_HTTP_ENV`).
    """
    cache = os.environ.get("GDAL_CACHEMAX", GDAL_CACHE_MB)
    http = {key: os.environ.get(key, value) for key, value in GDAL_HTTP_ENV.items()}
    with rasterio.Env(GDAL_CACHEMAX=cache, **http, **options):
        yield


def to_rio(window: Window) -> RioWindow:
    """Convert a geoseg window to a rasterio window."""
    return RioWindow(window.col, window.row, window.width, window.height)


def open_dataset(path: str | os.PathLike[str], threads: int | None = None) -> DatasetReader:
    """Open a raster for reading, turning GDAL failures into :class:`RasterReadError`.

    ``threads`` > 1 lets GDAL decode the compressed blocks of one read on that many threads
    (GeoTIFF's ``NUM_THREADS`` open option; other formats ignore it).
    """
    require_file(path, "raster")
    extra = {"NUM_THREADS": str(threads)} if threads and threads > 1 else {}
    try:
        with gdal_env():
            return rasterio.open(path, **extra)
    except RasterioError as exc:
        if is_virtual_path(path):
            raise RemoteReadError(
                f"{path}: GDAL cannot open it ({exc}); check the URL, the network and any "
                "credentials (GDAL retried failed requests; a batch run retries the scene)"
            ) from exc
        raise RasterReadError(f"{path}: GDAL cannot open it as a raster ({exc})") from exc


def grid_of(ds: DatasetReader, bands: Sequence[int]) -> RasterGrid:
    """The :class:`RasterGrid` of an open dataset restricted to ``bands``."""
    dtype = ds.dtypes[bands[0] - 1]
    return RasterGrid(ds.width, ds.height, ds.crs, ds.transform, dtype, len(bands))


@dataclass(frozen=True)
class BandLayout:
    """How a file's bands are flagged: how many, which are alpha, and which alpha bands hold data.

    A band flagged alpha is a *mask* when a sample of it holds only 0 and the dtype's maximum
    (255 for uint8); otherwise it holds data (e.g. NIR written with ``photometric=RGB``).

    Examples
    --------
    >>> layout = BandLayout(4, alpha=(4,), alpha_data=(4,))
    >>> layout.default_bands(alpha_as_data=False), layout.default_bands(alpha_as_data=True)
    ([1, 2, 3], [1, 2, 3, 4])
    >>> BandLayout(4, alpha=(4,)).describe()
    'band 4 is flagged alpha and is a mask, only 0 and 255'
    """

    count: int
    alpha: tuple[int, ...] = ()
    alpha_data: tuple[int, ...] = ()

    @property
    def alpha_masks(self) -> tuple[int, ...]:
        """Alpha-flagged bands that are masks."""
        return tuple(b for b in self.alpha if b not in self.alpha_data)

    def default_bands(self, alpha_as_data: bool) -> list[int]:
        """Every band but the alpha bands (``alpha_as_data``: but the alpha *masks*)."""
        skip = self.alpha_masks if alpha_as_data else self.alpha
        return [b for b in range(1, self.count + 1) if b not in skip]

    def describe(self) -> str:
        """The alpha flags in words, e.g. ``band 4 is flagged alpha and holds data``."""
        parts = [f"band {b} is flagged alpha and holds data" for b in self.alpha_data]
        parts += [
            f"band {b} is flagged alpha and is a mask, only 0 and 255" for b in self.alpha_masks
        ]
        return "; ".join(parts)


def band_layout(ds: DatasetReader) -> BandLayout:
    """The :class:`BandLayout` of an open dataset (reads a small sample of each alpha band)."""
    alpha = tuple(i for i, ci in enumerate(ds.colorinterp, start=1) if ci == ColorInterp.alpha)
    return BandLayout(ds.count, alpha, tuple(b for b in alpha if alpha_holds_data(ds, b)))


def alpha_holds_data(ds: DatasetReader, band: int) -> bool:
    """True when a decimated sample of ``band`` holds values other than 0 and the dtype's max."""
    shape = (min(ds.height, ALPHA_SAMPLE_SIDE), min(ds.width, ALPHA_SAMPLE_SIDE))
    try:
        with gdal_env():
            sample = ds.read(band, out_shape=shape, resampling=Resampling.nearest)
    except RasterioError as exc:
        raise RasterReadError(f"{ds.name}: read failed in band {band} ({exc})") from exc
    top = np.iinfo(sample.dtype).max if sample.dtype.kind in "iu" else 1.0
    return bool(np.any((sample != 0) & (sample != top)))


def mask_is_alpha(ds: DatasetReader) -> bool:
    """True when GDAL takes the validity mask from an alpha band (no nodata, no internal mask)."""
    return any(MaskFlags.alpha in flags for flags in ds.mask_flag_enums)


def check_bands(ds: DatasetReader, bands: Sequence[int]) -> None:
    """Raise when ``bands`` are out of range or of mixed or unsupported dtypes."""
    bad = [b for b in bands if not 1 <= b <= ds.count]
    if bad:
        raise InvalidInputError(
            f"{ds.name}: band(s) {bad} do not exist; the file has bands 1..{ds.count}"
        )
    dtypes = {ds.dtypes[b - 1] for b in bands}
    if len(dtypes) > 1:
        raise InvalidInputError(f"{ds.name}: selected bands mix dtypes {sorted(dtypes)}")
    dtype = dtypes.pop()
    if dtype not in SUPPORTED_DTYPES:
        raise InvalidInputError(
            f"{ds.name}: dtype {dtype} is not supported; use one of {', '.join(SUPPORTED_DTYPES)} "
            "(e.g. gdal_translate -ot Float32)"
        )


def has_declared_mask(ds: DatasetReader) -> bool:
    """True when the file declares nodata, an internal mask or an alpha band."""
    return any(MaskFlags.all_valid not in flags for flags in ds.mask_flag_enums)


def read_pixels(ds: DatasetReader, window: Window, bands: Sequence[int]) -> np.ndarray:
    """Read ``bands`` inside ``window`` (which must lie inside the raster): ``(C, h, w)``."""
    try:
        with gdal_env():
            return ds.read(list(bands), window=to_rio(window))
    except RasterioError as exc:
        if is_virtual_path(ds.name):
            raise RemoteReadError(
                f"{ds.name}: read failed at {window} ({exc}); check the network and rerun"
            ) from exc
        raise RasterReadError(f"{ds.name}: read failed at {window} ({exc})") from exc


def valid_mask(
    ds: DatasetReader,
    window: Window | None,
    pixels: np.ndarray,
    nodata: float | None,
    gdal_mask: bool = True,
) -> np.ndarray:
    """Boolean ``(h, w)`` mask of valid pixels of ``window`` (None: the whole raster at the
    shape of ``pixels``, e.g. a decimated read).

    With an explicit ``nodata`` value, a pixel is invalid when every band equals it. Otherwise
    GDAL's dataset mask is used (nodata value, internal mask or alpha band), unless
    ``gdal_mask`` is False because that mask would be an alpha band holding data. NaNs are
    always invalid.
    """
    if nodata is not None:
        valid = ~np.all(pixels == pixels.dtype.type(nodata), axis=0)
    elif has_declared_mask(ds) and (gdal_mask or not mask_is_alpha(ds)):
        valid = read_dataset_mask(ds, window, pixels.shape[1:]) > 0
    else:
        valid = np.ones(pixels.shape[1:], dtype=bool)
    if pixels.dtype.kind == "f":
        valid &= ~np.any(np.isnan(pixels), axis=0)
    return valid


def read_dataset_mask(
    ds: DatasetReader, window: Window | None, shape: tuple[int, ...]
) -> np.ndarray:
    """GDAL's dataset mask of ``window`` (or of the whole raster read at ``shape``).

    rasterio warns (``NodataShadowWarning``) on every read of a file with both a nodata value
    and an alpha band; geoseg says it once per file instead (see :func:`nodata_shadows_alpha`).
    """
    where = {"window": to_rio(window)} if window else {"out_shape": tuple(shape)}
    with gdal_env(), warnings.catch_warnings():
        warnings.simplefilter("ignore", NodataShadowWarning)
        try:
            return ds.dataset_mask(**where)
        except RasterioError as exc:
            raise RasterReadError(f"{ds.name}: mask read failed ({exc})") from exc


def nodata_shadows_alpha(ds: DatasetReader, layout: BandLayout) -> bool:
    """True when the file declares nodata *and* an alpha mask: GDAL then ignores the alpha."""
    return ds.nodata is not None and bool(layout.alpha_masks)


class SceneReader(Closing):
    """Owns an input scene: band selection, nodata handling and windowed reads.

    Parameters
    ----------
    source
        Any raster GDAL opens (a local file, a VRT, ``/vsicurl/...``), or an already open
        dataset, which the reader then uses but does not close (rio-tiler's ``dataset=``).
    options
        Bands (default: every band except alpha) and a nodata value for files that declare none.
    alpha_as_data
        Default bands include alpha-flagged bands that hold data (not masks), as in training.

    A band flagged alpha that holds data is never used as the validity mask: validity then comes
    from the file's nodata or internal mask, or the explicit ``nodata``.

    Examples
    --------
    >>> with SceneReader("scene.tif", InputOptions(bands=(1, 2, 3))) as scene:  # doctest: +SKIP
    ...     pixels, valid = scene.read(Window(0, 0, 256, 256))
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | DatasetReader,
        options: InputOptions | None = None,
        *,
        alpha_as_data: bool = False,
    ) -> None:
        options = options or InputOptions()
        if isinstance(source, DatasetReader):
            self._ds, self._owned, self.path = source, False, str(source.name)
        else:
            threads = options.read_threads
            self._ds, self._owned = open_dataset(source, threads), True
            self.path = os.fspath(source)
        try:
            self.layout = band_layout(self._ds)
            self.bands = list(options.bands or self.layout.default_bands(alpha_as_data))
            check_bands(self._ds, self.bands)
        except Exception:
            self.close()
            raise
        self.nodata = options.nodata
        self.grid = grid_of(self._ds, self.bands)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Pixels ``(C, h, w)`` in the file's dtype and the valid mask ``(h, w)`` of ``window``."""
        pixels = read_pixels(self._ds, window, self.bands)
        return pixels, self._valid(window, pixels)

    def read_decimated(self, max_side: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole scene read at most ``max_side`` pixels a side (nearest; GDAL picks
        overviews) and its valid mask: for scene-wide statistics such as a percentile stretch."""
        grid = self.grid
        step = max(1, -(-max(grid.height, grid.width) // max_side))
        shape = (len(self.bands), -(-grid.height // step), -(-grid.width // step))
        try:
            with gdal_env():
                pixels = self._ds.read(self.bands, out_shape=shape, resampling=Resampling.nearest)
        except RasterioError as exc:
            raise RasterReadError(f"{self.path}: decimated read failed ({exc})") from exc
        return pixels, self._valid(None, pixels)

    def _valid(self, window: Window | None, pixels: np.ndarray) -> np.ndarray:
        return valid_mask(self._ds, window, pixels, self.nodata, not self.layout.alpha_data)

    @property
    def file_nodata(self) -> float | None:
        """The nodata value the file declares, if any."""
        return None if self._ds.nodata is None else float(self._ds.nodata)

    def warn_about_alpha(self) -> None:
        """One warning when an alpha-flagged band is read as data, or when the file's nodata
        value makes GDAL ignore its alpha mask (call once per file, not per read)."""
        used = [b for b in self.layout.alpha_data if b in self.bands]
        if used:
            message = (
                f"band {used[0]} is flagged alpha but holds data; using it as data, not as a "
                "mask (validity comes from nodata or an internal mask)"
            )
        elif self.nodata is None and nodata_shadows_alpha(self._ds, self.layout):
            message = (
                f"declares nodata {self._ds.nodata:g} and an alpha mask (band "
                f"{self.layout.alpha_masks[0]}); GDAL takes validity from the nodata value and "
                "ignores the alpha band"
            )
        else:
            return
        warnings.warn(f"{self.path}: {message}", AlphaBandWarning, stacklevel=2)

    def close(self) -> None:
        """Close the dataset if this reader opened it."""
        if self._owned:
            self._ds.close()


def scene_grid(source: str | os.PathLike[str], options: InputOptions | None = None) -> RasterGrid:
    """The grid (size, georeferencing, selected bands' dtype and count) of a scene."""
    with SceneReader(source, options) as reader:
        return reader.grid


def raster_grid(path: str | os.PathLike[str]) -> RasterGrid:
    """The grid of a single-band raster such as a class COG (band 1)."""
    with open_dataset(path) as ds:
        return grid_of(ds, [1])


def read_resampled(
    path: str | os.PathLike[str], bands: Sequence[int], shape: tuple[int, int], resampling: str
) -> np.ndarray:
    """``bands`` of a raster read at ``shape`` (GDAL picks overviews): ``(C, h, w)``."""
    with open_dataset(path) as ds, gdal_env():
        out_shape = (len(bands), *shape)
        return ds.read(list(bands), out_shape=out_shape, resampling=Resampling[resampling])


def read_colormap(path: str | os.PathLike[str]) -> tuple[dict[int, tuple[int, ...]], int | None]:
    """Band 1's colour table (empty without one) and its nodata value."""
    with open_dataset(path) as ds:
        try:
            table = dict(ds.colormap(1))
        except ValueError:
            table = {}
        return table, None if ds.nodata is None else int(ds.nodata)


def band_count(path: str | os.PathLike[str]) -> int:
    """How many bands a raster has."""
    with open_dataset(path) as ds:
        return int(ds.count)


def colormap_of(colors: Sequence[Sequence[int]]) -> dict[int, tuple[int, int, int, int]]:
    """A GDAL colour table: one RGBA entry per class, transparent black for nodata."""
    table = {i: (int(c[0]), int(c[1]), int(c[2]), 255) for i, c in enumerate(colors)}
    table[NODATA_CLASS] = (0, 0, 0, 0)
    return table


def band_profile(grid: RasterGrid, nodata: int) -> dict[str, Any]:
    """Creation options of a tiled single-band uint8 working GeoTIFF on ``grid``."""
    return {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": "uint8",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }


def to_cog(src: Path, dst: Path, resampling: str) -> None:
    """Copy a GeoTIFF into a Cloud-Optimized GeoTIFF with internal overviews."""
    with gdal_env(**GDAL_WRITE_ENV):
        rasterio.shutil.copy(
            src,
            dst,
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=512,
            OVERVIEW_RESAMPLING=resampling,
            BIGTIFF="IF_SAFER",
        )


@dataclass(frozen=True)
class ClassRasterInfo:
    """What a geoseg class raster says about itself."""

    grid: RasterGrid
    class_names: list[str]
    colors: list[tuple[int, int, int]]
    nodata: int


def read_class_info(ds: DatasetReader) -> ClassRasterInfo:
    """Class names and colours from a class raster's tags (or generic names and its colour table)."""
    tags = ds.tags()
    if "CLASS_NAMES" in tags:
        names = list(json.loads(tags["CLASS_NAMES"]))
    else:  # not a geoseg raster: one generic name per value below the nodata value
        names = [f"class_{i}" for i in range(NODATA_CLASS)]
    try:
        table = ds.colormap(1)
        colors = [tuple(table.get(i, (128, 128, 128, 255))[:3]) for i in range(len(names))]
    except ValueError:
        colors = [(128, 128, 128)] * len(names)
    nodata = NODATA_CLASS if ds.nodata is None else int(ds.nodata)
    return ClassRasterInfo(grid_of(ds, [1]), names, colors, nodata)


def write_raster(
    path: str | os.PathLike[str],
    data: np.ndarray,
    crs: CRS | str | None,
    transform: Affine,
    nodata: float | None = None,
    colors: Sequence[Sequence[int]] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Write a small in-memory array ``(C, H, W)`` or ``(H, W)`` as a tiled GeoTIFF (atomically).

    For generated scenes, labels and test data; prediction outputs go through
    :class:`ClassRasterWriter`.
    """
    arr = data[np.newaxis] if data.ndim == 2 else data
    profile = {
        "driver": "GTiff",
        "width": arr.shape[2],
        "height": arr.shape[1],
        "count": arr.shape[0],
        "dtype": arr.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    with (
        atomic_output(path, overwrite=True) as tmp,
        gdal_env(),
        rasterio.open(tmp, "w", **profile) as ds,
    ):
        ds.write(arr)
        if colors is not None:
            ds.write_colormap(1, colormap_of(colors))
        if tags:
            ds.update_tags(**tags)


class RasterBlockWriter(Committing):
    """The single writer of a GeoTIFF filled window by window (e.g. row strips of a large scene).

    Writes a tiled GeoTIFF under a temporary name; leaving the ``with`` block without error
    renames it into place, an error deletes it. Memory is bounded by the blocks, not the raster.

    Examples
    --------
    >>> grid = RasterGrid(512, 256, None, Affine.identity(), "uint8", 3)
    >>> with RasterBlockWriter("image.tif", grid, nodata=0) as out:  # doctest: +SKIP
    ...     out.write(Window(0, 0, 128, 512), np.zeros((3, 128, 512), "uint8"))
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        grid: RasterGrid,
        nodata: float | None = None,
        colors: Sequence[Sequence[int]] | None = None,
        tags: dict[str, str] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self._out = PendingOutput(self.path, overwrite)
        profile = band_profile(grid, 0) | {
            "count": grid.count,
            "dtype": grid.dtype,
            "nodata": nodata,
        }
        with gdal_env():
            self._ds = rasterio.open(self._out.tmp, "w", **profile, num_threads="ALL_CPUS")
        try:
            if colors is not None:
                self._ds.write_colormap(1, colormap_of(colors))
            if tags:
                self._ds.update_tags(**tags)
        except Exception:
            self.abort()
            raise

    def write(self, window: Window, data: np.ndarray) -> None:
        """Write ``(C, h, w)`` or ``(h, w)`` pixels at ``window``."""
        with gdal_env():
            self._ds.write(data[np.newaxis] if data.ndim == 2 else data, window=to_rio(window))

    def commit(self) -> None:
        """Close the file and rename it into place."""
        self._ds.close()
        self._out.commit()

    def abort(self) -> None:
        """Close and delete the temporary file."""
        if not self._ds.closed:
            self._ds.close()
        self._out.abort()
