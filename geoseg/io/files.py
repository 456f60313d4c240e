"""Atomic outputs: write to a temporary name beside the target, rename when complete.

A failed run leaves nothing partial behind and never destroys an output that already existed.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Self

from geoseg.errors import InputFileNotFoundError, OutputExistsError


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
    """Mixin for writers: ``with obj:`` commits on success and aborts (deletes) on an error."""

    def commit(self) -> None:
        """Finish the output and move it into place."""
        raise NotImplementedError

    def abort(self) -> None:
        """Delete every temporary file."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
