"""Segment a whole scene: plan blocks, run them on an executor, write the COGs, vectorize.

:func:`segment_scene` produces the class (and confidence) rasters; :func:`predict_scene` adds the
polygon layer and a summary. Both delegate: geometry to :mod:`geoseg.geo.tiling`, the per-block work to
:mod:`geoseg.engine.block`, parallelism to :mod:`geoseg.engine.executors`, writing to
:class:`geoseg.io.raster.ClassRasterWriter`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geoseg.errors import InvalidInputError
from geoseg.engine.executors import Executor, SequentialExecutor
from geoseg.io.files import check_writable, is_virtual_path, require_file
from geoseg.geo.tiling import TileGrid, default_block_size, default_overlap, plan_blocks
from geoseg.models.contract import ModelContract, check_input
from geoseg.models.modelfile import file_sha256, read_contract
from geoseg.io.raster import ClassRasterWriter, RasterGrid, SceneReader, ground_sample_distance
from geoseg.engine.block import ModelSpec, SceneJob, scene_path

Progress = Callable[[int, int], None]
"""Called with (tiles done, tiles total)."""


@dataclass(frozen=True)
class TilingOptions:
    """How a scene is cut up: tile size (None: the model's), overlap, batch and block size.

    The overlap defaults to an eighth of the tile (64 pixels for 512-pixel tiles).
    """

    tile: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    block_size: int | None = None


@dataclass(frozen=True)
class OutputPaths:
    """Where one scene's products go."""

    classes: Path
    confidence: Path | None = None
    vector: Path | None = None

    @classmethod
    def for_scene(
        cls,
        scene: str,
        out_dir: str | os.PathLike[str],
        confidence: bool,
        vector_suffix: str | None,
    ) -> OutputPaths:
        """``OUT/<stem>_classes.tif``, ``OUT/<stem>_confidence.tif``, ``OUT/<stem>.<ext>``."""
        out = Path(out_dir)
        stem = Path(scene.rstrip("/")).stem
        return cls(
            out / f"{stem}_classes.tif",
            out / f"{stem}_confidence.tif" if confidence else None,
            out / f"{stem}{vector_suffix}" if vector_suffix else None,
        )

    def existing(self) -> list[Path]:
        """Outputs that already exist."""
        return [p for p in (self.classes, self.confidence, self.vector) if p and p.exists()]


@dataclass
class SegmentResult:
    """Figures from :func:`segment_scene`."""

    classes_path: Path
    confidence_path: Path | None
    class_names: list[str]
    class_pixels: np.ndarray
    pixel_area_m2: float
    scene_pixels: int
    tiles: int
    tile: int
    seconds: float

    @property
    def computed_pixels(self) -> int:
        """Pixels pushed through the model."""
        return self.tiles * self.tile * self.tile

    def area_ha(self) -> dict[str, float]:
        """Area per class in hectares."""
        return {
            name: float(n) * self.pixel_area_m2 / 1e4
            for name, n in zip(self.class_names, self.class_pixels, strict=True)
        }


@dataclass
class PredictResult:
    """Outputs and figures of one :func:`predict_scene` run."""

    scene: str
    segment: SegmentResult
    vector_path: Path | None = None
    vector_features: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def outputs(self) -> list[Path]:
        """Every file written."""
        paths = [self.segment.classes_path, self.segment.confidence_path, self.vector_path]
        return [p for p in paths if p is not None]

    @property
    def total_seconds(self) -> float:
        """Wall time of the whole run."""
        return sum(self.seconds.values())


def model_job(
    scene: str,
    model: str | os.PathLike[str],
    contract: ModelContract,
    tiling: TilingOptions,
    device: str = "auto",
    tta: bool = False,
    bands: Sequence[int] | None = None,
    nodata: float | None = None,
) -> SceneJob:
    """The :class:`SceneJob` that runs a model file over a scene."""
    spec = ModelSpec(os.path.abspath(model), file_sha256(model), device, tta)
    tile = tiling.tile or contract.tile_size
    return SceneJob(
        scene=scene,
        predictor=spec,
        normalization=contract.normalization,
        tile=tile,
        overlap=tiling.overlap if tiling.overlap is not None else default_overlap(tile),
        batch_size=tiling.batch_size,
        bands=tuple(bands or ()),
        nodata=nodata,
    )


def inspect_scene(job: SceneJob) -> tuple[RasterGrid, float | None]:
    """Open the scene once to learn its grid and pixel size in metres."""
    with SceneReader(job.scene, job.bands or None, job.nodata) as reader:
        return reader.grid, ground_sample_distance(reader.grid)


def segment_scene(
    job: SceneJob,
    paths: OutputPaths,
    class_names: Sequence[str],
    colors: Sequence[Sequence[int]],
    block_size: int | None = None,
    executor: Executor | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    resume: bool = False,
) -> SegmentResult:
    """Write the class raster (and confidence raster) of one scene.

    Memory is bounded by the block size (times the blocks in flight on an executor), never by the
    scene size. With ``resume``, finished blocks are journaled beside the output and a run of the
    same job that was interrupted continues where it stopped (see :class:`ClassRasterWriter`).
    """
    started = time.perf_counter()
    grid, gsd = inspect_scene(job)
    tiles = TileGrid(grid.height, grid.width, job.tile, job.overlap)
    size = block_size or default_block_size(job.tile, job.overlap, max(grid.height, grid.width))
    blocks = plan_blocks(tiles, size)
    total = sum(b.num_tiles for b in blocks)
    done = 0

    def on_tiles(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    counts = np.zeros(len(class_names), dtype=np.int64)
    computed = 0
    executor = executor or SequentialExecutor()
    key = None
    if resume:  # what must not change between an interrupted run and its resumption
        stat = None if is_virtual_path(job.scene) else os.stat(job.scene)
        key = {"job": repr(job), "block": size, "scene": stat and [stat.st_size, stat.st_mtime_ns]}
    with ClassRasterWriter(
        paths.classes, grid, class_names, colors, paths.confidence, overwrite, key
    ) as writer:
        todo = [b for b in blocks if b.id not in writer.finished_before]
        for prior in writer.finished_before.values():
            counts += np.asarray(prior, dtype=np.int64)
        if len(todo) < len(blocks):
            on_tiles(total - sum(b.num_tiles for b in todo))
        for result in executor.map_blocks(job, todo, on_tiles):
            block = result.block
            writer.write_block(block.write, result.classes, result.confidence, block.id)
            counts += result.class_counts(len(class_names))
            computed += result.tiles
    if progress:
        progress(total, total)
    return SegmentResult(
        paths.classes, paths.confidence, list(class_names), counts, (gsd or 1.0) ** 2,
        grid.width * grid.height, computed, job.tile, time.perf_counter() - started,
    )  # fmt: skip


def predict_scene(
    scene: str | os.PathLike[str],
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    tiling: TilingOptions | None = None,
    device: str = "auto",
    tta: bool = False,
    bands: Sequence[int] | None = None,
    nodata: float | None = None,
    confidence: bool = False,
    vector_format: str | None = "gpkg",
    simplify: float = 0.0,
    min_area: float = 0.0,
    overwrite: bool = False,
    executor: Executor | None = None,
    progress: Progress | None = None,
    resume: bool = False,
) -> PredictResult:
    """Segment a GeoTIFF with a model file: class COG, optional confidence COG, polygon layer.

    Parameters
    ----------
    scene
        Any raster GDAL opens (local path, VRT, ``/vsicurl/...``).
    model
        A geoseg model file (``geoseg model-create`` or ``geoseg train``).
    out_dir
        Output folder; files are named after the scene.
    tiling
        Tile size, overlap, batch size and block size.
    device
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    tta
        Average the 8 D4 rotations/flips of every tile.
    bands
        1-based bands to read (default: all but alpha).
    nodata
        Nodata value for scenes that declare none.
    confidence
        Also write ``<stem>_confidence.tif`` (winning probability in %).
    vector_format
        ``gpkg``, ``geojson``, ``fgb``, ``parquet``, ``shp``; None for no polygons.
    simplify, min_area
        Polygon simplification tolerance (m) and minimum area (m²).
    overwrite
        Replace existing outputs.
    executor
        Where blocks run (default: this process).
    progress
        Called with (tiles done, tiles total).
    resume
        Journal finished blocks beside the outputs and continue an interrupted run of the same
        job (scene, model, tiling) without recomputing them; the result is byte-identical.

    Examples
    --------
    >>> result = predict_scene("scene.tif", "model.safetensors", "out/")  # doctest: +SKIP
    >>> result.segment.area_ha()  # doctest: +SKIP
    {'background': 12.5, 'building': 3.1}
    """
    from geoseg.vector.vectorize import VECTOR_FORMATS, vectorize_raster

    require_file(scene, "scene")
    path = scene_path(scene)
    contract = read_contract(model)
    tiling = tiling or TilingOptions()
    job = model_job(path, model, contract, tiling, device, tta, bands, nodata)
    grid, gsd = inspect_scene(job)
    check_input(contract, path, grid.count, grid.dtype, gsd)
    suffix = vector_suffix(vector_format, VECTOR_FORMATS)
    paths = OutputPaths.for_scene(path, out_dir, confidence, suffix)
    for existing in paths.existing():
        check_writable(existing, overwrite)
    seg = segment_scene(
        job, paths, contract.classes, contract.colors, tiling.block_size, executor, overwrite,
        progress, resume,
    )  # fmt: skip
    result = PredictResult(path, seg, seconds={"segment": seg.seconds})
    if paths.vector is not None:
        vec = vectorize_raster(
            paths.classes, paths.vector, vector_format=vector_format, simplify=simplify,
            min_area=min_area, overwrite=overwrite, executor=executor,
        )  # fmt: skip
        result.vector_path, result.vector_features = vec.path, vec.features
        result.seconds["vectorize"] = vec.seconds
    return result


def vector_suffix(vector_format: str | None, formats: dict[str, str]) -> str | None:
    """File suffix of a vector format name, or None for no vector output."""
    if vector_format is None or vector_format == "none":
        return None
    if vector_format not in formats:
        from geoseg.errors import choice_error

        raise choice_error("vector format", vector_format, [*formats, "none"])
    return formats[vector_format]


def check_positive(name: str, value: float) -> None:
    """Raise :class:`InvalidInputError` for a negative option value."""
    if value < 0:
        raise InvalidInputError(f"--{name} must be >= 0, got {value}")
