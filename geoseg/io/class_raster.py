"""The single writer of a class raster (and its optional confidence raster).

Blocks are written into tiled working GeoTIFFs; :meth:`ClassRasterWriter.commit` turns them
into Cloud-Optimized GeoTIFFs with overviews (mode resampling for classes), a colour table and
class names, and renames them into place. A resumable writer keeps fixed working names and a
:class:`~geoseg.io.journal.BlockJournal` so that a killed run continues where it stopped; working
files or a journal that do not read back (a disk that filled up, a crash) are started afresh.

Each COG carries a ``GEOSEG_JOB`` tag, a digest of what shaped it (:func:`job_tag_of`), so a
resumed run can tell a finished raster of the same job from any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from geoseg.conventions import LOGGER_NAME, NODATA_CLASS
from geoseg.errors import GeosegError
from geoseg.geo.geobox import RasterGrid
from geoseg.geo.window import Window, cover
from geoseg.io.files import Committing, PendingOutput, check_writable, remove_quietly, writing
from geoseg.io.journal import BlockJournal, Record, SumsFile, checksum, record_window
from geoseg.io.raster import (
    GDAL_WRITE_ENV,
    band_profile,
    colormap_of,
    gdal_env,
    open_dataset,
    read_pixels,
    to_cog,
    to_rio,
)

log = logging.getLogger(LOGGER_NAME)
JOB_TAG = "GEOSEG_JOB"
"""Dataset tag of a class (and confidence) COG: the digest of the job that wrote it."""


class WorkingBand:
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
        self.cog = PendingOutput(final, overwrite=True)
        self.work = work or PendingOutput(final, overwrite=True).tmp
        with gdal_env(**GDAL_WRITE_ENV):
            if reopen:
                self.ds = rasterio.open(self.work, "r+")
            else:
                remove_quietly(self.work)  # (GDAL would try to open a damaged one to delete it)
                self.ds = rasterio.open(self.work, "w", **band_profile(grid, nodata))

    def write(self, data: np.ndarray, window: Window) -> None:
        """Write one block of pixels."""
        with gdal_env(**GDAL_WRITE_ENV):
            self.ds.write(data, 1, window=to_rio(window))

    def read(self, window: Window) -> np.ndarray:
        """Read back pixels written earlier."""
        with gdal_env():
            return self.ds.read(1, window=to_rio(window))

    def flush(self) -> None:
        """Put everything written so far on disk (rasterio has no flush: close and reopen)."""
        self.ds.close()
        with gdal_env(**GDAL_WRITE_ENV):
            self.ds = rasterio.open(self.work, "r+")

    def build_cog(self, resampling: str) -> None:
        """Copy the working file into a COG under a temporary name."""
        self.ds.close()
        with writing(self.cog.final):
            to_cog(self.work, self.cog.tmp, resampling)

    def abort(self, keep: bool = False) -> None:
        """Close; delete the temporary COG and (unless ``keep``) the working file."""
        if not self.ds.closed:
            with contextlib.suppress(Exception):  # flushing may fail again (a full disk)
                self.ds.close()
        if not keep:
            remove_quietly(self.work)
        self.cog.abort()


def partial_name(final: Path, suffix: str | None = None) -> Path:
    """The fixed hidden working name of a resumable output: ``.<stem>.partial<suffix>``."""
    return final.with_name(f".{final.stem}.partial{final.suffix if suffix is None else suffix}")


def partial_files(finals: Sequence[Path]) -> list[Path]:
    """The working files and journal of a resumable run writing ``finals`` (class raster first)."""
    return [
        *(partial_name(f) for f in finals),
        partial_name(finals[0], ".jsonl"),
        partial_name(finals[0], ".sums"),
    ]


def job_tag_of(job: Any) -> str:
    """A short digest of a JSON-serialisable job description (the ``GEOSEG_JOB`` tag).

    Examples
    --------
    >>> job_tag_of({"scene": "a.tif"}) == job_tag_of({"scene": "a.tif"}) != job_tag_of({})
    True
    """
    text = json.dumps(job, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def written_by(path: Path, job_tag: str) -> bool:
    """Whether ``path`` is a complete raster whose ``GEOSEG_JOB`` tag is ``job_tag``."""
    if not path.is_file():
        return False
    try:
        with open_dataset(path) as ds:
            return bool(ds.tags().get(JOB_TAG) == job_tag)
    except (GeosegError, RasterioError):
        return False


def class_counts(path: Path, num_classes: int, rows: int = 1024) -> np.ndarray:
    """Pixels per class of a class raster, read in strips of ``rows`` rows."""
    counts = np.zeros(num_classes, dtype=np.int64)
    with open_dataset(path) as ds:
        for window in cover(Window(0, 0, ds.height, ds.width), max(rows, 1)):
            values = read_pixels(ds, window, [1])[0].ravel()
            counts += np.bincount(values, minlength=256)[:num_classes]
    return counts


@dataclass(frozen=True)
class Legend:
    """Class names by id (background first) and one RGB colour per class.

    Examples
    --------
    >>> Legend(("background", "water"), ((0, 0, 0), (0, 0, 255))).names
    ('background', 'water')
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "colors", tuple(tuple(int(v) for v in c[:3]) for c in self.colors))
        if len(self.names) != len(self.colors):
            raise ValueError(f"{len(self.names)} class names but {len(self.colors)} colours")


class ClassRasterWriter(Committing):
    """The single writer of a class raster (and optionally its confidence raster).

    Leaving the ``with`` block on an error deletes every temporary file; an existing output is
    only replaced by a complete one.

    Parameters
    ----------
    path
        Final class raster path.
    grid
        Grid of the input scene; the output has the same size, CRS and transform.
    legend
        Class names and colours.
    confidence_path
        Where to write the uint8 confidence raster (percent), or None.
    overwrite
        Replace existing outputs.
    resume
        A JSON-serialisable fingerprint of the job, to make the run resumable: the working files
        get fixed hidden names (``.<stem>.partial.tif``) and a journal
        (``.<stem>.partial.jsonl``) records each block given a ``block_id`` once it is on disk. A
        writer with the same fingerprint (and classes, colours, size) reopens them and lists the
        recorded blocks in :attr:`finished_before`; any other fingerprint starts afresh. On an
        error the partial files are kept for the next attempt; :meth:`commit` removes them.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        grid: RasterGrid,
        legend: Legend,
        confidence_path: str | os.PathLike[str] | None = None,
        *,
        overwrite: bool = False,
        resume: Any = None,
        job_tag: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.confidence_path = Path(confidence_path) if confidence_path else None
        self.job_tag = job_tag
        for target in self.finals:
            same_job = resume is not None and job_tag is not None and written_by(target, job_tag)
            check_writable(target, overwrite or same_job)
            with writing(target):
                target.parent.mkdir(parents=True, exist_ok=True)
        self.class_names = list(legend.names)
        colors = legend.colors
        self.journal = None
        if resume is not None:
            header = {
                "job": resume,
                "classes": self.class_names,
                "colors": [list(map(int, c[:3])) for c in colors],
                "confidence": self.confidence_path is not None,
                "size": [grid.height, grid.width],
            }
            self.journal = BlockJournal(partial_name(self.path, ".jsonl"), header)
        self.sums = SumsFile(partial_name(self.path, ".sums"))
        self._bands: list[WorkingBand] = []
        with writing(self.path):
            kept = self._reopen(grid) or self._start_afresh(grid)
            if self.journal is not None:
                self.journal.start(kept)
            self._describe_classes(colors)
        self.finished_before = {r["block"]: list(r["counts"]) for r in kept if "block" in r}
        """Pieces an earlier run wrote and that read back intact: piece id -> pixels per class."""
        self.sums_before = {r["sums"]: r for r in kept if "sums" in r}
        """Sums an earlier run kept (see :meth:`keep_sums`) and that read back intact, by key."""

    @property
    def finals(self) -> list[Path]:
        """The output paths: class raster, then confidence raster if any."""
        return [p for p in (self.path, self.confidence_path) if p is not None]

    def _reopen(self, grid: RasterGrid) -> list[Record]:
        """Reopen an interrupted run's working files; the journaled blocks that read back intact.

        Anything unreadable (a file cut short by a full disk or a crash, a garbled journal) is
        logged and discarded, and the run starts afresh: ``[]`` with no band open.
        """
        try:
            records = self.journal.read() if self.journal else []
            if not records:
                return []
            self._open_bands(grid, reopen=True)
            return [r for r in records if self._on_disk(r)]
        except Exception as exc:  # any damage means: start afresh
            log.warning(
                "%s: the partial files of an interrupted run are unreadable (%s); starting afresh",
                self.path,
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
            )
            self.abort_bands(keep=False)
            return []

    def _start_afresh(self, grid: RasterGrid) -> list[Record]:
        """Create new working files (unless reopened ones are open); no block is done."""
        if self.journal is not None:
            self.sums.clear()
        if not self._bands:
            self._open_bands(grid, reopen=False)
        return []

    def _open_bands(self, grid: RasterGrid, reopen: bool) -> None:
        """Open (or create) one working band per output."""
        for final in self.finals:
            work = partial_name(final) if self.journal else None
            self._bands.append(WorkingBand(final, grid, NODATA_CLASS, work, reopen))

    def abort_bands(self, keep: bool) -> None:
        """Close the working bands; delete their files unless ``keep``."""
        for band in self._bands:
            band.abort(keep=keep)
        self._bands = []

    def _on_disk(self, record: Record) -> bool:
        """Whether a journaled block (or run of sums) reads back exactly as written."""
        if "sums" in record:
            return self.sums.read(record) is not None
        window = record_window(record)
        return checksum([band.read(window) for band in self._bands]) == record["crc"]

    def _describe_classes(self, colors: Sequence[Sequence[int]]) -> None:
        ds = self._bands[0].ds
        ds.write_colormap(1, colormap_of(colors))
        ds.set_band_description(1, "classes")
        if self.job_tag is not None:
            for band in self._bands:
                band.ds.update_tags(**{JOB_TAG: self.job_tag})
        ds.update_tags(
            CLASS_NAMES=json.dumps(self.class_names),
            CLASS_COLORS=json.dumps([list(map(int, c[:3])) for c in colors]),
        )
        ds.update_tags(1, **{f"CLASS_{i}": name for i, name in enumerate(self.class_names)})
        if len(self._bands) > 1:
            self._bands[1].ds.set_band_description(1, "confidence (%)")

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
        written = (
            [classes] if len(self._bands) == 1 or confidence is None else [classes, confidence]
        )
        with writing(self.path):
            for band, data in zip(self._bands, written, strict=False):
                band.write(data, window)
            if self.journal is not None and block_id is not None:
                for band in self._bands:
                    band.flush()
                counts = np.bincount(classes.ravel(), minlength=256)[: len(self.class_names)]
                self.journal.record(block_id, window, counts.tolist(), checksum(written))

    def keep_sums(self, key: str, data: bytes) -> None:
        """In a resumable run, keep bytes a resumed run needs (a block's partial sums over the
        windows it shares with blocks not finished yet) under ``key``; else do nothing."""
        if self.journal is None:
            return
        with writing(self.path):
            offset, crc = self.sums.append(data)
            self.journal.record_sums(key, offset, len(data), crc)

    def kept_sums(self, key: str) -> bytes | None:
        """The bytes an earlier run kept under ``key`` (None if none, or not intact)."""
        record = self.sums_before.get(key)
        return None if record is None else self.sums.read(record)

    def commit(self) -> None:
        """Finish the COGs, then rename them into place, then drop the working files.

        Every COG is complete before the first is renamed, and the working files and journal go
        last, so a run killed anywhere in here resumes without recomputing a block.
        """
        for band, resampling in zip(self._bands, ("MODE", "AVERAGE"), strict=False):
            band.build_cog(resampling)
        for band in self._bands:
            band.cog.commit()
        for band in self._bands:
            remove_quietly(band.work)
        if self.journal is not None:
            self.journal.remove()
        self.sums.clear()

    def abort(self) -> None:
        """Delete every temporary file (a resumable run keeps its partial files and journal)."""
        self.abort_bands(keep=self.journal is not None)
