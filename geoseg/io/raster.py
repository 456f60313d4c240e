"""The only module that opens rasters.

Three layers, as in rio-tiler: small functions that take an *open* rasterio dataset;
:class:`SceneReader`, which owns opening and closing an input scene; and
:class:`ClassRasterWriter`, the single writer of a class raster (and its optional confidence
raster), which finishes as a Cloud-Optimized GeoTIFF renamed into place only when complete.
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window as RioWindow

from geoseg.engine.blend import NODATA_CLASS
from geoseg.errors import InvalidInputError, RasterReadError
from geoseg.io.files import (
    Closing,
    Committing,
    atomic_output,
    check_writable,
    remove_quietly,
    require_file,
    temporary_sibling,
)
from geoseg.geo.tiling import Window

SUPPORTED_DTYPES = ("uint8", "uint16", "int16", "float32", "float64")
GDAL_CACHE_MB = "64"
"""GDAL's block cache (default 5 % of RAM): each window is read once, so a big cache only holds
stale blocks and makes peak memory grow with the scene. Set before GDAL's first read; an
explicit ``GDAL_CACHEMAX`` in the environment wins."""
os.environ.setdefault("GDAL_CACHEMAX", GDAL_CACHE_MB)
GDAL_WRITE_ENV = {"GDAL_NUM_THREADS": "ALL_CPUS"}
"""GDAL settings while writing: a bounded block cache keeps peak memory independent of scene size."""


@dataclass(frozen=True)
class RasterGrid:
    """Size, georeferencing and pixel type of a raster (picklable; no open file)."""

    width: int
    height: int
    crs: CRS | None
    transform: Affine
    dtype: str
    count: int

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units."""
        return abs(self.transform.a), abs(self.transform.e)

    def window_transform(self, window: Window) -> Affine:
        """The affine transform of ``window``'s top-left pixel."""
        return self.transform @ Affine.translation(window.col, window.row)


def to_rio(window: Window) -> RioWindow:
    """Convert a geoseg window to a rasterio window."""
    return RioWindow(window.col, window.row, window.width, window.height)


def open_dataset(path: str | os.PathLike[str]) -> DatasetReader:
    """Open a raster for reading, turning GDAL failures into :class:`RasterReadError`."""
    require_file(path, "raster")
    try:
        return rasterio.open(path)
    except RasterioError as exc:
        raise RasterReadError(f"{path}: GDAL cannot open it as a raster ({exc})") from exc


def grid_of(ds: DatasetReader, bands: Sequence[int]) -> RasterGrid:
    """The :class:`RasterGrid` of an open dataset restricted to ``bands``."""
    return RasterGrid(
        ds.width, ds.height, ds.crs, ds.transform, ds.dtypes[bands[0] - 1], len(bands)
    )


def data_bands(ds: DatasetReader) -> list[int]:
    """1-based indexes of the bands that carry data (every band except an alpha band)."""
    return [i for i, ci in enumerate(ds.colorinterp, start=1) if ci != ColorInterp.alpha]


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
    from rasterio.enums import MaskFlags

    return any(MaskFlags.all_valid not in flags for flags in ds.mask_flag_enums)


def read_pixels(ds: DatasetReader, window: Window, bands: Sequence[int]) -> np.ndarray:
    """Read ``bands`` inside ``window`` (which must lie inside the raster): ``(C, h, w)``."""
    try:
        return ds.read(list(bands), window=to_rio(window))
    except RasterioError as exc:
        raise RasterReadError(f"{ds.name}: read failed at {window} ({exc})") from exc


def valid_mask(
    ds: DatasetReader, window: Window, pixels: np.ndarray, nodata: float | None
) -> np.ndarray:
    """Boolean ``(h, w)`` mask of valid pixels.

    With an explicit ``nodata`` value, a pixel is invalid when every band equals it. Otherwise
    GDAL's dataset mask is used (nodata value, internal mask or alpha band). NaNs are always
    invalid.
    """
    if nodata is not None:
        valid = ~np.all(pixels == pixels.dtype.type(nodata), axis=0)
    elif has_declared_mask(ds):
        valid = ds.dataset_mask(window=to_rio(window)) > 0
    else:
        valid = np.ones(pixels.shape[1:], dtype=bool)
    if pixels.dtype.kind == "f":
        valid &= ~np.any(np.isnan(pixels), axis=0)
    return valid


def ground_sample_distance(grid: RasterGrid) -> float | None:
    """Pixel size in metres (the mean of x and y); approximated at the scene centre if geographic."""
    if grid.crs is None:
        return None
    xres, yres = grid.resolution
    if grid.crs.is_geographic:
        centre_lat = (grid.transform * (grid.width / 2, grid.height / 2))[1]
        metres_per_degree = 111_320.0
        return (xres * math.cos(math.radians(centre_lat)) + yres) / 2 * metres_per_degree
    return (xres + yres) / 2 * grid.crs.linear_units_factor[1]


class SceneReader(Closing):
    """Owns an open input scene: band selection, nodata handling and windowed reads.

    Parameters
    ----------
    path
        Any raster GDAL opens: a local file, a VRT, or a virtual path such as ``/vsicurl/...``.
    bands
        1-based band indexes; default: every band except alpha.
    nodata
        Nodata value to use when the file declares none (e.g. a zero collar).

    Examples
    --------
    >>> with SceneReader("scene.tif") as scene:  # doctest: +SKIP
    ...     pixels, valid = scene.read(Window(0, 0, 256, 256))
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        bands: Sequence[int] | None = None,
        nodata: float | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._ds = open_dataset(path)
        try:
            self.bands = list(bands) if bands else data_bands(self._ds)
            check_bands(self._ds, self.bands)
        except Exception:
            self._ds.close()
            raise
        self.nodata = nodata
        self.grid = grid_of(self._ds, self.bands)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Pixels ``(C, h, w)`` in the file's dtype and the valid mask ``(h, w)`` of ``window``."""
        pixels = read_pixels(self._ds, window, self.bands)
        return pixels, valid_mask(self._ds, window, pixels, self.nodata)

    def close(self) -> None:
        """Close the dataset."""
        self._ds.close()


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
    with rasterio.Env(**GDAL_WRITE_ENV):
        rasterio.shutil.copy(
            src,
            dst,
            driver="COG",
            COMPRESS="DEFLATE",
            BLOCKSIZE=512,
            OVERVIEW_RESAMPLING=resampling,
            BIGTIFF="IF_SAFER",
        )


class _WorkingBand:
    """A tiled GeoTIFF being filled block by block, then turned into a COG.

    ``work`` names it (default: a unique temporary name); ``reopen`` continues an existing one.
    """

    def __init__(
        self,
        final: Path,
        grid: RasterGrid,
        nodata: int,
        work: Path | None = None,
        reopen: bool = False,
    ) -> None:
        self.final = final
        self.work = work or temporary_sibling(final)
        self.cog = temporary_sibling(final)
        with rasterio.Env(**GDAL_WRITE_ENV):
            if reopen:
                self.ds = rasterio.open(self.work, "r+")
            else:
                self.ds = rasterio.open(self.work, "w", **band_profile(grid, nodata))

    def flush(self) -> None:
        """Put everything written so far on disk (rasterio has no flush: close and reopen)."""
        self.ds.close()
        with rasterio.Env(**GDAL_WRITE_ENV):
            self.ds = rasterio.open(self.work, "r+")

    def finish(self, resampling: str) -> None:
        self.ds.close()
        to_cog(self.work, self.cog, resampling)
        os.replace(self.cog, self.final)
        remove_quietly(self.work)

    def abort(self, keep: bool = False) -> None:
        if not self.ds.closed:
            self.ds.close()
        if not keep:
            remove_quietly(self.work)
        remove_quietly(self.cog)


class ClassRasterWriter(Committing):
    """The single writer of a class raster (and optionally its confidence raster).

    Blocks are written into temporary tiled GeoTIFFs; :meth:`commit` turns them into COGs with
    overviews (mode resampling for classes), a colour table and class names, and renames them into
    place. Leaving the ``with`` block on an error deletes every temporary file; an existing output
    is only replaced by a complete one.

    Parameters
    ----------
    path
        Final class raster path.
    grid
        Grid of the input scene; the output has the same size, CRS and transform.
    class_names, colors
        One name and one RGB triple per class.
    confidence_path
        Where to write the uint8 confidence raster (percent), or None.
    overwrite
        Replace existing outputs.
    resume
        A JSON-serialisable fingerprint of the job, to make the run resumable: the working files
        get fixed hidden names (``.<stem>.partial.tif``) and a journal (``.<stem>.partial.jsonl``)
        records each block given a ``block_id`` once it is on disk. A writer with the same
        fingerprint (and classes, colours, size) reopens them and lists the recorded blocks in
        :attr:`finished_before`; any other fingerprint starts afresh. On an error the partial
        files are kept for the next attempt; :meth:`commit` removes them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        grid: RasterGrid,
        class_names: Sequence[str],
        colors: Sequence[Sequence[int]],
        confidence_path: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        resume: Any = None,
    ) -> None:
        self.path = Path(path)
        self.confidence_path = Path(confidence_path) if confidence_path else None
        for target in (self.path, self.confidence_path):
            if target is not None:
                check_writable(target, overwrite)
                target.parent.mkdir(parents=True, exist_ok=True)
        self.class_names = list(class_names)
        self.journal = (
            None if resume is None else self.path.with_name(f".{self.path.stem}.partial.jsonl")
        )
        header = self._journal_header(resume, grid, colors)
        records = self._read_journal(header)
        bands = self._open_bands(grid, reopen=bool(records))
        if not bands:  # a partial file was unreadable: start afresh
            records, bands = [], self._open_bands(grid, reopen=False)
        self._classes, self._confidence = bands[0], (bands[1] if len(bands) > 1 else None)
        self._records = [r for r in records if self._on_disk(r)]
        self.finished_before = {r["block"]: list(r["counts"]) for r in self._records}
        """Blocks an earlier run wrote and that read back intact: block id -> pixels per class."""
        if self.journal is not None:
            self._write_journal(header)
        self._describe_classes(colors)
        if self._confidence:
            self._confidence.ds.set_band_description(1, "confidence (%)")

    def _journal_header(
        self, job: Any, grid: RasterGrid, colors: Sequence[Sequence[int]]
    ) -> dict[str, Any]:
        """What must match for a run to continue another: job, classes, colours, outputs, size."""
        header = {
            "job": job, "classes": self.class_names,
            "colors": [list(map(int, c[:3])) for c in colors],
            "confidence": self.confidence_path is not None, "size": [grid.height, grid.width],
        }  # fmt: skip
        return dict(json.loads(json.dumps(header)))  # as read back from the journal

    def _partial(self, final: Path) -> Path | None:
        """The fixed working-file name of a resumable run (None: a unique temporary name)."""
        return final.with_name(f".{final.stem}.partial{final.suffix}") if self.journal else None

    def _open_bands(self, grid: RasterGrid, reopen: bool) -> list[_WorkingBand]:
        """The working bands; when reopening fails, an empty list (after closing what opened)."""
        bands: list[_WorkingBand] = []
        for final in (self.path, self.confidence_path):
            if final is None:
                continue
            try:
                bands.append(_WorkingBand(final, grid, NODATA_CLASS, self._partial(final), reopen))
            except RasterioError:
                for band in bands:
                    band.abort()
                if not reopen:
                    raise
                return []
        return bands

    def _bands(self) -> list[_WorkingBand]:
        return [self._classes] if self._confidence is None else [self._classes, self._confidence]

    def _read_journal(self, header: dict[str, Any]) -> list[dict[str, Any]]:
        """Blocks recorded under the same header; a line cut short by a kill ends the list."""
        try:
            lines = self.journal.read_text().splitlines() if self.journal else []
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records[1:] if records and records[0] == header else []

    @staticmethod
    def _checksum(arrays: Sequence[np.ndarray]) -> int:
        crc = 0
        for array in arrays:
            crc = zlib.crc32(np.ascontiguousarray(array, dtype=np.uint8).tobytes(), crc)
        return crc

    def _on_disk(self, record: dict[str, Any]) -> bool:
        """Whether a journaled block reads back from the working files exactly as written."""
        window = to_rio(Window(*record["window"]))
        return self._checksum([b.ds.read(1, window=window) for b in self._bands()]) == record["crc"]

    def _write_journal(self, header: dict[str, Any]) -> None:
        """Rewrite the journal (atomically): the header, then the blocks kept from before."""
        assert self.journal is not None
        with atomic_output(self.journal, overwrite=True) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in [header, *self._records]))

    def _journal_block(self, block_id: str, window: Window, arrays: list[np.ndarray]) -> None:
        """Put the bands on disk, then record the block, its class counts and a checksum."""
        for band in self._bands():
            band.flush()
        counts = np.bincount(arrays[0].ravel(), minlength=256)[: len(self.class_names)]
        record = {
            "block": block_id, "window": [window.row, window.col, window.height, window.width],
            "counts": counts.tolist(), "crc": self._checksum(arrays),
        }  # fmt: skip
        assert self.journal is not None
        with open(self.journal, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def _describe_classes(self, colors: Sequence[Sequence[int]]) -> None:
        ds = self._classes.ds
        ds.write_colormap(1, colormap_of(colors))
        ds.set_band_description(1, "classes")
        ds.update_tags(
            CLASS_NAMES=json.dumps(self.class_names),
            CLASS_COLORS=json.dumps([list(map(int, c[:3])) for c in colors]),
        )
        ds.update_tags(1, **{f"CLASS_{i}": name for i, name in enumerate(self.class_names)})

    def write_block(
        self,
        window: Window,
        classes: np.ndarray,
        confidence: np.ndarray | None = None,
        block_id: str | None = None,
    ) -> None:
        """Write one block's classes (and confidence) at ``window``.

        In a resumable run, a ``block_id`` is journaled once the block is on disk.
        """
        self._classes.ds.write(classes, 1, window=to_rio(window))
        written = [classes]
        if self._confidence is not None and confidence is not None:
            self._confidence.ds.write(confidence, 1, window=to_rio(window))
            written.append(confidence)
        if self.journal is not None and block_id is not None:
            self._journal_block(block_id, window, written)

    def commit(self) -> None:
        """Finish the COGs and rename them into place."""
        self._classes.finish("MODE")
        if self._confidence is not None:
            self._confidence.finish("AVERAGE")
        if self.journal is not None:
            remove_quietly(self.journal)

    def abort(self) -> None:
        """Delete every temporary file (a resumable run keeps its partial files and journal)."""
        keep = self.journal is not None
        self._classes.abort(keep)
        if self._confidence is not None:
            self._confidence.abort(keep)


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
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    profile = {
        "driver": "GTiff", "width": arr.shape[2], "height": arr.shape[1], "count": arr.shape[0],
        "dtype": arr.dtype.name, "crs": crs, "transform": transform, "nodata": nodata,
        "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate",
    }  # fmt: skip
    try:
        with rasterio.open(tmp, "w", **profile) as ds:
            ds.write(arr)
            if colors is not None:
                ds.write_colormap(1, colormap_of(colors))
            if tags:
                ds.update_tags(**tags)
        os.replace(tmp, final)
    finally:
        remove_quietly(tmp)


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
        check_writable(self.path, overwrite)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temporary_sibling(self.path)
        profile = band_profile(grid, 0) | {
            "count": grid.count,
            "dtype": grid.dtype,
            "nodata": nodata,
        }
        self._ds = rasterio.open(self._tmp, "w", **profile, num_threads="ALL_CPUS")
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
        self._ds.write(data[np.newaxis] if data.ndim == 2 else data, window=to_rio(window))

    def commit(self) -> None:
        """Close the file and rename it into place."""
        self._ds.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Close and delete the temporary file."""
        if not self._ds.closed:
            self._ds.close()
        remove_quietly(self._tmp)
