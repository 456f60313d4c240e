"""Every scene of a data catalog: discover, skip what is up to date, run the rest, summarise.

The loop is geoseg's own (:func:`geoseg.batch.runner.run_batch`); the flow only runs each
scene as a Prefect task (:func:`flows.scene_flow.process_scene`), one after another so the
scene's blocks get the whole machine (or the catalog's Dask cluster). A scene that fails is
reported and the others go on; the flow run ends Failed when any scene failed, so it stands out
in the UI and can trigger an automation. Each run publishes two artifacts: a table (scene,
status, hectares per class, seconds, outputs) and a Markdown page of quicklooks.
"""

from __future__ import annotations

import re
import time
from typing import Any, cast

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.scene_flow import RETRIES, RETRY_DELAY_SECONDS, process_scene
from geoseg.batch import runner as batch
from geoseg.batch.catalog import Catalog, load_catalog
from geoseg.batch.outcomes import BatchSummary, SceneOutcome, quicklook_markdown
from geoseg.batch.runner import SceneRun
from geoseg.engine.executors import Executor


class ScenesFailedError(RuntimeError):
    """Some scenes of a catalog run failed (the others ran); ``summary`` has every outcome."""

    def __init__(self, headline: str, summary: dict[str, Any]) -> None:
        super().__init__(headline, summary)  # both in args: survives pickling

    def __str__(self) -> str:
        return str(self.args[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args[0]!r})"

    @property
    def summary(self) -> dict[str, Any]:
        """The run's summary (as a successful run returns it)."""
        return dict(self.args[1])


def artifact_key(name: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from a catalog name.

    Examples
    --------
    >>> artifact_key("Data_Catalog v2")
    'geoseg-data-catalog-v2'
    """
    return "geoseg-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "catalog")


def publish_artifacts(summary: BatchSummary, catalog: Catalog) -> None:
    """The summary table and the quicklook page, keyed by the catalog's name."""
    key = artifact_key(catalog.name)
    create_table_artifact(
        table=summary.rows(),
        key=f"{key}-summary",
        description=f"{catalog.path}: {summary.headline()}",
    )
    create_markdown_artifact(
        markdown=quicklook_markdown(summary, f"{catalog.name}: quicklooks"),
        key=f"{key}-quicklooks",
        description=summary.headline(),
    )


def task_runner(scene_task: Any) -> batch.SceneRunner:
    """A scene runner for :func:`geoseg.batch.runner.run_batch` that runs each scene as a task.

    Prefect retries transient errors (logged by the task's retry condition); a failed final state
    becomes a failed outcome, so the batch goes on with the other scenes.
    """

    def run(scene: SceneRun, executor: Executor, force: bool, progress: Any = None) -> SceneOutcome:
        started = time.perf_counter()
        with tags(*scene.tags):
            state = scene_task(scene, executor, force, return_state=True)
        if state.is_completed():
            return cast(SceneOutcome, state.result())
        error = state.result(raise_on_failure=False)
        if not isinstance(error, BaseException):
            error = state.message or "failed"
        return batch.failed_outcome(scene, error, time.perf_counter() - started)

    return run


@flow(name="geoseg-catalog")
def catalog_flow(
    catalog: str = "data_catalog.yaml",
    only: list[str] | None = None,
    force: bool = False,
    retries: int = RETRIES,
    retry_delay_seconds: float = RETRY_DELAY_SECONDS,
) -> dict[str, Any]:
    """Segment every scene of a catalog that is not up to date.

    Parameters
    ----------
    catalog
        Path of the data catalog (relative paths resolve against the flow's working directory).
    only
        Entry or scene ids to run (default: all).
    force
        Re-run scenes whose outputs are up to date.
    retries, retry_delay_seconds
        Task retries after transient (I/O, network) errors, and the delay between them.

    Returns
    -------
    dict
        The summary: headline and one record per scene.

    Raises
    ------
    ScenesFailedError
        After every scene ran and the artifacts were published, when a scene failed: the flow
        run ends Failed (visible in the UI, usable by automations); ``.summary`` has the outcomes.
    """
    logger = get_run_logger()
    loaded = load_catalog(catalog)
    scene_task = process_scene.with_options(
        retries=retries, retry_delay_seconds=retry_delay_seconds
    )
    summary = batch.run_batch(
        loaded,
        only,
        force=force,
        runner=task_runner(scene_task),
        on_outcome=lambda o: logger.info(
            "%s: %s (%s, %.1f s)", o.id, o.status, o.reason, o.seconds
        ),
    )
    publish_artifacts(summary, loaded)
    logger.info(summary.headline())
    if summary.failed:
        raise ScenesFailedError(summary.headline(), summary.as_json())
    return summary.as_json()
