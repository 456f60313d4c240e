"""The Dask executor on real clusters (no mocks), against the in-process executor as the oracle.

Two clusters: a ``LocalCluster`` of two worker processes, and a scheduler plus two workers
started with the ``dask scheduler`` / ``dask worker`` command lines, one advertising ``GPU=1``.
Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

import dask
from distributed import Client, get_task_stream

from geoseg.engine.block import SceneJob
from geoseg.engine.dask import DaskExecutor, implied_resources, task_slots
from geoseg.engine.executors import SequentialExecutor
from geoseg.engine.scene import OutputPaths, model_job, segment_scene
from geoseg.errors import ExecutorError, InvalidInputError
from geoseg.geo.tiling import TileGrid, plan_blocks
from geoseg.io.class_raster import Legend
from geoseg.models.contract import default_colors
from geoseg.options import PredictOptions, TilingOptions, VectorOptions
from geoseg.testing import ContextPredictor, PixelwisePredictor, write_test_scene

CLASSES = ["a", "b", "c", "d"]
DASK_BIN = Path(sys.executable).with_name("dask")


def fake_job(path: str, factory=None) -> SceneJob:
    """A job whose predictor is a picklable factory from geoseg.testing."""
    return SceneJob(path, factory or functools.partial(ContextPredictor, 3, 4), None, 64, 16, 4)


def run(job, out: Path, executor=None, block_size=64, classes=CLASSES, **kwargs):
    """Segment into ``out`` and return the result and the bytes of both COGs."""
    paths = OutputPaths(classes=out / "classes.tif", confidence=out / "confidence.tif")
    legend = Legend(classes, default_colors(len(classes)))
    result = segment_scene(job, paths, legend, block_size=block_size, executor=executor, **kwargs)
    return result, paths.classes.read_bytes(), paths.confidence.read_bytes()


def assert_same_output(a, b):
    (ra, classes_a, conf_a), (rb, classes_b, conf_b) = a, b
    assert classes_a == classes_b  # byte-identical COGs
    assert conf_a == conf_b
    np.testing.assert_array_equal(ra.class_pixels, rb.class_pixels)
    assert ra.tiles == rb.tiles


def no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def local_executor():
    with DaskExecutor(workers=2) as executor:
        yield executor


# --- local cluster -----------------------------------------------------------------------------


@pytest.mark.parametrize("nodata", [None, 0])
def test_local_cluster_is_byte_identical_to_in_process(
    tmp_path, smooth_scene, local_executor, nodata
):
    path, data = smooth_scene(height=230, width=300, nodata=nodata)
    if nodata is not None:  # a zero collar, rewritten in place: tiles over it are skipped
        data[:, :, :70] = 0
        write_test_scene(path, data, nodata=0)
    job = fake_job(path)
    expected = run(job, tmp_path / "seq", SequentialExecutor())
    got = run(job, tmp_path / "dask", local_executor)
    assert_same_output(expected, got)
    assert not no_leftovers(tmp_path / "dask")


def test_blocks_in_flight_are_bounded_and_leaving_early_cancels(smooth_scene, local_executor):
    path, _ = smooth_scene(height=400, width=500)
    job = fake_job(path)
    blocks = plan_blocks(TileGrid(400, 500, 64, 16), 48).blocks  # 4 x 5 blocks of 2 x 2 tiles
    client = local_executor.client
    need, limit = local_executor.task_resources(job)
    assert need is None and limit == 4  # two per single-threaded worker
    seen = []
    for result in local_executor.map_blocks(job, blocks):
        unfinished = [st for st in client.futures.values() if st.status == "pending"]
        assert len(unfinished) <= limit  # (a yielded block's future is released asynchronously)
        seen.append(result.block.id)
    assert sorted(seen) == sorted(b.id for b in blocks)
    results = local_executor.map_blocks(job, blocks)
    next(results)
    results.close()  # the consumer stops: the blocks still in flight are cancelled
    deadline = time.monotonic() + 5
    while client.futures and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.futures


@dataclass
class SlowPredictor:
    """PixelwisePredictor that sleeps per batch, so a worker is busy when it is killed."""

    bands: int
    num_classes: int
    delay: float = 0.05

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        return PixelwisePredictor(self.bands, self.num_classes)(batch)


def test_worker_killed_mid_run_gives_identical_output(tmp_path, smooth_scene):
    path, _ = smooth_scene(height=256, width=256)
    job = fake_job(path, functools.partial(SlowPredictor, 3, 4))
    expected = run(fake_job(path, functools.partial(PixelwisePredictor, 3, 4)), tmp_path / "seq")
    killed = []
    with DaskExecutor(workers=2) as executor:

        def kill_a_busy_worker(done, total):
            if killed:
                return
            busy = [w for w, keys in executor.client.processing().items() if keys]
            if not busy:
                return
            pids = executor.client.run(os.getpid, workers=busy[:1])
            for pid in pids.values():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        got = run(job, tmp_path / "dask", executor, progress=kill_a_busy_worker)
        assert killed
        assert killed[0] not in executor.client.run(os.getpid).values()
    assert_same_output(expected, got)


def test_block_that_keeps_killing_workers_is_an_executor_error(tmp_path, smooth_scene):
    path, _ = smooth_scene(height=64, width=64)
    job = fake_job(path, functools.partial(os._exit, 3))  # the "predictor" kills its worker
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        executor = DaskExecutor(workers=1)
    out = tmp_path / "out"
    with executor, pytest.raises(ExecutorError, match="Dask worker died"):
        run(job, out, executor)
    assert not any(out.iterdir())  # nothing partial left behind


# --- dask scheduler / dask worker command lines ---------------------------------------------------


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    """``dask scheduler`` and two ``dask worker`` processes; the first advertises GPU=1."""
    folder = tmp_path_factory.mktemp("cluster")
    sched_file = folder / "scheduler.json"
    common = ["--host", "127.0.0.1", "--no-dashboard"]
    procs = [subprocess.Popen(
        [DASK_BIN, "scheduler", "--port", "0", "--scheduler-file", sched_file, *common],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )]  # fmt: skip
    for name, extra in (("gpu", ["--resources", "GPU=1"]), ("cpu", [])):
        procs.append(subprocess.Popen(
            [DASK_BIN, "worker", "--scheduler-file", sched_file, "--nthreads", "1",
             "--name", name, *extra, *common],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        with Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=60)
            names = {
                w["name"]: a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
            }
        yield {"address": address, "file": str(sched_file), "workers": names}
    finally:  # workers first, so they need not wait for a scheduler that is gone
        for group in (procs[1:], procs[:1]):
            for proc in group:
                proc.terminate()
            for proc in group:
                proc.wait(timeout=30)


def workers_that_ran(stream) -> set[str]:
    return {task["worker"] for task in stream.data if str(task["key"]).startswith("geoseg-block")}


def test_tasks_asking_for_a_gpu_run_on_the_gpu_worker(tmp_path, smooth_scene, cli_cluster):
    path, _ = smooth_scene()
    job = fake_job(path)
    expected = run(job, tmp_path / "seq")
    with DaskExecutor(scheduler=cli_cluster["file"], resources={"GPU": 1}) as executor:
        assert executor.task_resources(job) == ({"GPU": 1}, 2)  # one GPU slot
        with get_task_stream(client=executor.client) as stream:
            got = run(job, tmp_path / "dask", executor)
    assert_same_output(expected, got)
    assert workers_that_ran(stream) == {cli_cluster["workers"]["gpu"]}


def test_missing_resource_is_an_executor_error_at_once(tmp_path, smooth_scene, cli_cluster):
    path, _ = smooth_scene(height=64, width=64)
    out = tmp_path / "out"
    with DaskExecutor(scheduler=cli_cluster["address"], resources={"TPU": 1}) as executor:
        started = time.monotonic()
        with pytest.raises(ExecutorError, match="--resources TPU=1"):
            run(fake_job(path), out, executor)
        assert time.monotonic() - started < 5
    assert not any(out.iterdir())


def test_real_model_auto_device_goes_to_gpu_worker(tmp_path, cli_cluster):
    from geoseg.models.modelfile import read_contract
    from geoseg.testing import create_test_model

    rng = np.random.default_rng(7)
    data = np.kron(rng.integers(0, 256, (3, 12, 12)), np.ones((16, 16))).astype(np.uint8)
    scene = write_test_scene(tmp_path / "scene.tif", data)
    classes = ["background", "a", "b"]
    model = create_test_model(
        tmp_path / "m.safetensors", "unet", "resnet18", 3, classes, tile_size=64
    )
    contract = read_contract(model)
    job = model_job(scene, model, contract, PredictOptions(tiling=TilingOptions(overlap=16)))
    expected = run(job, tmp_path / "seq", block_size=96, classes=list(contract.classes))
    with DaskExecutor(scheduler=cli_cluster["address"]) as executor:
        assert executor.task_resources(job)[0] == {"GPU": 1}  # auto + a GPU worker
        with get_task_stream(client=executor.client) as stream:
            got = run(job, tmp_path / "dask", executor, 96, list(contract.classes))
    assert_same_output(expected, got)
    assert workers_that_ran(stream) == {cli_cluster["workers"]["gpu"]}


def test_unreachable_scheduler_is_an_executor_error():
    with pytest.raises(ExecutorError, match="cannot reach the Dask scheduler"):
        DaskExecutor(scheduler="tcp://127.0.0.1:9", timeout=1)


# --- pure helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "gpu_offered", "local", "expected"),
    [
        ("cuda", False, False, {"GPU": 1}),
        ("cuda:1", True, True, {"GPU": 1}),
        ("cuda", False, True, None),  # local workers share this machine's GPUs
        ("auto", True, False, {"GPU": 1}),
        ("auto", False, False, None),
        ("cpu", True, False, None),
        (None, True, False, None),
    ],
)
def test_implied_resources(device, gpu_offered, local, expected):
    assert implied_resources(device, gpu_offered, local) == expected


def test_task_slots():
    workers = {
        "a": {"nthreads": 4, "resources": {"GPU": 2}},
        "b": {"nthreads": 2, "resources": {}},
    }
    assert task_slots(workers, None) == 6
    assert task_slots(workers, {"GPU": 1}) == 2
    assert task_slots(workers, {"GPU": 3}) == 0


@pytest.mark.parametrize(("workers", "scheduler"), [(None, None), (2, "tcp://x:1"), (0, None)])
def test_bad_options(workers, scheduler):
    with pytest.raises(InvalidInputError):
        DaskExecutor(workers=workers, scheduler=scheduler)


def test_vectorizing_on_workers_gives_the_same_features(tmp_path, local_executor):
    import pyogrio
    import shapely

    from geoseg.io.raster import write_raster
    from geoseg.testing import UTM_CRS, utm_transform
    from geoseg.vector.polygons import canonical
    from geoseg.vector.vectorize import vectorize_raster

    rng = np.random.default_rng(3)
    blobs = np.kron(rng.integers(0, 4, size=(30, 40)), np.ones((8, 8), np.uint8))[:230, :300]
    blobs[200:, :50] = 255  # nodata
    classes = tmp_path / "classes.tif"
    write_raster(classes, blobs.astype(np.uint8), UTM_CRS, utm_transform(), nodata=255,
                 colors=default_colors(4), tags={"CLASS_NAMES": json.dumps(CLASSES)})  # fmt: skip
    frames = []
    for name, executor in (("seq", None), ("dask", local_executor)):
        out = tmp_path / f"{name}.gpkg"
        options = VectorOptions(block_size=48, min_area=2.0)
        result = vectorize_raster(classes, out, options, executor=executor)
        assert result.features > 10
        frames.append(pyogrio.read_dataframe(out, layer=name))
    seq, dask_ = frames
    assert list(seq.class_id) == list(dask_.class_id)
    np.testing.assert_array_equal(seq.area_m2, dask_.area_m2)
    same = shapely.equals_exact(canonical(seq.geometry.values), canonical(dask_.geometry.values), 0)
    assert same.all()
