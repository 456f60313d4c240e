"""The resume journal: which blocks of an interrupted run are safely on disk.

A JSON-lines file beside the outputs. The first line is a *header* (everything that must match
for a run to continue another: the job, classes, colours, outputs, size); each further line
records one block once its pixels are on disk: its id, window, class counts and a checksum of
its bytes. A line cut short by a kill ends the list; a different header means a different job,
and the journal starts afresh.

Examples
--------
>>> import tempfile
>>> journal = BlockJournal(Path(tempfile.mkdtemp()) / ".a.partial.jsonl", {"job": 1})
>>> journal.start([])
>>> journal.record("r0000_c0000", Window(0, 0, 2, 2), [4, 0], crc=7)
>>> [r["block"] for r in journal.read()]
['r0000_c0000']
>>> BlockJournal(journal.path, {"job": 2}).read()  # another job: nothing to resume
[]
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.geo.window import Window
from geoseg.io.files import atomic_output, remove_quietly

Record = dict[str, Any]


def normalized(header: Any) -> Any:
    """``header`` as it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(header))


def checksum(arrays: Sequence[np.ndarray]) -> int:
    """CRC-32 of the arrays' bytes as uint8 (what a block wrote to each band)."""
    crc = 0
    for array in arrays:
        crc = zlib.crc32(np.ascontiguousarray(array, dtype=np.uint8).tobytes(), crc)
    return crc


class BlockJournal:
    """The journal of one resumable output.

    Parameters
    ----------
    path
        The journal file (``.<stem>.partial.jsonl`` beside the output).
    header
        JSON-serialisable description of the job; records count only under an equal header.
    """

    def __init__(self, path: Path, header: Any) -> None:
        self.path = path
        self.header = normalized(header)

    def read(self) -> list[Record]:
        """Blocks recorded under the same header, in order; ``[]`` for another job or none."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records[1:] if records and records[0] == self.header else []

    def start(self, kept: Sequence[Record]) -> None:
        """Rewrite the journal (atomically): the header, then the blocks kept from before."""
        with atomic_output(self.path, overwrite=True) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in [self.header, *kept]))

    def record(self, block: str, window: Window, counts: Sequence[int], crc: int) -> None:
        """Append one block that is on disk."""
        entry = {
            "block": block,
            "window": [window.row, window.col, window.height, window.width],
            "counts": [int(c) for c in counts],
            "crc": crc,
        }
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def record_sums(self, key: str, offset: int, length: int, crc: int) -> None:
        """Append a run of bytes that :class:`SumsFile` holds (a block's shared sums)."""
        entry = {"sums": key, "offset": offset, "length": length, "crc": crc}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")

    def remove(self) -> None:
        """Delete the journal (the output is complete)."""
        remove_quietly(self.path)


def record_window(record: Record) -> Window:
    """The window a journal record covers."""
    return Window(*record["window"])


class SumsFile:
    """An append-only file of byte runs (the integer sums a resumed run needs), indexed by the
    journal: each run is appended, synced, then journaled with its offset, length and CRC."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def clear(self) -> None:
        """Start empty."""
        remove_quietly(self.path)

    def append(self, data: bytes) -> tuple[int, int]:
        """Append ``data``; returns its offset and CRC-32 once it is on disk."""
        with open(self.path, "ab") as fh:
            offset = fh.seek(0, os.SEEK_END)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return offset, zlib.crc32(data)

    def read(self, record: Record) -> bytes | None:
        """The bytes a journal record names, or None when they are not intact."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(record["offset"])
                data = fh.read(record["length"])
        except OSError:
            return None
        ok = len(data) == record["length"] and zlib.crc32(data) == record["crc"]
        return data if ok else None
