"""One scene as Prefect tasks, and the coarse per-scene task the catalog flow maps over scenes.

Every task calls one function of :mod:`geoseg.batch.runner` and passes paths and small dataclasses,
never pixels; blocks are Dask work inside the segment step (the catalog's ``execution``), never
Prefect tasks. ``cache_policy=NO_CACHE``: the skip rule is geoseg's STAC record, not Prefect's
cache, and inputs are not hashed. Transient errors (``OSError`` that is not a ``GeosegError``)
are retried; a user's mistake (missing file, corrupt raster, band mismatch) is not.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from geoseg.batch import runner as batch
from geoseg.batch.catalog import load_catalog
from geoseg.batch.outcomes import SceneOutcome, first_line
from geoseg.batch.runner import SceneRun
from geoseg.conventions import LOGGER_NAME
from geoseg.engine.executors import Executor
from geoseg.engine.scene import PredictResult
from geoseg.errors import CatalogError
from geoseg.io.files import output_lock, remove_stale_temporaries
from geoseg.io.quicklook_sheet import write_sheet

log = logging.getLogger(LOGGER_NAME)
RETRIES = 2
RETRY_DELAY_SECONDS = 30.0


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry (and log) only transient errors.

    What :func:`geoseg.batch.runner.is_transient` accepts: I/O and network errors, never a user's
    mistake. Each retry is logged through ``logging.getLogger("geoseg")``.
    """
    try:
        state.result()
    except Exception as exc:
        transient = batch.is_transient(exc)
        if transient:
            log.warning("%s: %s; Prefect retries it", task_run.name, first_line(exc))
        return transient
    return False


RETRYING: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "retries": RETRIES,
    "retry_delay_seconds": RETRY_DELAY_SECONDS,
    "retry_condition_fn": retry_transient,
}


@task(name="process-scene", task_run_name="{run.id}", **RETRYING)
def process_scene(
    run: SceneRun, executor: Executor | None = None, force: bool = False
) -> SceneOutcome:
    """Everything for one scene (skip if up to date): the catalog flow's one task per scene."""
    return batch.run_scene(run, executor, force=force)


@task(name="check-scene", task_run_name="check {run.id}", **RETRYING)
def check_scene(run: SceneRun, force: bool = False) -> tuple[dict[str, Any], str | None]:
    """Fingerprint the input; unless up to date, check it against the model contract.

    Returns the fingerprint and why the scene must run (None: up to date).
    """
    fingerprint = batch.input_fingerprint(run)
    reason = "forced" if force else batch.freshness(run, fingerprint)
    if reason is not None:
        batch.check_scene(run)
    return fingerprint, reason


@task(name="segment", task_run_name="segment {run.id}", **RETRYING)
def segment(run: SceneRun, executor: Executor | None = None) -> PredictResult:
    """Class COG (and confidence COG); the old record goes first so a failure never looks done."""
    return batch.segment(run, executor)


@task(name="vectorize", task_run_name="vectorize {run.id}", **RETRYING)
def vectorize(run: SceneRun, classes_path: Path) -> list[Path]:
    """One polygon layer per configured format."""
    return batch.vectorize(run, classes_path)


@task(name="quicklook", task_run_name="quicklook {run.id}", **RETRYING)
def quicklook(run: SceneRun, classes_path: Path) -> Path:
    """The quicklook sheet (image and classes side by side, legend), as the batch runner writes."""
    return write_sheet(run.source, classes_path, run.quicklook, run.id)


@task(name="record", task_run_name="record {run.id}", **RETRYING)
def record(
    run: SceneRun, fingerprint: dict[str, Any], result: PredictResult, products: list[Path]
) -> Path:
    """The STAC item, written last."""
    return batch.write_record(run, fingerprint, result, products)


def find_scene(catalog: str, scene: str) -> tuple[Any, SceneRun]:
    """The catalog and the one scene ``scene`` (a scene id, or an entry id with one file) names."""
    loaded = load_catalog(catalog)
    runs = batch.plan_scenes(loaded, [scene])
    if len(runs) != 1:
        ids = ", ".join(r.id for r in runs)
        raise CatalogError(f"{scene!r} names {len(runs)} scenes ({ids}); give one scene id")
    return loaded, runs[0]


@flow(name="geoseg-scene")
def scene_flow(catalog: str, scene: str, force: bool = False) -> dict[str, Any]:
    """Segment one scene of a catalog step by step: check -> segment -> vectorize -> record.

    Parameters
    ----------
    catalog
        Path of the data catalog.
    scene
        A scene id (``demo/scene_00``) or the id of an entry naming a single file.
    force
        Run even when the outputs are up to date.
    """
    started = time.perf_counter()
    loaded, run = find_scene(catalog, scene)
    fingerprint, reason = check_scene(run, force)
    if reason is None:
        outcome = batch.skipped_outcome(run)
    else:
        with output_lock(run.out_dir, run.stem):  # one run at a time writes the scene's outputs
            remove_stale_temporaries(batch.scene_products(run))
            with batch.open_executor(loaded.execution) as executor:
                result = segment(run, executor)
            products = [*vectorize(run, result.segment.classes_path)]
            products.append(quicklook(run, result.segment.classes_path))
            record(run, fingerprint, result, products)
        seconds = time.perf_counter() - started
        outcome = batch.done_outcome(run, result, products, reason, seconds)
    get_run_logger().info("%s: %s (%s)", outcome.id, outcome.status, outcome.reason)
    return dataclasses.asdict(outcome)
