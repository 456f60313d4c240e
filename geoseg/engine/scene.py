"""Segment a whole scene: plan blocks, run them on an executor, write the COGs, vectorize.

:func:`segment_scene` produces the class (and confidence) rasters; :func:`predict_scene` adds the
polygon layers and a summary. Both delegate: geometry to :mod:`geoseg.geo.tiling`, the per-block
work to :mod:`geoseg.engine.block`, parallelism to :mod:`geoseg.engine.executors`, writing to
:class:`geoseg.io.class_raster.ClassRasterWriter`, polygons to :mod:`geoseg.vector`.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.engine.block import ModelSpec, SceneJob, scene_path
from geoseg.engine.executors import Executor, SequentialExecutor
from geoseg.engine.heap import release_large_buffers
from geoseg.engine.inputs import PreparedInput, prepare_input
from geoseg.engine.stitch import Piece, Stitcher, encode_shares
from geoseg.errors import EmptySceneWarning, InvalidInputError
from geoseg.geo.geobox import RasterGrid
from geoseg.geo.tiling import (
    Block,
    BlockPlan,
    TileGrid,
    auto_tile,
    block_size_for_memory,
    plan_blocks,
    plan_halo_blocks,
)
from geoseg.io.checks import check_raster
from geoseg.io.class_raster import (
    ClassRasterWriter,
    Legend,
    class_counts,
    job_tag_of,
    partial_files,
    written_by,
)
from geoseg.io.files import (
    check_writable,
    is_virtual_path,
    output_lock,
    remove_quietly,
    remove_stale_temporaries,
    require_file,
)
from geoseg.io.raster import scene_grid
from geoseg.io.raster_style import write_raster_styles
from geoseg.models.contract import ModelContract, Normalization
from geoseg.models.modelfile import file_sha256, read_contract
from geoseg.options import VECTOR_FORMATS, CrfParams, OutputOptions, PredictOptions
from geoseg.vector.vectorize import vectorize_raster

Progress = Callable[[int, int], None]
"""Called with (tiles done, tiles total)."""


@dataclass(frozen=True, kw_only=True)
class OutputPaths:
    """Where one scene's products go."""

    classes: Path
    confidence: Path | None = None
    vectors: tuple[Path, ...] = ()

    @classmethod
    def for_scene(
        cls, scene: str, out_dir: str | os.PathLike[str], output: OutputOptions
    ) -> OutputPaths:
        """``OUT/<stem>_classes.tif``, ``OUT/<stem>_confidence.tif``, ``OUT/<stem>.<ext>``."""
        out = Path(out_dir)
        stem = Path(scene.rstrip("/")).stem
        return cls(
            classes=out / f"{stem}_classes.tif",
            confidence=out / f"{stem}_confidence.tif" if output.confidence else None,
            vectors=tuple(out / f"{stem}{VECTOR_FORMATS[f]}" for f in output.vector_formats),
        )

    @property
    def all(self) -> list[Path]:
        """Every output path."""
        return [p for p in (self.classes, self.confidence, *self.vectors) if p is not None]

    def existing(self) -> list[Path]:
        """Outputs that already exist."""
        return [p for p in self.all if p.exists()]


@dataclass(kw_only=True)
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
    planned_tiles: int = 0
    """Tiles of the block plan; ``planned_tiles - tiles`` were skipped (all nodata) or resumed."""
    block_size: int = 0
    overlap: int = 0
    batch_size: int = 0

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


@dataclass(kw_only=True)
class PredictResult:
    """Outputs and figures of one :func:`predict_scene` run."""

    scene: str
    segment: SegmentResult
    vector_paths: list[Path] = field(default_factory=list)
    vector_features: int = 0
    small_features: int = 0  # features below 4 pixels' area (see VectorizeResult)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def vector_path(self) -> Path | None:
        """The first polygon layer, if any."""
        return self.vector_paths[0] if self.vector_paths else None

    @property
    def outputs(self) -> list[Path]:
        """Every file written."""
        paths = [self.segment.classes_path, self.segment.confidence_path, *self.vector_paths]
        return [p for p in paths if p is not None]

    @property
    def total_seconds(self) -> float:
        """Wall time of the whole run."""
        return sum(self.seconds.values())


def model_job(
    scene: str,
    model: str | os.PathLike[str],
    contract: ModelContract,
    options: PredictOptions,
    normalization: Normalization | None = None,
) -> SceneJob:
    """The :class:`SceneJob` that runs a model file over a scene.

    ``normalization`` (default: the contract's) is the scaling resolved for this scene by
    :func:`check_scene` (a contract's percentile stretch is computed over the scene).
    """
    inference = options.inference
    spec = ModelSpec(os.path.abspath(model), file_sha256(model), inference.device, inference.tta)
    tile, overlap = options.tiling.resolve(contract.tile_size)
    batch = options.tiling.batch_size
    if options.tiling.tile is None:  # the fastest tile for this scene (see auto_tile)
        grid = scene_grid(scene, options.input)
        tile, batch = auto_tile(grid.height, grid.width, tile, overlap, batch)
    crf = (inference.crf_params or contract.crf or CrfParams()) if inference.crf else None
    norm = normalization or contract.normalization
    return SceneJob(scene, spec, norm, tile, overlap, batch, options.input, crf)


def resume_key(job: SceneJob, block_size: int) -> dict[str, Any]:
    """What must not change between an interrupted run and its resumption.

    Only what shapes the result: the scene file, the model (hash, TTA, the device it resolves
    to), normalisation, tiling and block size; not the batch size or how the device was named.
    """
    stat = None if is_virtual_path(job.scene) else os.stat(job.scene)
    identity = getattr(job.predictor, "identity", None)
    return {
        "scene": job.scene,
        "file": stat and [stat.st_size, stat.st_mtime_ns],
        "model": identity() if callable(identity) else repr(job.predictor),
        "normalization": repr(job.normalization),
        "tiling": [job.tile, job.overlap, block_size],
        "plan": "each tile once, integer sums",
        "input": repr(job.input),
        "crf": repr(job.crf),
    }


def job_tag(job: SceneJob, legend: Legend) -> str | None:
    """The ``GEOSEG_JOB`` tag of the rasters this job writes: its :func:`resume_key` and legend.

    The block size is left out: it does not change the result (tested byte-identical). None for
    a predictor without an ``identity()`` (a plain callable, known only by its ``repr``): such
    rasters are never taken for finished by a later run.
    """
    if not callable(getattr(job.predictor, "identity", None)):
        return None
    key = resume_key(job, 0)
    key["tiling"] = [job.tile, job.overlap]
    colors = [list(map(int, c)) for c in legend.colors]
    return job_tag_of({"job": key, "classes": list(legend.names), "colors": colors})


def rasters_of(paths: OutputPaths) -> list[Path]:
    """The class raster, then the confidence raster if any."""
    return [p for p in (paths.classes, paths.confidence) if p is not None]


def finished_rasters(paths: OutputPaths, tag: str | None) -> bool:
    """Whether every raster of ``paths`` is complete and was written by the job ``tag``."""
    return tag is not None and all(written_by(p, tag) for p in rasters_of(paths))


def replaceable_when_resuming(paths: OutputPaths, tag: str | None) -> list[Path]:
    """Outputs a resumed run may replace: those of a class raster the same job finished."""
    if tag is None or not written_by(paths.classes, tag):
        return []
    kept = [p for p in rasters_of(paths) if written_by(p, tag)]
    return [*kept, *paths.vectors]


class TileCounter:
    """Counts tiles as blocks report them and passes ``(done, total)`` to a progress callback."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.done, self.progress = total, 0, progress

    def __call__(self, tiles: int) -> None:
        self.done += tiles
        if self.progress:
            self.progress(self.done, self.total)


def plan_scene(job: SceneJob, grid: RasterGrid, block_size: int) -> BlockPlan:
    """The block plan of a job: every tile once, or (with a CRF) blocks that blend a halo."""
    tiles = TileGrid(grid.height, grid.width, job.tile, job.overlap)
    if job.halo:
        return plan_halo_blocks(tiles, block_size, job.halo)
    return plan_blocks(tiles, block_size)


def segment_scene(
    job: SceneJob,
    paths: OutputPaths,
    legend: Legend,
    *,
    block_size: int | None = None,
    executor: Executor | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
    resume: bool = False,
    memory_mb: int = 512,
) -> SegmentResult:
    """Write the class raster (and confidence raster) of one scene.

    Every tile of the scene-wide grid is computed once (unless a CRF needs a halo); memory is
    bounded by the block size (default: from ``memory_mb``, see
    :func:`~geoseg.geo.tiling.block_size_for_memory`) times the blocks in flight, never by the
    scene size. With ``resume``, finished pieces are journaled beside the output and a run of the
    same job that was interrupted continues where it stopped (see :class:`ClassRasterWriter`).
    """
    started = time.perf_counter()
    release_large_buffers()  # flat memory over a long run (see geoseg.engine.heap)
    grid = scene_grid(job.scene, job.input)
    tag = job_tag(job, legend)
    if resume and finished_rasters(paths, tag):
        return finished_segment(job, paths, legend, grid, started)
    size = block_size or block_size_for_memory(
        memory_mb, job.tile, job.overlap, grid.count, len(legend.names)
    )
    plan = plan_scene(job, grid, size)
    counter = TileCounter(plan.num_tiles, progress)
    key = resume_key(job, size) if resume else None
    with ClassRasterWriter(
        paths.classes, grid, legend, paths.confidence, overwrite=overwrite, resume=key, job_tag=tag
    ) as writer:
        stitcher = Stitcher(plan, len(legend.names), writer.finished_before.keys())
        todo, completed = blocks_to_run(plan, writer, stitcher)
        counts = sum_counts(writer.finished_before.values(), len(legend.names))
        write_pieces(writer, completed, counts)
        counter(plan.num_tiles - sum(b.num_tiles for b in todo))
        results = (executor or SequentialExecutor()).map_blocks(job, todo, counter)
        computed = 0
        for result in results:
            computed += result.tiles
            write_pieces(writer, stitcher.add(result), counts)
            if resume and stitcher.waits_for(result.block):
                writer.keep_sums(result.block.id, encode_shares(result))
        assert not stitcher.pending, f"{stitcher.pending} shared windows left unfinished"
    if progress:
        progress(counter.total, counter.total)
    return SegmentResult(
        classes_path=paths.classes,
        confidence_path=paths.confidence,
        class_names=list(legend.names),
        class_pixels=counts,
        pixel_area_m2=(grid.gsd or 1.0) ** 2,
        scene_pixels=grid.width * grid.height,
        tiles=computed,
        tile=job.tile,
        seconds=time.perf_counter() - started,
        planned_tiles=counter.total,
        block_size=size,
        overlap=job.overlap,
        batch_size=job.batch_size,
    )


def blocks_to_run(
    plan: BlockPlan, writer: ClassRasterWriter, stitcher: Stitcher
) -> tuple[list[Block], list[Piece]]:
    """The blocks a (resumed) run must compute; the kept sums of the others go to ``stitcher``,
    with the shared windows they complete.

    A block is done when its own window is on disk and either every window it shares is too, or
    the interrupted run kept its sums over them (a block whose sums do not read back runs again).
    """
    todo: list[Block] = []
    completed: list[Piece] = []
    for block in plan.blocks:
        kept = writer.kept_sums(block.id) if stitcher.waits_for(block) else b""
        if block.id not in writer.finished_before or kept is None:
            todo.append(block)
        elif kept:
            completed += stitcher.add_kept(block, kept)
    return todo, completed


def finished_segment(
    job: SceneJob, paths: OutputPaths, legend: Legend, grid: RasterGrid, started: float
) -> SegmentResult:
    """The result of rasters an earlier run of the same job finished (nothing is computed).

    Working files that run had not removed yet (it was killed just after renaming) go now.
    """
    for leftover in partial_files(rasters_of(paths)):
        remove_quietly(leftover)
    return SegmentResult(
        classes_path=paths.classes,
        confidence_path=paths.confidence,
        class_names=list(legend.names),
        class_pixels=class_counts(paths.classes, len(legend.names)),
        pixel_area_m2=(grid.gsd or 1.0) ** 2,
        scene_pixels=grid.width * grid.height,
        tiles=0,
        tile=job.tile,
        seconds=time.perf_counter() - started,
    )


def sum_counts(prior: Iterable[Sequence[int]], num_classes: int) -> np.ndarray:
    """Pixels per class of the blocks an earlier run finished."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for block_counts in prior:
        counts += np.asarray(block_counts, dtype=np.int64)
    return counts


def write_pieces(writer: ClassRasterWriter, pieces: Iterable[Piece], counts: np.ndarray) -> None:
    """Write each finished piece as it comes, adding its class counts."""
    for piece in pieces:
        writer.write_block(piece.window, piece.classes, piece.confidence, piece.id)
        counts += piece.class_counts(len(counts))


def check_scene(scene: str, contract: ModelContract, options: PredictOptions) -> PreparedInput:
    """Check a scene against a model's contract before work: bands (alpha flags), dtype; warn on
    pixel size. Returns the bands to read and the scaling (see :mod:`geoseg.engine.inputs`)."""
    check_raster(scene, "scene", options.output.vector_formats)
    return prepare_input(scene, contract, options.input)


def warn_if_empty(scene: str, segment: SegmentResult) -> None:
    """One warning when every pixel of the scene is nodata (the outputs are valid but empty)."""
    if not segment.class_pixels.any():
        warnings.warn(
            f"{scene}: every pixel is nodata, so the outputs are empty; if that is wrong, check "
            "the file's nodata value or mask, or give the nodata value explicitly",
            EmptySceneWarning,
            stacklevel=3,
        )


def predict_scene(
    scene: str | os.PathLike[str],
    model: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: PredictOptions | None = None,
    *,
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> PredictResult:
    """Segment a GeoTIFF with a model file: class COG, optional confidence COG, polygon layers.

    Parameters
    ----------
    scene
        Any raster GDAL opens (local path, VRT, ``/vsicurl/...``).
    model
        A geoseg model file (``geoseg model-create`` or ``geoseg train``).
    out_dir
        Output folder; files are named after the scene.
    options
        Input (bands, nodata), tiling, inference (device, TTA), outputs (confidence, vector
        formats, simplify, min_area), ``overwrite`` and ``resume`` (journal finished blocks and
        continue an interrupted run of the same job wherever it stopped, also after its rasters
        were finished; the result is byte-identical).
    executor
        Where blocks run (default: this process).
    progress
        Called with (tiles done, tiles total).

    Raises
    ------
    OutputBusyError
        Another run holds the lock of these outputs (``OUT/.<stem>.lock``, held to the end).
    OutputWriteError
        The disk is full or the folder is not writable (nothing final-named is left behind).

    Examples
    --------
    >>> from geoseg.options import OutputOptions, PredictOptions
    >>> options = PredictOptions(output=OutputOptions(vector_formats=("gpkg",), min_area=20))
    >>> result = predict_scene("scene.tif", "model.safetensors", "out/", options)  # doctest: +SKIP
    >>> result.segment.area_ha()  # doctest: +SKIP
    {'background': 12.5, 'building': 3.1}
    """
    options = options or PredictOptions()
    require_file(scene, "scene")
    path = scene_path(scene)
    contract = read_contract(model)
    prepared = check_scene(path, contract, options)
    options = replace(options, input=prepared.input)
    job = model_job(path, model, contract, options, prepared.normalization)
    paths = OutputPaths.for_scene(path, out_dir, options.output)
    check_apart(path, Path(out_dir), paths)
    legend = Legend(contract.classes, contract.colors)
    with output_lock(out_dir, Path(path.rstrip("/")).stem):
        remove_stale_temporaries([*paths.all, *partial_files(rasters_of(paths))])
        check_existing(paths, options, job_tag(job, legend))
        seg = segment_scene(
            job,
            paths,
            legend,
            block_size=options.tiling.block_size,
            executor=executor,
            progress=progress,
            overwrite=options.overwrite,
            resume=options.resume,
            memory_mb=options.tiling.memory_mb,
        )
        warn_if_empty(path, seg)
        write_raster_styles(
            seg.classes_path, seg.class_names, contract.colors,
            counts=seg.class_pixels.tolist(), confidence_path=seg.confidence_path,
        )  # fmt: skip
        result = PredictResult(scene=path, segment=seg, seconds={"segment": seg.seconds})
        write_vectors(result, paths, options, executor)
    return result


def check_apart(scene: str, out_dir: Path, paths: OutputPaths) -> None:
    """Refuse an output folder that is a file, or an output that is the input scene itself."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInputError(
            f"{out_dir}: is a file, not a folder; set `out` to a folder for the outputs",
            option="out",
        )
    if is_virtual_path(scene):
        return
    for target in paths.all:
        if target.exists() and os.path.samefile(target, scene):
            raise InvalidInputError(
                f"{target}: is the input scene; writing outputs there would destroy it; "
                "set `out` to another folder",
                option="out",
            )


def check_existing(paths: OutputPaths, options: PredictOptions, tag: str | None) -> None:
    """Refuse existing outputs unless ``overwrite``; ``resume`` may finish the same job's."""
    replaceable = replaceable_when_resuming(paths, tag) if options.resume else []
    for existing in paths.existing():
        check_writable(existing, options.overwrite or existing in replaceable)


def write_vectors(
    result: PredictResult, paths: OutputPaths, options: PredictOptions, executor: Executor | None
) -> None:
    """Polygonize the class raster into every vector output (replacing them when resuming)."""
    for target in paths.vectors:
        vec = vectorize_raster(
            paths.classes,
            target,
            options.output.vector,
            overwrite=options.overwrite or options.resume,
            executor=executor,
        )
        result.vector_paths.append(vec.path)
        result.vector_features += vec.features
        result.small_features += vec.small_features
        result.seconds["vectorize"] = result.seconds.get("vectorize", 0.0) + vec.seconds
