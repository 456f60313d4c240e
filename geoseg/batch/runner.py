"""The batch runner: every scene of a data catalog, skipping what is already up to date.

``geoseg run-catalog`` and the Prefect flows in ``flows/`` both run catalogs through this
module; it never imports Prefect (the flows add retries, artifacts and schedules around it).

One scene is a chain of small steps, each callable on its own (the scene flow makes each a
task): :func:`input_fingerprint` -> :func:`freshness` -> :func:`check_scene` ->
:func:`segment` -> :func:`vectorize` -> :func:`~geoseg.io.quicklook_sheet.write_sheet` ->
:func:`write_record`. :func:`run_scene` chains them.

The skip rule: a scene is up to date when its STAC record exists (it is written last, so the
outputs completed), records the same input fingerprint, the same model hash and the same
result-shaping parameters, and every asset it lists exists. Options that do not change the
result (batch size, block size, device, where blocks run) are recorded but never trigger a
re-run: tiled output is tested to be identical for any block size.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from geoseg.batch.catalog import (
    Catalog,
    Execution,
    SceneEntry,
    discover_files,
    entry_where,
    scene_id,
    yaml_path,
)
from geoseg.batch.outcomes import BatchSummary, SceneOutcome, first_line
from geoseg.conventions import LOGGER_NAME
from geoseg.engine.block import BlockResult, SceneJob
from geoseg.engine.executors import Executor, make_executor
from geoseg.engine.scene import PredictResult, Progress, predict_scene
from geoseg.engine.scene import check_scene as check_input_scene
from geoseg.errors import CatalogError, GeosegError, InputFileNotFoundError, RemoteReadError
from geoseg.geo.tiling import Block
from geoseg.io.files import (
    is_virtual_path,
    output_lock,
    remove_quietly,
    remove_stale_temporaries,
)
from geoseg.io.quicklook_sheet import write_sheet
from geoseg.io.stac import (
    ModelInfo,
    asset_paths,
    fingerprint,
    read_item,
    record_path,
    scene_item,
    write_item,
)
from geoseg.models.contract import ModelContract
from geoseg.models.modelfile import file_sha256, read_contract
from geoseg.options import VECTOR_FORMATS, PredictOptions
from geoseg.vector.vectorize import vectorize_raster

log = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True)
class SceneRun:
    """One discovered scene and everything needed to process it (small and picklable).

    Attributes
    ----------
    id
        ``<entry id>`` or, for a glob's match, ``<entry id>/<file stem>``.
    where
        The catalog entry's YAML path (``scenes[3]``), for error messages.
    source
        The input: an absolute path or a GDAL URL.
    model_name, model, model_sha256, contract
        The catalog's model name, its file, the file's SHA-256 and its contract.
    out_dir
        This entry's output folder.
    options
        Input, tiling, inference and output options (always ``overwrite`` and ``resume``).
    parameters
        The options that shape the result, as recorded in the STAC item.
    """

    id: str
    where: str
    source: str
    model_name: str
    model: str
    model_sha256: str
    contract: ModelContract
    out_dir: str
    options: PredictOptions
    tags: tuple[str, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        """File stem shared by every output of this scene."""
        return Path(self.source.rstrip("/")).stem

    @property
    def record(self) -> Path:
        """The STAC item ``<out_dir>/<stem>.stac.json``."""
        return record_path(self.out_dir, self.stem)

    @property
    def quicklook(self) -> Path:
        """The quicklook PNG ``<out_dir>/<stem>_quicklook.png``."""
        return Path(self.out_dir) / f"{self.stem}_quicklook.png"


def result_parameters(options: PredictOptions, contract: ModelContract) -> dict[str, Any]:
    """The options that change a scene's outputs, in JSON form (compared with the record)."""
    _, overlap = options.tiling.resolve(contract.tile_size)
    bands, out = options.input.bands, options.output
    params = {
        "tile": options.tiling.tile or "auto",  # picked per scene from its size
        "overlap": overlap,
        "tta": options.inference.tta,
        "bands": list(bands) if bands else None,
        "nodata": options.input.nodata,
        "confidence": out.confidence,
        "vector_formats": list(out.vector_formats),
        "simplify": out.simplify,
        "min_area": out.min_area,
    }
    return dict(json.loads(json.dumps(params)))


def scene_options(catalog: Catalog, entry: SceneEntry) -> PredictOptions:
    """The options of one entry's scenes: the catalog's sections and the entry's input."""
    return PredictOptions(
        input=entry.input,
        tiling=catalog.defaults.tiling,
        inference=catalog.defaults.inference,
        output=catalog.outputs.options,
        overwrite=True,
        resume=True,
    )


class _ModelCache:
    """Each model's contract and hash, read once per plan."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._info: dict[str, tuple[ModelContract, str]] = {}

    def __call__(self, name: str) -> tuple[ModelContract, str]:
        if name not in self._info:
            path = self.catalog.models[name]
            try:
                self._info[name] = (read_contract(path), file_sha256(path))
            except GeosegError as exc:
                raise CatalogError(f"{self.catalog.path.name}: models.{name}: {exc}") from None
        return self._info[name]


def plan_scenes(catalog: Catalog, only: Sequence[str] | None = None) -> list[SceneRun]:
    """Discover the catalog's scenes now (globs expanded) and describe each run.

    Parameters
    ----------
    catalog
        A loaded catalog (:func:`geoseg.batch.catalog.load_catalog`).
    only
        Entry ids or scene ids to keep (default: every scene).

    Raises
    ------
    CatalogError
        When an ``only`` id matches nothing, two files of an entry share a scene id, or a model
        file is not readable.
    """
    models = _ModelCache(catalog)
    runs = []
    for entry in catalog.scenes:
        for file in discover_files(entry):
            run_id = scene_id(entry, file)
            if not only or entry.id in only or run_id in only:
                runs.append(_scene_run(catalog, entry, file, run_id, models))
    _check_only(catalog, only or (), runs)
    _check_unique(catalog, runs)
    return runs


def _scene_run(
    catalog: Catalog, entry: SceneEntry, file: str, run_id: str, models: _ModelCache
) -> SceneRun:
    contract, sha = models(entry.model)
    options = scene_options(catalog, entry)
    return SceneRun(
        id=run_id,
        where=entry_where(catalog, entry),
        source=file,
        model_name=entry.model,
        model=str(catalog.models[entry.model]),
        model_sha256=sha,
        contract=contract,
        out_dir=str(catalog.output_dir / entry.id),
        options=options,
        tags=entry.tags,
        parameters=result_parameters(options, contract),
    )


def _check_only(catalog: Catalog, only: Sequence[str], runs: Sequence[SceneRun]) -> None:
    found = {r.id for r in runs} | {r.id.split("/")[0] for r in runs}
    unknown = [name for name in only if name not in found]
    if unknown:
        entries = ", ".join(e.id for e in catalog.scenes)
        raise CatalogError(f"only: {unknown[0]!r} matches no scene; entries are: {entries}")


def _check_unique(catalog: Catalog, runs: Sequence[SceneRun]) -> None:
    seen: dict[str, SceneRun] = {}
    for run in runs:
        if run.id in seen:
            raise CatalogError(
                f"{catalog.path.name}: {run.where}.path: {seen[run.id].source} and {run.source} "
                f"both make scene {run.id!r}; split them into separate entries"
            )
        seen[run.id] = run


# --- the steps of one scene -------------------------------------------------------------------


def input_fingerprint(run: SceneRun) -> dict[str, Any]:
    """The input's :func:`~geoseg.io.stac.fingerprint`; a missing file names its YAML path."""
    if not is_virtual_path(run.source) and not os.path.isfile(run.source):
        raise InputFileNotFoundError(f"{run.where}.path: file not found: {run.source}")
    return fingerprint(run.source)


def freshness(run: SceneRun, source_fingerprint: Mapping[str, Any]) -> str | None:
    """None when the scene's outputs are complete and up to date, else why it must run."""
    item = read_item(run.record)
    if item is None:
        return "new"
    props = item.get("properties", {})
    if props.get("geoseg:input", {}).get("fingerprint") != dict(source_fingerprint):
        return "input changed"
    if props.get("geoseg:model", {}).get("sha256") != run.model_sha256:
        return "model changed"
    if props.get("geoseg:parameters") != dict(run.parameters):
        return "parameters changed"
    if not all(path.exists() for path in asset_paths(item, run.out_dir)):
        return "outputs incomplete"
    return None


def check_scene(run: SceneRun) -> None:
    """Check the input against the model contract (bands, dtype, pixel size) before any work.

    Raises :class:`~geoseg.errors.GeosegError` subclasses: unreadable raster, band or dtype
    mismatch.
    """
    try:
        check_input_scene(run.source, run.contract, run.options)
    except GeosegError as exc:
        raise as_catalog_error(exc, run) from exc


def segment(
    run: SceneRun, executor: Executor | None = None, progress: Progress | None = None
) -> PredictResult:
    """Write the class COG (and confidence COG) of one scene, replacing older ones.

    The scene's STAC record goes first, so a failure from here on never looks complete.

    Finished blocks are journaled, so a run interrupted mid-scene (a killed worker, a reboot)
    continues where it stopped on the next attempt or the next scheduled run.
    """
    remove_quietly(run.record)  # a scene being replaced must never look complete
    rasters_only = replace(run.options, output=replace(run.options.output, vector_formats=()))
    return predict_scene(
        run.source, run.model, run.out_dir, rasters_only, executor=executor, progress=progress
    )


def scene_products(run: SceneRun) -> list[Path]:
    """The products a scene's steps write after the rasters: polygon layers, quicklook, record."""
    out, formats = Path(run.out_dir), run.options.output.vector_formats
    return [*(out / f"{run.stem}{VECTOR_FORMATS[f]}" for f in formats), run.quicklook, run.record]


def vectorize(run: SceneRun, classes_path: Path) -> list[Path]:
    """Write one polygon layer per configured vector format; returns their paths."""
    output = run.options.output
    written = []
    for name in output.vector_formats:
        target = Path(run.out_dir) / f"{run.stem}{VECTOR_FORMATS[name]}"
        result = vectorize_raster(
            classes_path, target, output.vector, vector_format=name, overwrite=True
        )
        written.append(Path(result.path))
    return written


def write_record(
    run: SceneRun,
    source_fingerprint: Mapping[str, Any],
    result: PredictResult,
    products: Sequence[Path],
) -> Path:
    """Write the scene's STAC item last: its presence means every output is complete."""
    seg = result.segment
    others = [p for p in (seg.confidence_path, *products) if p is not None]
    item = scene_item(
        run.id.replace("/", "-"),
        seg.classes_path,
        source=run.source,
        source_fingerprint=source_fingerprint,
        model=ModelInfo(run.model_name, run.model, run.model_sha256, run.contract),
        parameters=run.parameters,
        outputs=others,
        areas_ha=seg.area_ha(),
        extra={
            "geoseg:scene_id": run.id,
            "geoseg:tags": list(run.tags),
            "geoseg:execution": _execution_options(run.options),
        },
    )
    return write_item(item, run.record)


def _execution_options(options: PredictOptions) -> dict[str, Any]:
    return {
        "batch_size": options.tiling.batch_size,
        "block_size": options.tiling.block_size,
        "device": options.inference.device,
    }


def run_scene(
    run: SceneRun,
    executor: Executor | None = None,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> SceneOutcome:
    """Process one scene unless it is up to date: the steps above, in order.

    Raises the step's error on failure (the caller decides about retries); the old STAC record is
    removed before any output is replaced, so a failed run never looks complete. The scene's
    outputs are locked from the first write to the record: a second run on them fails at once.

    Examples
    --------
    >>> catalog = load_catalog("data_catalog.yaml")  # doctest: +SKIP
    >>> [run_scene(run).status for run in plan_scenes(catalog)]  # doctest: +SKIP
    ['done', 'skipped']
    """
    started = time.perf_counter()
    source_fingerprint = input_fingerprint(run)
    reason = "forced" if force else freshness(run, source_fingerprint)
    if reason is None:
        return skipped_outcome(run, time.perf_counter() - started)
    check_scene(run)
    with output_lock(run.out_dir, run.stem):  # one run at a time writes a scene's outputs
        remove_stale_temporaries(scene_products(run))
        result = segment(run, executor, progress)
        products = [*vectorize(run, result.segment.classes_path)]
        products.append(write_sheet(run.source, result.segment.classes_path, run.quicklook, run.id))
        write_record(run, source_fingerprint, result, products)
    return done_outcome(run, result, products, reason, time.perf_counter() - started)


def done_outcome(
    run: SceneRun, result: PredictResult, products: Sequence[Path], reason: str, seconds: float
) -> SceneOutcome:
    """The outcome of a scene that ran."""
    seg = result.segment
    outputs = [p for p in (seg.classes_path, seg.confidence_path, *products, run.record) if p]
    return SceneOutcome(
        run.id,
        run.source,
        "done",
        reason,
        seconds,
        seg.area_ha(),
        tuple(str(p) for p in outputs),
        str(run.quicklook),
    )


def skipped_outcome(run: SceneRun, seconds: float = 0.0) -> SceneOutcome:
    """The outcome of an up-to-date scene; areas and outputs come from its record."""
    item = read_item(run.record) or {}
    areas = item.get("properties", {}).get("geoseg:area_ha", {})
    outputs = [*asset_paths(item, run.out_dir), run.record]
    quicklook = str(run.quicklook) if run.quicklook.exists() else None
    return SceneOutcome(
        run.id,
        run.source,
        "skipped",
        "up to date",
        seconds,
        areas,
        tuple(map(str, outputs)),
        quicklook,
    )


def failed_outcome(run: SceneRun, error: BaseException | str, seconds: float = 0.0) -> SceneOutcome:
    """The outcome of a scene that failed: the error's first line, options named by YAML path."""
    if isinstance(error, GeosegError) and not isinstance(error, CatalogError):
        error = as_catalog_error(error, run)
    return SceneOutcome(run.id, run.source, "failed", first_line(error), seconds)


def as_catalog_error(error: GeosegError, run: SceneRun) -> GeosegError:
    """The same error with its options named as the catalog names them (``scenes[3].bands``)."""
    if not error.options:
        return error
    text = error.render(lambda option: yaml_path(option, run.where))
    return type(error)(text)


def is_transient(error: BaseException) -> bool:
    """Worth retrying: I/O and network errors (``OSError``), never a user's mistake.

    A :class:`~geoseg.errors.GeosegError` (missing file, corrupt raster, band mismatch) fails the
    same way every time, so it is not retried, except a :class:`~geoseg.errors.RemoteReadError`
    (reading a URL failed, after GDAL's own HTTP retries).

    Examples
    --------
    >>> is_transient(ConnectionResetError()), is_transient(InputFileNotFoundError("x"))
    (True, False)
    >>> is_transient(RemoteReadError("/vsicurl/https://example.com/a.tif: read failed"))
    True
    """
    if isinstance(error, RemoteReadError):
        return True
    return isinstance(error, OSError) and not isinstance(error, GeosegError)


# --- executors --------------------------------------------------------------------------------


T = TypeVar("T")
R = TypeVar("R")


class LazyExecutor:
    """Starts the configured executor on the first block, so a run that skips every scene never
    starts a Dask cluster. Shared by every scene of a batch; :meth:`close` releases it."""

    def __init__(self, execution: Execution) -> None:
        self.execution = execution
        self._executor: Executor | None = None

    def started(self) -> Executor:
        """The executor, started on first use."""
        if self._executor is None:
            self._executor = make_executor(**self.execution.model_dump())
        return self._executor

    def map_blocks(
        self, job: SceneJob, blocks: Sequence[Block], on_tiles: Callable[[int], None] | None = None
    ) -> Iterator[BlockResult]:
        return self.started().map_blocks(job, blocks, on_tiles)

    def map_ordered(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return self.started().map_ordered(fn, items)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None


@contextlib.contextmanager
def open_executor(execution: Execution) -> Iterator[LazyExecutor]:
    """A :class:`LazyExecutor` closed when the block ends."""
    executor = LazyExecutor(execution)
    try:
        yield executor
    finally:
        executor.close()


# --- a whole batch ----------------------------------------------------------------------------


SceneRunner = Callable[[SceneRun, Executor, bool, "Progress | None"], SceneOutcome]
"""Runs one scene and returns its outcome, never raising: ``(run, executor, force, progress)``."""


def run_batch(
    catalog: Catalog,
    only: Sequence[str] | None = None,
    *,
    force: bool = False,
    runner: SceneRunner | None = None,
    scene_progress: Callable[[SceneRun], AbstractContextManager[Progress | None]] | None = None,
    on_outcome: Callable[[SceneOutcome], None] | None = None,
) -> BatchSummary:
    """Run every scene (or ``only`` these ids) of a catalog, going on past failures.

    Parameters
    ----------
    catalog
        A loaded catalog.
    only
        Entry ids or scene ids to run.
    force
        Re-run scenes that are up to date.
    runner
        Runs one scene (default: :func:`run_with_retries` with no retries). The Prefect flow
        passes one that runs the scene as a task with Prefect's retries.
    scene_progress
        Gives a context manager per scene that yields a ``progress(done, total)`` callback.
    on_outcome
        Called with each scene's outcome as it finishes.

    Examples
    --------
    >>> summary = run_batch(load_catalog("data_catalog.yaml"))  # doctest: +SKIP
    >>> summary.headline()  # doctest: +SKIP
    '3 scene(s): 1 done, 2 skipped, 0 failed'
    """
    started = time.perf_counter()
    runner = runner or run_with_retries
    outcomes = []
    with open_executor(catalog.execution) as executor:
        for run in plan_scenes(catalog, only):
            progress_cm = scene_progress(run) if scene_progress else contextlib.nullcontext()
            with progress_cm as progress:
                outcome = runner(run, executor, force, progress)
            log.info(
                "%s: %s (%s, %.1f s)", outcome.id, outcome.status, outcome.reason, outcome.seconds
            )
            outcomes.append(outcome)
            if on_outcome:
                on_outcome(outcome)
    return BatchSummary(tuple(outcomes), time.perf_counter() - started)


def retrying(retries: int, retry_delay: float = 10.0) -> SceneRunner:
    """A :data:`SceneRunner` that retries transient errors ``retries`` times."""

    def runner(
        run: SceneRun, executor: Executor, force: bool, progress: Progress | None
    ) -> SceneOutcome:
        return run_with_retries(run, executor, force, progress, retries, retry_delay)

    return runner


def run_with_retries(
    run: SceneRun,
    executor: Executor | None = None,
    force: bool = False,
    progress: Progress | None = None,
    retries: int = 0,
    retry_delay: float = 10.0,
) -> SceneOutcome:
    """:func:`run_scene`, retrying transient errors; any failure becomes a failed outcome."""
    started = time.perf_counter()
    for attempt in range(retries + 1):
        try:
            return run_scene(run, executor, force=force, progress=progress)
        except Exception as exc:
            if attempt < retries and is_transient(exc):
                log.warning(
                    "%s: %s; retry %d of %d in %g s",
                    run.id,
                    first_line(exc),
                    attempt + 1,
                    retries,
                    retry_delay,
                )
                time.sleep(retry_delay)
                continue
            return failed_outcome(run, exc, time.perf_counter() - started)
    raise AssertionError("unreachable")
