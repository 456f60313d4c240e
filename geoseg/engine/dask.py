"""Run a scene's blocks on a Dask cluster: a local one it starts, or an existing scheduler.

Each block is one task running :func:`geoseg.engine.block.run_block` on a worker. The task carries the
small :class:`~geoseg.engine.block.SceneJob` and the block's windows, never pixels: the worker reads its
own window from the scene path (opened once per worker thread and run, then reused) and sends
back uint8 classes and confidence of its own window and the integer sums of the bands it shares
with neighbouring blocks, straight to the client. At most ``max_in_flight`` blocks are
submitted at a time (default: two per worker slot) and a new one goes out as each result arrives,
so memory on the client and the workers is bounded by the blocks in flight, not by the scene.

The output is byte-identical to :class:`geoseg.engine.executors.SequentialExecutor`: the per-block
function is the same, every tile is computed by exactly one block, and shared bands are summed in
exact integers (:mod:`geoseg.engine.stitch`), so neither order nor worker matters.

GPU workers
-----------
Start them with ``dask worker ADDRESS --nthreads 1 --resources GPU=1``. Tasks of a job whose
device is ``cuda`` (or ``auto`` on a cluster where some worker offers ``GPU``) ask for ``GPU=1``
and run only there; ``resources=`` asks for any resource explicitly. A task asking for a resource
no worker offers would wait forever, so :meth:`DaskExecutor.map_blocks` checks first and raises
:class:`~geoseg.errors.ExecutorError`; while it waits for results it keeps checking, and when no
worker has offered the resources for ``grace`` seconds (the GPU workers left) it raises too. The
default grace comes from the Dask config key ``geoseg.worker-grace`` (60 s; environment
``DASK_GEOSEG__WORKER_GRACE``). On a local cluster started without ``worker_resources``
every worker sees this machine's GPUs, so ``cuda`` jobs run on all of them unconstrained.

Failures
--------
When a worker dies, Dask recomputes its blocks elsewhere (same output). A block that keeps killing
workers (``distributed.scheduler.allowed-failures``, default 3 retries) ends the run with an
:class:`~geoseg.errors.ExecutorError`, and so does losing the scheduler (Dask cancels every
future); with ``resume`` the finished blocks are kept and a rerun continues.

Logging
-------
Dask's own log lines (INFO lines of a local cluster, the client's traceback when the scheduler
goes away) are silenced while an executor is open, unless geoseg's logger is at DEBUG
(``geoseg --verbose``): geoseg reports what went wrong itself.

Examples
--------
>>> from geoseg.engine.executors import make_executor
>>> executor = make_executor(workers=2)  # doctest: +SKIP
>>> segment_scene(job, paths, names, colors, executor=executor)  # doctest: +SKIP
>>> executor.close()  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from geoseg.conventions import LOGGER_NAME
from geoseg.engine.block import BlockResult, SceneJob, TileCallback, run_block
from geoseg.engine.heap import release_large_buffers
from geoseg.errors import ExecutorError, InvalidInputError
from geoseg.geo.tiling import Block
from geoseg.io.files import Closing
from geoseg.io.raster import SceneReader

T = TypeVar("T")
R = TypeVar("R")

if TYPE_CHECKING:
    from distributed import Future

GPU = "GPU"
"""The resource name GPU workers advertise (``dask worker --resources GPU=1``)."""
READERS_PER_THREAD = 2
"""Scenes a worker thread keeps open (the latest runs)."""
IN_FLIGHT_PER_SLOT = 2
"""Blocks submitted per worker slot: one running, one ready to start."""
GRACE_KEY = "geoseg.worker-grace"
"""Dask config key: seconds without a worker offering the tasks' resources before giving up."""
DEFAULT_GRACE_S = 60.0
POLL_S = 0.5
"""Seconds between checks of the workers while waiting for results."""
DASK_LOGGERS = ("distributed", "tornado")
"""Loggers silenced while an executor is open (unless geoseg's logger is at DEBUG)."""

_local = threading.local()
log = logging.getLogger(LOGGER_NAME)


# --- on the workers -------------------------------------------------------------------------


def _scene_reader(job: SceneJob, run: str) -> SceneReader:
    """This thread's reader of ``run``'s scene: opened for the run's first block, then reused.

    Readers are per thread (a rasterio dataset must not be shared between threads) and per run
    (a scene rewritten between runs is read afresh); the oldest beyond a few are closed.
    """
    cache: OrderedDict[str, SceneReader] = _local.__dict__.setdefault("readers", OrderedDict())
    if run not in cache:
        cache[run] = SceneReader(job.scene, job.input)
        while len(cache) > READERS_PER_THREAD:
            cache.popitem(last=False)[1].close()
    cache.move_to_end(run)
    return cache[run]


def segment_block_task(job: SceneJob, block: Block, run: str) -> BlockResult:
    """The Dask task: read, predict and blend one block (the predictor is cached per process)."""
    release_large_buffers()  # flat memory on long-lived workers (geoseg.engine.heap)
    return run_block(job, block, _scene_reader(job, run), job.predictor())


# --- on the client --------------------------------------------------------------------------


def import_distributed() -> ModuleType:
    """``dask.distributed``, or an :class:`ExecutorError` saying how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise ExecutorError(
            f"running on Dask needs dask.distributed ({exc}); install it with "
            "pip install 'geoseg[dask]'"
        ) from exc
    return distributed


def job_device(job: SceneJob) -> str | None:
    """The device a job's predictor asks for (``ModelSpec.device``), or None for fakes."""
    device = getattr(job.predictor, "device", None)
    return device if isinstance(device, str) else None


def implied_resources(
    device: str | None, gpu_offered: bool, local: bool
) -> dict[str, float] | None:
    """``{"GPU": 1}`` for a job that must run on a GPU worker, else None.

    ``cuda`` jobs need a GPU worker, except on a local cluster that advertises no GPUs (its
    workers share this machine's devices). ``auto`` jobs go to GPU workers when there are any.

    Examples
    --------
    >>> implied_resources("cuda:1", gpu_offered=False, local=False)
    {'GPU': 1}
    >>> implied_resources("auto", gpu_offered=False, local=False) is None
    True
    """
    kind = (device or "cpu").split(":")[0]
    needs_gpu = (kind == "cuda" and not local) or (kind in ("cuda", "auto") and gpu_offered)
    return {GPU: 1} if needs_gpu else None


def task_slots(workers: Mapping[str, Any], need: Mapping[str, float] | None) -> int:
    """How many tasks needing ``need`` the workers can run at once (0: no worker can run one)."""
    slots = 0
    for info in workers.values():
        offered = info.get("resources") or {}
        fits = [int(offered.get(name, 0) // amount) for name, amount in (need or {}).items()]
        slots += min([info.get("nthreads", 1), *fits])
    return slots


def silence_dask_logs() -> dict[str, int]:
    """Raise Dask's loggers to CRITICAL unless geoseg logs at DEBUG; returns the old levels."""
    if logging.getLogger(LOGGER_NAME).isEnabledFor(logging.DEBUG):
        return {}
    known = logging.root.manager.loggerDict
    names = [*DASK_LOGGERS, *(n for n in known if n.split(".")[0] in DASK_LOGGERS)]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:  # children with their own level (distributed.client: warning) too
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return levels


def restore_levels(levels: Mapping[str, int]) -> None:
    """Undo :func:`silence_dask_logs`."""
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def worker_grace(grace: float | None) -> float:
    """``grace``, or the Dask config's ``geoseg.worker-grace`` (default 60 s)."""
    if grace is not None:
        return grace
    import dask.config

    return float(dask.config.get(GRACE_KEY, DEFAULT_GRACE_S))


def resource_fix(need: Mapping[str, float] | None) -> str:
    """How to start workers that offer ``need``."""
    flags = " ".join(f"--resources {k}={v:g}" for k, v in (need or {}).items())
    return f"start workers with 'dask worker <scheduler> --nthreads 1 {flags}'"


def worker_env(workers: int, quiet: bool) -> dict[str, str]:
    """Environment of a local cluster's workers: threads per worker, and quiet Dask logs."""
    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}
    if quiet:
        env["DASK_LOGGING__DISTRIBUTED"] = "error"
    return env


def describe_resources(workers: Mapping[str, Any]) -> str:
    """What the workers offer, e.g. ``2 worker(s) offering {} or {'GPU': 1}``."""
    offers = sorted({repr(dict(info.get("resources") or {})) for info in workers.values()})
    return f"{len(workers)} worker(s) offering {' or '.join(offers)}"


class DaskExecutor(Closing):
    """Runs blocks as Dask tasks on a local cluster (``workers=N``) or an existing one.

    Parameters
    ----------
    workers
        Start a local cluster of this many worker processes bound to 127.0.0.1, each running one
        block at a time with ``cores // workers`` threads for the model; :meth:`close` stops it.
    scheduler
        Or connect to an existing scheduler: its address (``tcp://host:8786``) or the JSON file
        written by ``dask scheduler --scheduler-file``.
    resources
        Resources every task asks for, e.g. ``{"GPU": 1}``; default: ``GPU=1`` for CUDA jobs
        where GPU workers exist (see the module docstring).
    worker_resources
        Resources each worker of the local cluster advertises (e.g. ``{"GPU": 1}``).
    max_in_flight
        Blocks submitted at once; default two per worker slot that can run the tasks.
    dashboard
        Serve the local cluster's dashboard on a free port of 127.0.0.1 (needs bokeh).
    direct
        Gather results straight from the workers (False: through the scheduler, for clients
        that cannot reach the workers).
    timeout
        Seconds to wait for the scheduler, and for a first worker to join it.
    grace
        Seconds a run waits while no worker offers the resources its tasks need (the workers
        left) before it raises :class:`ExecutorError`; default: the Dask config key
        ``geoseg.worker-grace``, else 60.

    Examples
    --------
    >>> with DaskExecutor(scheduler="tcp://10.0.0.5:8786") as executor:  # doctest: +SKIP
    ...     results = list(executor.map_blocks(job, blocks))
    """

    def __init__(
        self,
        workers: int | None = None,
        scheduler: str | None = None,
        *,
        resources: Mapping[str, float] | None = None,
        worker_resources: Mapping[str, float] | None = None,
        max_in_flight: int | None = None,
        dashboard: bool = False,
        direct: bool = True,
        timeout: float = 30.0,
        grace: float | None = None,
    ) -> None:
        check_options(workers, scheduler, max_in_flight)
        distributed = import_distributed()
        self.resources = dict(resources) if resources else None
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.grace = worker_grace(grace)
        self.cluster = None
        self._log_levels = silence_dask_logs()
        if workers is not None:
            self.cluster = distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                scheduler_kwargs={"dashboard": dashboard},
                resources=dict(worker_resources) if worker_resources else None,
                env=worker_env(workers, quiet=bool(self._log_levels)),
            )
        self.client = self._connect(distributed, scheduler, direct)

    def _connect(self, distributed: ModuleType, scheduler: str | None, direct: bool) -> Any:
        """A client of the local cluster or of ``scheduler`` (an address or a scheduler file)."""
        target: dict[str, Any] = {"address": self.cluster}
        if scheduler is not None and "://" not in scheduler and Path(scheduler).is_file():
            target = {"scheduler_file": scheduler}
        elif scheduler is not None:
            target = {"address": scheduler}
        try:
            return distributed.Client(
                **target, timeout=self.timeout, set_as_default=False, direct_to_workers=direct
            )
        except (OSError, TimeoutError) as exc:
            if self.cluster is not None:
                self.cluster.close()
            restore_levels(self._log_levels)
            raise ExecutorError(
                f"cannot reach the Dask scheduler at {scheduler} ({exc}); start one with "
                "'dask scheduler' and pass the address it prints (tcp://host:8786)"
            ) from exc

    def task_resources(self, job: SceneJob) -> tuple[dict[str, float] | None, int]:
        """The resources ``job``'s tasks ask for and how many to keep in flight.

        Raises :class:`ExecutorError` at once when no worker could ever run them.
        """
        workers = self._workers()
        gpu_offered = any(GPU in (w.get("resources") or {}) for w in workers.values())
        need = self.resources or implied_resources(
            job_device(job), gpu_offered, local=self.cluster is not None
        )
        slots = task_slots(workers, need)
        if slots == 0:
            raise ExecutorError(
                f"no Dask worker offers the resources {need} that the tasks ask for "
                f"({describe_resources(workers)}); {resource_fix(need)}, or run on CPU (set "
                "`device` to cpu)",
                option="device",
            )
        limit = self.max_in_flight or IN_FLIGHT_PER_SLOT * slots
        log.debug(
            "Dask: %s; tasks ask for %s, %d in flight", describe_resources(workers), need, limit
        )
        return need, limit

    def _workers(self) -> dict[str, Any]:
        """The scheduler's workers, waiting up to ``timeout`` for a first one to join."""
        workers: dict[str, Any] = self.client.scheduler_info(n_workers=-1)["workers"]
        if workers:
            return workers
        try:
            self.client.wait_for_workers(1, timeout=self.timeout)
        except TimeoutError as exc:
            raise ExecutorError(
                f"no Dask worker joined the scheduler {self.client.scheduler.address} within "
                f"{self.timeout:g} s; start some with 'dask worker <scheduler address>'"
            ) from exc
        return dict(self.client.scheduler_info(n_workers=-1)["workers"])

    def map_blocks(
        self, job: SceneJob, blocks: Sequence[Block], on_tiles: TileCallback | None = None
    ) -> Iterator[BlockResult]:
        """Yield each block's result as it arrives (in any order).

        ``on_tiles`` is called with a block's tile count when its result arrives. Leaving the
        iteration early cancels the blocks still in flight.
        """
        if not blocks:
            return
        distributed = import_distributed()
        need, limit = self.task_resources(job)
        run = uuid.uuid4().hex[:12]
        todo = iter(blocks)
        in_flight: dict[Future, Block] = {}
        finished: queue.SimpleQueue[Future] = queue.SimpleQueue()

        def submit(block: Block) -> Future:
            future = self.client.submit(
                segment_block_task,
                job,
                block,
                run,
                key=f"geoseg-block-{run}-{block.id}",
                resources=need,
                pure=False,
            )
            in_flight[future] = block
            future.add_done_callback(finished.put)
            return future

        for block in islice(todo, limit):
            submit(block)
        try:
            while in_flight:
                future = self._next_done(finished, need)
                block = in_flight.pop(future)
                following = next(todo, None)
                if following is not None:
                    submit(following)
                result = self._gather(future, block, distributed)
                if on_tiles:
                    on_tiles(result.tiles)
                yield result
        finally:
            if in_flight:
                self.client.cancel(list(in_flight))

    def _next_done(
        self, finished: queue.SimpleQueue[Future], need: dict[str, float] | None
    ) -> Future:
        """The next finished future; every ``POLL_S`` checks that some worker can run the tasks.

        Raises :class:`ExecutorError` once no worker has offered ``need`` for ``grace`` seconds.
        """
        lost_since: float | None = None
        while True:
            try:
                return finished.get(timeout=POLL_S)
            except queue.Empty:
                pass
            if self.client.status != "running" or self._can_run(need):
                lost_since = None
            elif lost_since is None:
                lost_since = time.monotonic()
                log.warning("no Dask worker offers %s now; waiting %g s", need, self.grace)
            elif time.monotonic() - lost_since > self.grace:
                raise self._workers_gone(need)

    def _can_run(self, need: dict[str, float] | None) -> bool:
        """True while some worker of the scheduler can run tasks asking for ``need``.

        Also True when the scheduler cannot be asked (it just went away): Dask then cancels the
        futures, and :meth:`_gather` reports it.
        """
        try:
            workers = self.client.scheduler_info(n_workers=-1)["workers"]
        except (OSError, TimeoutError):
            return True
        return task_slots(workers, need) > 0

    def _workers_gone(self, need: dict[str, float] | None) -> ExecutorError:
        """The error of a run whose tasks no worker has been able to run for ``grace`` s."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        return ExecutorError(
            f"no Dask worker has offered the resources {need or {}} that the tasks ask for in "
            f"{self.grace:g} s (did the workers leave? {describe_resources(workers)}); "
            f"{resource_fix(need)} and rerun (with `resume` to keep the finished blocks)",
            option="resume",
        )

    def _gather(self, future: Future, block: Block, distributed: ModuleType) -> BlockResult:
        """A finished block's result, fetched from its worker and then forgotten by Dask."""
        try:
            result: BlockResult = future.result()
        except distributed.KilledWorker as exc:
            raise ExecutorError(
                f"block {block.id} was running each time a Dask worker died, "
                f"{exc.allowed_failures + 1} times (last on {exc.last_worker.address}); "
                "a worker running out of memory is the usual cause: lower `block_size` or "
                "`batch_size`, or see the worker logs",
                options=("block_size", "batch_size"),
            ) from exc
        except distributed.CancelledError as exc:
            raise self._cancelled(block, exc) from exc
        future.release()
        return result

    def _cancelled(self, block: Block, exc: BaseException) -> ExecutorError:
        """The error of a block Dask cancelled: usually the scheduler went away."""
        reason = getattr(exc, "reason", None) or type(exc).__name__
        where = self.client.scheduler.address if self.client.scheduler else "the scheduler"
        return ExecutorError(
            f"block {block.id} was cancelled on the Dask cluster ({reason}): the connection to "
            f"the scheduler {where} was lost or it was restarted; check that it runs (dask "
            "scheduler) and rerun, with `resume` to keep the finished blocks",
            option="resume",
        )

    def map_ordered(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]`` computed on the workers (used per row of vectorize blocks)."""
        futures = self.client.map(fn, list(items), pure=False)
        try:
            return list(self.client.gather(futures))
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        """Disconnect, and shut down the local cluster if this executor started one."""
        try:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            restore_levels(self._log_levels)


def check_options(workers: int | None, scheduler: str | None, max_in_flight: int | None) -> None:
    """Raise :class:`InvalidInputError` unless exactly one of workers / scheduler is usable."""
    if (workers is None) == (scheduler is None):
        raise InvalidInputError(
            "give either `workers` (start a local Dask cluster) or `scheduler` (the address of an "
            f"existing one), not {'both' if workers is not None else 'neither'}",
            options=("workers", "scheduler"),
        )
    if workers is not None and workers < 1:
        raise InvalidInputError(
            f"workers {workers} is invalid; set `workers` to 1 or more", option="workers"
        )
    if max_in_flight is not None and max_in_flight < 1:
        raise InvalidInputError(f"max_in_flight must be >= 1, got {max_in_flight}")
