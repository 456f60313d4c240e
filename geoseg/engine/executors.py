"""Where blocks run: in this process, or on Dask workers.

An executor maps :func:`geoseg.engine.block.run_block` over a scene's blocks and yields the results
(in any order) to the single writer. This module never imports Dask; the Dask executor lives in
:mod:`geoseg.engine.dask` and is imported only when asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from geoseg.engine.block import BlockResult, SceneJob, read_block, segment_block
from geoseg.geo.tiling import Block
from geoseg.io.raster import SceneReader

T = TypeVar("T")
R = TypeVar("R")
BlockDone = Callable[[Block], None]
TileProgress = Callable[[int], None]


class Executor(Protocol):
    """Runs a scene's blocks somewhere and yields their results."""

    def map_blocks(
        self, job: SceneJob, blocks: Sequence[Block], on_tiles: TileProgress | None = None
    ) -> Iterator[BlockResult]: ...

    def map_ordered(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]``, computed wherever the executor runs work, in order."""
        ...

    def close(self) -> None: ...


class SequentialExecutor:
    """Runs every block in this process, in order; the scene and model are opened once.

    The next block is read and normalised in a background thread while the model works on the
    current one (GDAL, NumPy and torch release the GIL), so reading costs almost no wall time.
    At most two blocks of input are in memory.
    """

    def map_blocks(
        self, job: SceneJob, blocks: Sequence[Block], on_tiles: TileProgress | None = None
    ) -> Iterator[BlockResult]:
        """Yield each block's result in plan order."""
        if not blocks:
            return
        predictor = job.predictor()
        with (
            SceneReader(job.scene, job.input) as reader,
            ThreadPoolExecutor(1, thread_name_prefix="geoseg-read") as pool,
        ):
            pending = pool.submit(read_block, reader, blocks[0], job)
            for i, block in enumerate(blocks):
                pixels, valid = pending.result()
                if i + 1 < len(blocks):
                    pending = pool.submit(read_block, reader, blocks[i + 1], job)
                yield segment_block(
                    pixels, valid, block, predictor, job.weights, job.batch_size, on_tiles, job.crf
                )

    def map_ordered(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``[fn(x) for x in items]``, here."""
        return [fn(item) for item in items]

    def close(self) -> None:
        """Nothing to release."""


def make_executor(workers: int | None = None, scheduler: str | None = None) -> Executor:
    """The executor for the given options.

    Parameters
    ----------
    workers
        Start a local Dask cluster with this many worker processes.
    scheduler
        Address of an existing Dask scheduler (``tcp://host:8786``).

    With neither, blocks run in this process.
    """
    if workers is None and scheduler is None:
        return SequentialExecutor()
    from geoseg.engine.dask import DaskExecutor

    return DaskExecutor(workers=workers, scheduler=scheduler)
