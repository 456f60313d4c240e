"""The single writer of a class raster (and its optional confidence raster).

Blocks are written into tiled working GeoTIFFs; :meth:`ClassRasterWriter.commit` turns them
into Cloud-Optimized GeoTIFFs with overviews (mode resampling for classes), a colour table and
class names, and renames them into place. A resumable writer keeps fixed working names and a
:class:`~geoseg.io.journal.BlockJournal` so that a killed run continues where it stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from geoseg.conventions import NODATA_CLASS
from geoseg.geo.geobox import RasterGrid
from geoseg.geo.window import Window
from geoseg.io.files import Committing, PendingOutput, check_writable, remove_quietly
from geoseg.io.journal import BlockJournal, Record, checksum, record_window
from geoseg.io.raster import GDAL_WRITE_ENV, band_profile, colormap_of, gdal_env, to_cog, to_rio


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

    def finish(self, resampling: str) -> None:
        """Copy into a COG under a temporary name, rename it into place, drop the working file."""
        self.ds.close()
        to_cog(self.work, self.cog.tmp, resampling)
        self.cog.commit()
        remove_quietly(self.work)

    def abort(self, keep: bool = False) -> None:
        """Close; delete the temporary COG and (unless ``keep``) the working file."""
        if not self.ds.closed:
            self.ds.close()
        if not keep:
            remove_quietly(self.work)
        self.cog.abort()


def partial_name(final: Path, suffix: str | None = None) -> Path:
    """The fixed hidden working name of a resumable output: ``.<stem>.partial<suffix>``."""
    return final.with_name(f".{final.stem}.partial{final.suffix if suffix is None else suffix}")


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
    ) -> None:
        self.path = Path(path)
        self.confidence_path = Path(confidence_path) if confidence_path else None
        for target in self.finals:
            check_writable(target, overwrite)
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
        records = self.journal.read() if self.journal else []
        self._bands = self._open_bands(grid, reopen=bool(records))
        if not self._bands:  # a partial file was unreadable: start afresh
            records, self._bands = [], self._open_bands(grid, reopen=False)
        kept = [r for r in records if self._on_disk(r)]
        self.finished_before = {r["block"]: list(r["counts"]) for r in kept}
        """Blocks an earlier run wrote and that read back intact: block id -> pixels per class."""
        if self.journal is not None:
            self.journal.start(kept)
        self._describe_classes(colors)

    @property
    def finals(self) -> list[Path]:
        """The output paths: class raster, then confidence raster if any."""
        return [p for p in (self.path, self.confidence_path) if p is not None]

    def _open_bands(self, grid: RasterGrid, reopen: bool) -> list[WorkingBand]:
        """The working bands; when reopening fails, an empty list (after closing what opened)."""
        bands: list[WorkingBand] = []
        for final in self.finals:
            work = partial_name(final) if self.journal else None
            try:
                bands.append(WorkingBand(final, grid, NODATA_CLASS, work, reopen))
            except RasterioError:
                for band in bands:
                    band.abort()
                if not reopen:
                    raise
                return []
        return bands

    def _on_disk(self, record: Record) -> bool:
        """Whether a journaled block reads back from the working files exactly as written."""
        window = record_window(record)
        return checksum([band.read(window) for band in self._bands]) == record["crc"]

    def _describe_classes(self, colors: Sequence[Sequence[int]]) -> None:
        ds = self._bands[0].ds
        ds.write_colormap(1, colormap_of(colors))
        ds.set_band_description(1, "classes")
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
        for band, data in zip(self._bands, written, strict=False):
            band.write(data, window)
        if self.journal is not None and block_id is not None:
            for band in self._bands:
                band.flush()
            counts = np.bincount(classes.ravel(), minlength=256)[: len(self.class_names)]
            self.journal.record(block_id, window, counts.tolist(), checksum(written))

    def commit(self) -> None:
        """Finish the COGs and rename them into place."""
        for band, resampling in zip(self._bands, ("MODE", "AVERAGE"), strict=False):
            band.finish(resampling)
        if self.journal is not None:
            self.journal.remove()

    def abort(self) -> None:
        """Delete every temporary file (a resumable run keeps its partial files and journal)."""
        for band in self._bands:
            band.abort(keep=self.journal is not None)
