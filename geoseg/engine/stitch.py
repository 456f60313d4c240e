"""Overlap-add: finish the windows that neighbouring blocks share, as their parts arrive.

Each block finishes its own window and sends its integer partial sums over the windows its tiles
share with neighbouring blocks (see :func:`geoseg.geo.tiling.plan_blocks`). The
:class:`Stitcher` keeps the sums of each shared window until every block that adds to it has
reported, then turns them into classes and confidence. Integer sums make the result independent
of the order in which blocks arrive; only the windows between unfinished blocks are held.

Examples
--------
>>> from geoseg.geo.tiling import TileGrid, plan_blocks
>>> plan = plan_blocks(TileGrid(200, 100, tile=64, overlap=16), block_size=96)
>>> len(plan.blocks), len(plan.shares)
(2, 1)
>>> stitcher = Stitcher(plan, num_classes=3)
>>> stitcher.pending
1
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

import numpy as np

from geoseg.engine.blend import BlockAccumulator
from geoseg.engine.block import BlockResult
from geoseg.geo.tiling import Block, BlockPlan, share_id
from geoseg.geo.window import Window


@dataclass(frozen=True, kw_only=True)
class Piece:
    """A finished window of the output: uint8 classes and confidence, and its id."""

    id: str
    window: Window
    classes: np.ndarray
    confidence: np.ndarray

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Pixels per class (nodata excluded)."""
        return np.bincount(self.classes.ravel(), minlength=256)[:num_classes]


class Stitcher:
    """Turns block results into finished pieces of the output.

    Parameters
    ----------
    plan
        The block plan (which windows are shared, and by how many blocks).
    finished
        Ids of pieces already on disk (an interrupted run being resumed): never produced again.
    """

    def __init__(self, plan: BlockPlan, num_classes: int, finished: Collection[str] = ()) -> None:
        self.num_classes = num_classes
        self.finished = set(finished)
        self.waiting = {w: n for w, n in plan.shares.items() if share_id(w) not in self.finished}
        self.sums: dict[Window, BlockAccumulator] = {}

    @property
    def pending(self) -> int:
        """Shared windows still waiting for a block."""
        return len(self.waiting)

    def add(self, result: BlockResult) -> Iterator[Piece]:
        """The pieces ``result`` finishes: its own window, and each shared window it completes."""
        block = result.block
        if block.id not in self.finished:
            yield Piece(
                id=block.id,
                window=block.write,
                classes=result.classes,
                confidence=result.confidence,
            )
        for part in result.shares:
            piece = self._add_share(part)
            if piece is not None:
                yield piece

    def waits_for(self, block: Block) -> bool:
        """Whether a shared window of ``block`` is still unfinished."""
        return any(w in self.waiting for w in block.shares)

    def add_kept(self, block: Block, data: bytes) -> list[Piece]:
        """Add the sums an interrupted run kept for ``block`` (see :func:`encode_shares`);
        the shared windows that completes."""
        pieces = (self._add_share(part) for part in decode_shares(block, data, self.num_classes))
        return [piece for piece in pieces if piece is not None]

    def _add_share(self, part: BlockAccumulator) -> Piece | None:
        """Add one block's sums over a shared window; the window's piece once it is complete."""
        window = part.window
        if window not in self.waiting:  # finished before this run (resumed)
            return None
        if window in self.sums:
            self.sums[window].merge(part)
        else:
            self.sums[window] = part
        self.waiting[window] -= 1
        if self.waiting[window]:
            return None
        del self.waiting[window]
        classes, confidence = self.sums.pop(window).classes_and_confidence()
        return Piece(id=share_id(window), window=window, classes=classes, confidence=confidence)


def encode_shares(result: BlockResult) -> bytes:
    """A block's sums over its shared windows as bytes (int64, in ``block.shares`` order)."""
    return b"".join(
        np.ascontiguousarray(a, dtype="<i8").tobytes()
        for part in result.shares
        for a in (part.scores, part.weights)
    )


def decode_shares(block: Block, data: bytes, num_classes: int) -> list[BlockAccumulator]:
    """The accumulators :func:`encode_shares` wrote for ``block``."""
    parts, offset = [], 0
    for window in block.shares:
        arrays = []
        for shape in ((num_classes, window.height, window.width), (window.height, window.width)):
            count = int(np.prod(shape))
            flat = np.frombuffer(data, dtype="<i8", count=count, offset=offset)
            arrays.append(flat.astype(np.int64).reshape(shape))  # (a writable copy)
            offset += count * 8
        parts.append(BlockAccumulator.of(window, *arrays))
    if offset != len(data):
        raise ValueError(f"kept sums of {block.id}: {len(data)} bytes, expected {offset}")
    return parts
