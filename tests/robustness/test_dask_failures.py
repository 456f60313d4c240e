"""Dask runs that lose workers, GPU workers or the scheduler, and CLI runs that are interrupted.

Everything runs as a user runs it: ``geoseg predict`` in a subprocess, against a real
``LocalCluster`` (``--workers``) or a ``dask scheduler`` / ``dask worker`` started as subprocesses
on 127.0.0.1, which the tests kill. A run ends in a one-line error (exit 2) or a result
byte-identical to the in-process run, and ``--resume`` finishes it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest

pytest.importorskip("distributed")

from geoseg.cli import run_app
from geoseg.testing import create_test_model, write_test_scene

DASK_BIN = Path(sys.executable).with_name("dask")
REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
FAST = [
    "--vector-format",
    "none",
    "--tile",
    "64",
    "--block-size",
    "48",
    "--overlap",
    "8",
    "--device",
    "auto",
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A 192 x 192 scene (16 blocks), a tiny model, and the in-process result as the oracle."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(11)
    data = np.kron(rng.integers(0, 256, (3, 12, 12)), np.ones((16, 16))).astype(np.uint8)
    scene = write_test_scene(folder / "scene.tif", data)
    model = create_test_model(
        folder / "m.safetensors", "unet", "resnet18", 3, ["background", "a", "b"], tile_size=32
    )
    assert run_app(["predict", str(scene), "-m", str(model), "-o", str(folder / "ref"), *FAST]) == 0
    return {"scene": scene, "model": model, "expected": folder / "ref" / "scene_classes.tif"}


def predict(inputs: dict[str, Path], out: Path, *extra: str, env=None) -> subprocess.Popen:
    """``geoseg predict`` in a subprocess (stderr captured)."""
    args = ["predict", str(inputs["scene"]), "-m", str(inputs["model"]), "-o", str(out), *FAST]
    return subprocess.Popen(
        [sys.executable, "-m", "geoseg", *args, *extra],
        env={**ENV, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    """Exit code and stderr of a finished subprocess (killed when it takes too long)."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, err


def blocks_done(out: Path) -> int:
    """Pieces the resume journal of ``out`` records as written (0 while it is being created)."""
    journal = out / ".scene_classes.partial.jsonl"
    try:
        return len(journal.read_text().splitlines()) - 1
    except FileNotFoundError:  # not yet, or being replaced atomically (rename)
        return 0


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 90) -> None:
    """Poll ``condition`` while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def assert_one_line_error(err: str, *fragments: str) -> None:
    """stderr is a single ``error:`` line containing every fragment, without a traceback
    (besides the progress bar and geoseg's one-line warnings)."""
    lines = [line for line in err.splitlines() if line.strip() and "segmenting" not in line]
    lines = [line for line in lines if not line.startswith("WARNING geoseg: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "distributed" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def assert_same_result(inputs: dict[str, Path], out: Path) -> None:
    assert (out / "scene_classes.tif").read_bytes() == inputs["expected"].read_bytes()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no leftovers


# --- dask scheduler / dask worker subprocesses ---------------------------------------------------


class Cluster:
    """``dask scheduler`` and named ``dask worker`` processes, each in its own process group."""

    def __init__(self, folder: Path) -> None:
        self.file = folder / "scheduler.json"
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> None:
        self.procs[name] = subprocess.Popen(
            [str(DASK_BIN), *args, "--host", "127.0.0.1", "--no-dashboard"],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip

    def scheduler(self) -> str:
        self.file.unlink(missing_ok=True)
        self.start("scheduler", "scheduler", "--port", "0", "--scheduler-file", str(self.file))
        deadline = time.monotonic() + 60
        while not self.file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        return str(json.loads(self.file.read_text())["address"])

    def worker(self, name: str, *extra: str) -> None:
        self.start(name, "worker", "--scheduler-file", str(self.file), "--nthreads", "1",
                   "--name", name, *extra)  # fmt: skip

    def wait_for(self, names: set[str]) -> None:
        from distributed import Client

        with Client(scheduler_file=str(self.file), timeout=30, set_as_default=False) as client:
            deadline = time.monotonic() + 60
            while {
                w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()
            } < names:
                assert time.monotonic() < deadline
                time.sleep(0.1)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and its nanny, or the scheduler
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in [n for n in self.procs if n != "scheduler"] + ["scheduler"]:
            if name in self.procs:
                self.kill(name)


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    started = Cluster(tmp_path)
    try:
        yield started
    finally:
        started.stop()


@pytest.mark.slow
def test_gpu_workers_leaving_is_a_one_line_error_and_resume_finishes(tmp_path, inputs, cluster):
    cluster.scheduler()
    cluster.worker("gpu", "--resources", "GPU=1")
    cluster.worker("cpu")
    cluster.wait_for({"gpu", "cpu"})
    out = tmp_path / "out"
    args = ("--scheduler", str(cluster.file), "--resume")
    proc = predict(inputs, out, *args, env={"DASK_GEOSEG__WORKER_GRACE": "2"})
    wait_until(lambda: blocks_done(out) >= 3, proc)
    cluster.kill("gpu")  # auto device + a GPU worker: every task needs GPU=1; the CPU one stays
    started = time.monotonic()
    code, err = finish(proc)
    assert code == 2 and time.monotonic() - started < 30
    assert_one_line_error(err, "resources {'GPU': 1}", "in 2 s", "--resources GPU=1", "--resume")
    assert not (out / "scene_classes.tif").exists()
    cluster.worker("gpu2", "--resources", "GPU=1")
    cluster.wait_for({"gpu2"})
    code, err = finish(predict(inputs, out, *args))
    assert code == 0, err
    assert_same_result(inputs, out)


@pytest.mark.slow
def test_scheduler_killed_mid_run_is_one_line_and_resume_finishes(tmp_path, inputs, cluster):
    cluster.scheduler()
    cluster.worker("w")
    cluster.wait_for({"w"})
    out = tmp_path / "out"
    args = ("--scheduler", str(cluster.file), "--resume")
    proc = predict(inputs, out, *args)
    wait_until(lambda: blocks_done(out) >= 3, proc)
    cluster.kill("scheduler")
    code, err = finish(proc)
    assert code == 2
    assert_one_line_error(err, "scheduler", "rerun", "--resume")
    assert 3 <= blocks_done(out) < 16 and not (out / "scene_classes.tif").exists()
    cluster.stop()
    cluster.scheduler()
    cluster.worker("w2")
    cluster.wait_for({"w2"})
    code, err = finish(predict(inputs, out, *args))
    assert code == 0, err
    assert_same_result(inputs, out)


# --- local cluster --------------------------------------------------------------------------------


def worker_pids(proc: subprocess.Popen) -> list[int]:
    """The local cluster's worker processes: descendants of the CLI running a Dask worker."""
    found = []
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if any("spawn" in part or "forkserver" in part for part in child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            pass
    return found


@pytest.mark.slow
def test_local_worker_killed_mid_run_gives_identical_output(tmp_path, inputs):
    out = tmp_path / "out"
    proc = predict(inputs, out, "--workers", "2", "--resume")
    wait_until(lambda: blocks_done(out) >= 2 and len(worker_pids(proc)) >= 2, proc)
    os.kill(worker_pids(proc)[-1], signal.SIGKILL)
    code, err = finish(proc)
    assert code == 0, err
    assert "Traceback" not in err
    assert_same_result(inputs, out)


def test_local_cluster_logs_only_with_verbose(tmp_path, inputs):
    """Dask's INFO lines stay hidden, even when the root logger shows INFO; --verbose shows them
    together with geoseg's debug lines."""
    script = "import logging, sys; logging.basicConfig(level=logging.INFO); "
    script += "from geoseg.cli import main; sys.argv[0] = 'geoseg'; main()"
    args = [str(inputs["scene"]), "-m", str(inputs["model"]), *FAST, "--workers", "1"]
    runs = {}
    for name, verbose in (("quiet", []), ("verbose", ["--verbose"])):
        cmd = [sys.executable, "-c", script, *verbose, "predict", *args, "-o", str(tmp_path / name)]
        done = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        runs[name] = done.stderr
    assert "distributed" not in runs["quiet"] and "DEBUG" not in runs["quiet"]
    assert "INFO:distributed" in runs["verbose"]
    assert "DEBUG geoseg: Dask: 1 worker(s)" in runs["verbose"]


# --- interrupting the CLI --------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_is_like_ctrl_c(tmp_path, inputs, sig):
    out = tmp_path / "out"
    proc = predict(inputs, out, "--resume")
    wait_until(lambda: blocks_done(out) >= 2, proc)
    proc.send_signal(sig)
    code, err = finish(proc)
    assert code == 130
    lines = [line for line in err.splitlines() if line.strip() and "segmenting" not in line]
    assert lines == ["interrupted: no output was replaced (with --resume, rerun to continue)"]
    assert not list(out.glob("scene*"))  # nothing under a final name
    code, err = finish(predict(inputs, out, "--resume"))
    assert code == 0, err
    assert_same_result(inputs, out)
