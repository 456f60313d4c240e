"""Atomic outputs: write to a temporary name beside the target, rename when complete.

A failed run leaves nothing partial behind and never destroys an output that already existed.
Write failures of the file system (disk full, read-only, not permitted) become one
:class:`~geoseg.errors.OutputWriteError` naming the file (:func:`writing`); one run at a time
writes a scene's outputs (:func:`output_lock`), and the temporaries a crashed run left behind are
removed by the next run that holds the lock (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

from geoseg.conventions import LOGGER_NAME
from geoseg.errors import (
    GeosegError,
    InputFileNotFoundError,
    OutputBusyError,
    OutputExistsError,
    OutputWriteError,
)

log = logging.getLogger(LOGGER_NAME)

NO_SPACE = (
    "no space left on device; free disk space or choose another output folder, then run again"
)
READ_ONLY = "the file system is read-only; choose a writable output folder"
NOT_PERMITTED = "permission denied; make the folder writable or choose another output folder"
WRITE_PROBLEMS = {
    errno.ENOSPC: NO_SPACE,
    errno.EDQUOT: NO_SPACE,
    errno.EFBIG: NO_SPACE,
    errno.EROFS: READ_ONLY,
    errno.EACCES: NOT_PERMITTED,
    errno.EPERM: NOT_PERMITTED,
}
"""File-system errors that a user fixes, and the fix (by errno)."""
WRITE_PROBLEM_TEXTS = {
    "no space left on device": NO_SPACE,
    "free disk space available": NO_SPACE,
    "disk quota exceeded": NO_SPACE,
    "read-only file system": READ_ONLY,
    "permission denied": NOT_PERMITTED,
    "operation not permitted": NOT_PERMITTED,
}
"""The same, recognised in the messages of GDAL, OGR and safetensors (which drop the errno)."""
LOW_SPACE_BYTES = 1 << 20
"""Less free space than this after a failed write: the disk is full."""


def is_virtual_path(path: str | os.PathLike[str]) -> bool:
    """True for GDAL virtual paths and URLs (``/vsicurl/...``, ``s3://...``) that are not local files.

    Examples
    --------
    >>> is_virtual_path("/vsicurl/https://example.com/a.tif"), is_virtual_path("scene.tif")
    (True, False)
    """
    text = os.fspath(path)
    return text.startswith("/vsi") or "://" in text


def require_file(path: str | os.PathLike[str], what: str = "file") -> None:
    """Raise :class:`InputFileNotFoundError` when a local ``path`` does not exist."""
    if not is_virtual_path(path) and not Path(path).exists():
        raise InputFileNotFoundError(f"{path}: {what} not found; check the path")


def check_writable(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing output unless ``overwrite`` is set."""
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path}: already exists; set `overwrite` to replace it", option="overwrite"
        )


def temporary_sibling(path: Path) -> Path:
    """A hidden, unique name in ``path``'s folder with the same suffix (same filesystem)."""
    return path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")


def remove_quietly(path: Path) -> None:
    """Delete a file (and GDAL side-cars such as ``.aux.xml``) if present."""
    for candidate in (path, path.with_name(path.name + ".aux.xml")):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()


def write_problem(folder: Path, exc: BaseException) -> str | None:
    """What went wrong, with the fix, when ``exc`` is a file-system write failure; else None.

    Examples
    --------
    >>> write_problem(Path("."), OSError(errno.ENOSPC, "No space left on device"))[:20]
    'no space left on dev'
    >>> write_problem(Path("."), ValueError("bad value")) is None
    True
    """
    if isinstance(exc, OSError) and exc.errno in WRITE_PROBLEMS:
        return WRITE_PROBLEMS[exc.errno]
    text = str(exc).lower()
    found = [fix for words, fix in WRITE_PROBLEM_TEXTS.items() if words in text]
    if found:
        return found[0]
    if isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in ("rasterio", "pyogrio"):
        return probe_folder(folder)
    return None


def probe_folder(folder: Path) -> str | None:
    """Why writing into ``folder`` fails (no space, not writable), if either is the case."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None:
        return None
    with contextlib.suppress(OSError):
        stat = os.statvfs(existing)
        if stat.f_bavail * stat.f_frsize < LOW_SPACE_BYTES:
            return NO_SPACE
    return None if os.access(existing, os.W_OK) else NOT_PERMITTED


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a file-system write failure inside the block into one :class:`OutputWriteError`.

    Examples
    --------
    >>> with writing("out/a.tif"):  # doctest: +ELLIPSIS
    ...     raise OSError(errno.EROFS, "Read-only file system")
    Traceback (most recent call last):
    geoseg.errors.OutputWriteError: out/a.tif: cannot write: the file system is read-only; ...
    """
    try:
        yield
    except GeosegError:
        raise
    except Exception as exc:
        problem = write_problem(Path(path).parent, exc)
        if problem is None:
            raise
        raise OutputWriteError(f"{path}: cannot write: {problem}") from exc


def remove_stale_temporaries(paths: Iterable[Path]) -> None:
    """Delete the hidden temporaries (``.<stem>.tmp-*``) that crashed runs left beside ``paths``.

    Call it only while holding the outputs' :func:`output_lock`: no live run owns them then.
    """
    for path in paths:
        for leftover in path.parent.glob(f".{_glob_escape(path.stem)}.tmp-*"):
            log.info("%s: removing a temporary file left by an interrupted run", leftover)
            remove_quietly(leftover)


_held: dict[Path, int] = {}
_held_guard = threading.Lock()


def lock_path(folder: str | os.PathLike[str], stem: str) -> Path:
    """The lock file of a scene's outputs: ``<folder>/.<stem>.lock``."""
    return Path(folder) / f".{stem}.lock"


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike[str], stem: str) -> Iterator[Path]:
    """Hold the lock of the outputs named ``stem`` in ``folder`` while the block runs.

    A second run (another process) on the same outputs gets :class:`OutputBusyError` at once.
    The lock is an ``flock`` on ``.<stem>.lock``, so the system releases it when a process dies;
    the file is removed on the way out. Re-entrant within a process.

    Examples
    --------
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with output_lock(folder, "scene") as path, output_lock(folder, "scene"):
    ...     path.name
    '.scene.lock'
    """
    path = lock_path(folder, stem)
    with writing(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    key = path.parent.resolve() / path.name
    with _held_guard:
        nested = key in _held
        fd = _held[key] if nested else _acquire(path)
        _held[key] = fd
    if nested:
        yield path
        return
    try:
        yield path
    finally:
        with _held_guard:
            del _held[key]
            remove_quietly(path)
            os.close(fd)


def _acquire(path: Path) -> int:
    """Open and ``flock`` the lock file; record who holds it."""
    while True:
        with writing(path.parent):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputBusyError(
                f"{path.parent}: another run ({holder}) is writing the outputs of {path.stem[1:]!r}"
                " here; wait for it to finish or choose another output folder"
            ) from None
        if _is_current(fd, path):
            break
        os.close(fd)  # the holder removed the file while we opened it: lock the new one
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
    return fd


def _holder(fd: int) -> str:
    """Who holds a lock file (as its holder wrote it), or a plain description."""
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if text:
            return text
    return "process unknown"


def _is_current(fd: int, path: Path) -> bool:
    """Whether the open lock file is still the one at ``path``."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class PendingOutput:
    """An output being written under a hidden temporary name beside its final name.

    :meth:`commit` renames the temporary file (and its siblings with ``suffixes``, e.g. a
    Shapefile's parts or a ``.qml`` side-car) into place, removing stale siblings of a dataset it
    replaces; :meth:`abort` deletes every temporary file. The one place geoseg writes outputs
    atomically: a failed run leaves nothing partial and never destroys an existing output.

    Examples
    --------
    >>> import tempfile
    >>> out = PendingOutput(Path(tempfile.mkdtemp()) / "a.txt")
    >>> _ = out.tmp.write_text("done")
    >>> out.commit(); out.final.read_text()
    'done'
    """

    def __init__(
        self, final: str | os.PathLike[str], overwrite: bool = False, suffixes: tuple[str, ...] = ()
    ) -> None:
        self.final = Path(final)
        check_writable(self.final, overwrite)
        with writing(self.final):
            self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = temporary_sibling(self.final)
        self.suffixes = suffixes

    def commit(self) -> None:
        """Rename the siblings, then the main file, into place."""
        for suffix in self.suffixes:
            source, target = self.tmp.with_suffix(suffix), self.final.with_suffix(suffix)
            if source.exists():
                os.replace(source, target)
            else:
                remove_quietly(target)
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        """Delete the temporary file and its siblings (nothing after a commit)."""
        for leftover in self.tmp.parent.glob(f"{_glob_escape(self.tmp.stem)}.*"):
            remove_quietly(leftover)


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str], overwrite: bool = False, suffixes: tuple[str, ...] = ()
) -> Iterator[Path]:
    """Yield a temporary path; on success rename it (and ``suffixes`` siblings) to ``path``.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_output(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    pending = PendingOutput(path, overwrite, suffixes)
    try:
        with writing(path):
            yield pending.tmp
            pending.commit()
    finally:
        pending.abort()


class Closing:
    """Mixin: ``with obj:`` returns ``obj`` and calls ``obj.close()`` on the way out."""

    def close(self) -> None:
        """Release what the object holds."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Committing:
    """Mixin for writers: ``with obj:`` commits on success and aborts (deletes) on an error,
    including an error (or an interruption) while committing."""

    def commit(self) -> None:
        """Finish the output and move it into place."""
        raise NotImplementedError

    def abort(self) -> None:
        """Delete every temporary file."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.commit()
        except BaseException:
            self.abort()
            raise
