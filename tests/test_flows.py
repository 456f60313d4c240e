"""The Prefect flows, run for real against Prefect's temporary local API (one per test session).

Task logic is tested through ``.fn()`` (no API); the flows run against ``prefect_test_harness``
on tiny synthetic scenes; ``prefect.yaml`` is deployed with the real ``prefect deploy``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rasterio
import yaml

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `flows` is a folder of the repository, not an installed package
    sys.path.insert(0, str(REPO))

from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import (  # noqa: E402
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.flows import load_flow_from_entrypoint  # noqa: E402
from prefect.states import Completed, Failed  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from flows import scene_flow as steps  # noqa: E402
from flows.catalog_flow import ScenesFailedError, artifact_key, catalog_flow  # noqa: E402
from flows.scene_flow import process_scene, retry_transient, scene_flow  # noqa: E402
from flows.serve import deployment_options  # noqa: E402
from geoseg.batch.catalog import load_catalog  # noqa: E402
from geoseg.batch.runner import plan_scenes, run_batch  # noqa: E402
from geoseg.errors import CatalogError, RasterReadError  # noqa: E402
from geoseg.synthetic.scenes import write_scenes  # noqa: E402
from geoseg.testing import create_test_model  # noqa: E402

SIZE = 96  # pixels: 4 tiles of 64 px with overlap 16
CATALOG = """
name: {name}
models: {{unet: model.safetensors}}
scenes:
  - {{id: demo, path: "scenes/scene_??.tif", tags: [synthetic]}}
outputs: {{path: out, vector_formats: [gpkg]}}
defaults: {{tile: 64, overlap: 16, batch_size: 8, device: cpu}}
schedule: {{cron: "15 4 * * *", timezone: Europe/Berlin}}
{extra}
"""


@pytest.fixture(scope="session")
def prefect_api() -> Any:
    """Prefect's temporary API and SQLite database, started once per session (~10-40 s)."""
    with prefect_test_harness(server_startup_timeout=None):
        from prefect.settings import PREFECT_API_URL

        yield PREFECT_API_URL.value()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("models")
    return tuple(  # type: ignore[return-value]
        create_test_model(
            folder / f"{n}.safetensors", "unet", "resnet18", 3, ["bg", "a", "b"], tile_size=64
        )
        for n in ("a", "b")
    )


def workspace(root: Path, model: Path, name: str, scenes: int = 2, extra: str = "") -> Path:
    shutil.copy(model, root / "model.safetensors")
    write_scenes(root / "scenes", scenes=scenes, size=SIZE)
    path = root / "data_catalog.yaml"
    path.write_text(textwrap.dedent(CATALOG.format(name=name, extra=extra)))
    return path


def summary_of(state: Any) -> dict[str, Any]:
    """A catalog flow's summary: its return value, or carried by the error when a scene failed."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, ScenesFailedError):
        assert state.is_failed() and state.message.endswith(str(result))
        return result.summary
    assert isinstance(result, dict), result
    return result


def statuses(summary: dict[str, Any]) -> dict[str, str]:
    return {s["id"]: s["status"] for s in summary["scenes"]}


def artifacts_of(state: Any) -> dict[str, Any]:
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def task_runs_of(state: Any, expected: set[str], timeout: float = 20.0) -> dict[str, Any]:
    """The flow run's finished task runs by name, once ``expected`` ones are recorded.

    Task runs reach the API as events, a moment after the flow returns.
    """
    flow_run_id = state.state_details.flow_run_id
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            found = {
                r.name: r
                for r in runs
                if r.state_type and r.state_type.value in ("COMPLETED", "FAILED")
            }
            if expected <= set(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


# --- task logic through .fn() (no API) --------------------------------------------------------


def test_scene_tasks_through_fn(tmp_path, model_files):
    (run,) = plan_scenes(load_catalog(workspace(tmp_path, model_files[0], "fn", scenes=1)))
    fingerprint, reason = steps.check_scene.fn(run)
    assert reason == "new" and "sha256" in fingerprint
    result = steps.segment.fn(run)
    products = [*steps.vectorize.fn(run, result.segment.classes_path)]
    products.append(steps.quicklook.fn(run, result.segment.classes_path))
    assert [p.name for p in products] == ["scene_00.gpkg", "scene_00_quicklook.png"]
    assert steps.record.fn(run, fingerprint, result, products) == run.record
    assert steps.check_scene.fn(run) == (fingerprint, None)  # now up to date
    assert process_scene.fn(run).status == "skipped"
    assert process_scene.fn(run, force=True).reason == "forced"


def test_tasks_are_coarse_uncached_and_retry_only_transient_errors(caplog):
    for task in (process_scene, steps.check_scene, steps.segment, steps.record):
        assert task.cache_policy is steps.NO_CACHE
        assert task.retries == steps.RETRIES and task.retry_condition_fn is retry_transient
    task_run = SimpleNamespace(name="demo/scene_00")  # what Prefect passes: the task run
    with caplog.at_level(logging.WARNING, logger="geoseg"):
        assert retry_transient(None, task_run, Failed(data=ConnectionResetError("reset by peer")))
        assert retry_transient(None, task_run, Failed(data=TimeoutError("read timed out")))
        assert not retry_transient(
            None, task_run, Failed(data=RasterReadError("x.tif: GDAL cannot open it"))
        )
        assert not retry_transient(None, task_run, Failed(data=ValueError("a bug")))
        assert not retry_transient(None, task_run, Completed(data=1))
    retried = [r.getMessage() for r in caplog.records if r.name == "geoseg"]
    assert retried == [
        "demo/scene_00: reset by peer; Prefect retries it",
        "demo/scene_00: read timed out; Prefect retries it",
    ]  # each retry is logged; user errors and bugs are not retried


def test_artifact_keys_are_valid():
    assert artifact_key("demo-catalog") == "geoseg-demo-catalog"
    assert artifact_key("Ortho 2023 (NRW)") == "geoseg-ortho-2023-nrw"
    assert artifact_key("___") == "geoseg-catalog"


# --- flows against the temporary API ----------------------------------------------------------


def test_catalog_flow_runs_then_skips_then_picks_up_new_scenes(tmp_path, model_files, prefect_api):
    path = str(workspace(tmp_path, model_files[0], "first-run"))
    first = catalog_flow(path, return_state=True)
    assert first.is_completed()
    assert statuses(summary_of(first)) == {"demo/scene_00": "done", "demo/scene_01": "done"}
    for stem in ("scene_00", "scene_01"):
        for suffix in ("_classes.tif", ".gpkg", "_quicklook.png", ".stac.json"):
            assert (tmp_path / "out" / "demo" / f"{stem}{suffix}").is_file()
    artifacts = artifacts_of(first)
    table = json.loads(artifacts["geoseg-first-run-summary"].data)
    assert [row["scene"] for row in table] == ["demo/scene_00", "demo/scene_01"]
    assert {"status", "bg (ha)", "a (ha)", "b (ha)", "seconds", "outputs"} <= set(table[0])
    markdown = artifacts["geoseg-first-run-quicklooks"].data
    assert markdown.count("](data:image/png;base64,") == 2
    assert set(task_runs_of(first, {"demo/scene_00", "demo/scene_01"})) >= {
        "demo/scene_00",
        "demo/scene_01",
    }

    second = catalog_flow(path, return_state=True)
    assert set(statuses(summary_of(second)).values()) == {"skipped"}

    write_scenes(tmp_path / "scenes", scenes=3, size=SIZE)  # scene_02 arrives
    third = catalog_flow(path, return_state=True)
    assert statuses(summary_of(third)) == {
        "demo/scene_00": "skipped", "demo/scene_01": "skipped", "demo/scene_02": "done",
    }  # fmt: skip


def test_corrupt_scene_fails_alone_and_a_new_model_reruns(tmp_path, model_files, prefect_api):
    path = str(workspace(tmp_path, model_files[0], "corrupt"))
    (tmp_path / "scenes" / "scene_09.tif").write_bytes(b"not a GeoTIFF")
    state = catalog_flow(path, return_state=True)
    assert state.is_failed()
    summary = summary_of(state)
    assert summary["headline"] == "3 scene(s): 2 done, 0 skipped, 1 failed (demo/scene_09)"
    failed = [s for s in summary["scenes"] if s["status"] == "failed"]
    assert "scene_09.tif: GDAL cannot open it" in failed[0]["reason"]
    runs = task_runs_of(state, {"demo/scene_09"})
    assert runs["demo/scene_09"].state_type.value == "FAILED"
    assert runs["demo/scene_09"].run_count == 1  # a user error is not retried
    table = json.loads(artifacts_of(state)["geoseg-corrupt-summary"].data)
    assert [r["status"] for r in table] == ["done", "done", "failed"]

    (tmp_path / "scenes" / "scene_09.tif").unlink()
    shutil.copy(model_files[1], tmp_path / "model.safetensors")
    rerun = catalog_flow(path, return_state=True)
    assert rerun.is_completed()
    assert [(s["status"], s["reason"]) for s in summary_of(rerun)["scenes"]] == [
        ("done", "model changed")
    ] * 2


def test_scene_flow_runs_one_scene_step_by_step(tmp_path, model_files, prefect_api):
    path = str(workspace(tmp_path, model_files[0], "one", scenes=2))
    state = scene_flow(path, "demo/scene_01", return_state=True)
    outcome = state.result()
    assert (outcome["status"], outcome["reason"]) == ("done", "new")
    steps_run = {
        f"{step} demo/scene_01" for step in ("check", "segment", "vectorize", "quicklook", "record")
    }
    assert set(task_runs_of(state, steps_run)) == steps_run
    assert not (tmp_path / "out" / "demo" / "scene_00.stac.json").exists()
    assert scene_flow(path, "demo/scene_01")["status"] == "skipped"
    with pytest.raises(CatalogError, match="names 2 scenes"):
        scene_flow(path, "demo")


@pytest.mark.slow
def test_blocks_run_on_the_configured_dask_cluster(tmp_path, model_files, prefect_api):
    path = workspace(tmp_path, model_files[0], "dask", scenes=1, extra="execution: {workers: 1}")
    state = catalog_flow(str(path), return_state=True)
    assert statuses(summary_of(state)) == {"demo/scene_00": "done"}
    local = tmp_path / "local.yaml"
    local.write_text(
        path.read_text().replace("path: out", "path: local").replace("execution:", "#")
    )
    assert run_batch(load_catalog(local)).count("done") == 1
    classes = "demo/scene_00_classes.tif"
    with (
        rasterio.open(tmp_path / "out" / classes) as dask,
        rasterio.open(tmp_path / "local" / classes) as local,
    ):
        assert (dask.read() == local.read()).all()


# --- schedules and deployments ----------------------------------------------------------------


def test_serve_uses_the_catalogs_schedule(tmp_path, model_files):
    catalog = load_catalog(workspace(tmp_path, model_files[0], "served", scenes=1))
    deployment = catalog_flow.to_deployment(**deployment_options(catalog))
    (schedule,) = deployment.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("15 4 * * *", "Europe/Berlin")
    assert deployment.name == "served" and deployment.parameters == {"catalog": str(catalog.path)}
    assert deployment.concurrency_limit == 1


def test_prefect_yaml_matches_the_shipped_catalog():
    project = yaml.safe_load((REPO / "prefect.yaml").read_text())
    catalog = yaml.safe_load((REPO / "data_catalog.yaml").read_text())
    main = project["deployments"][0]
    assert main["parameters"] == {"catalog": "data_catalog.yaml"}
    (schedule,) = main["schedules"]
    assert (schedule["cron"], schedule["timezone"]) == (
        catalog["schedule"]["cron"],
        catalog["schedule"]["timezone"],
    )
    for deployment in project["deployments"]:
        assert load_flow_from_entrypoint(str(REPO / deployment["entrypoint"])).name.startswith(
            "geoseg-"
        )


def test_prefect_deploy_accepts_prefect_yaml(prefect_api, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PWD": str(REPO)}
    prefect = str(Path(sys.executable).with_name("prefect"))
    commands = (
        ["work-pool", "create", "geoseg-local", "--type", "process"],
        ["--no-prompt", "deploy", "--all"],
    )
    for command in commands:
        done = subprocess.run(
            [prefect, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("geoseg-catalog/demo-catalog")
    assert deployment.schedules[0].schedule.cron == "0 2 * * *"
    assert deployment.global_concurrency_limit is not None
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
    ]
