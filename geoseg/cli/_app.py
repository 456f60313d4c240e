"""The shared Typer app, ``--verbose``/``--version``, one-line errors and one-line warnings."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console

from geoseg import __version__
from geoseg.cli.options import flag
from geoseg.conventions import LOGGER_NAME
from geoseg.errors import GeosegError

app = typer.Typer(
    name="geoseg",
    help="Land-cover segmentation of large GeoTIFFs: class COGs and polygon layers for GIS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
"""Progress, logs, warnings and errors: stderr."""
results = Console()
"""Results (summaries, tables): stdout, so ``geoseg predict ... > summary.txt`` keeps them."""
state = {"verbose": False, "interrupted": False, "quiet": False}
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def click_exceptions() -> tuple[type[BaseException], ...]:
    """Click's exception base classes: typer's bundled copy (typer >= 0.17) and click itself."""
    found: list[type[BaseException]] = []
    bundled = getattr(typer, "_click", None)
    if bundled is not None:
        found.append(bundled.exceptions.ClickException)
    try:
        import click

        found.append(click.ClickException)
    except ImportError:  # pragma: no cover - typer always brings one of them
        pass
    return tuple(found)


def show_version(value: bool) -> None:
    """``--version``: print the version and stop."""
    if value:
        typer.echo(f"geoseg {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks and debug logs."),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="No progress bars or summaries (errors and --json only)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=show_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """geoseg: seam-free, memory-bounded segmentation of GeoTIFFs."""
    state["verbose"] = verbose
    state["quiet"] = quiet
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not any(isinstance(h, StderrHandler) for h in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (also when redirected)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""


def one_line(text: str) -> str:
    """The first line of a message."""
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else ""


def show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    """Print any warning as one ``warning:`` line (no source line)."""
    render = getattr(message, "render", None)  # warnings that name options (in backticks)
    text = render(flag) if callable(render) else str(message)
    console.print(f"[yellow]warning:[/yellow] {one_line(text)}", highlight=False, soft_wrap=True)


def report_error(exc: BaseException) -> int:
    """Print an error as one line (or a traceback with --verbose) and return the exit code."""
    if state["verbose"]:
        traceback.print_exception(exc)
    text = exc.render(flag) if isinstance(exc, GeosegError) else str(exc)
    message = one_line(text) or type(exc).__name__
    console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    return EXIT_USER_ERROR


def report_interrupt() -> int:
    """Print the one line of an interrupted command and return its exit code."""
    console.print("interrupted: no output was replaced (with --resume, rerun to continue)")
    return EXIT_INTERRUPTED


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show each distinct warning once, as one line, while the command runs."""
    with warnings.catch_warnings():
        warnings.simplefilter("once")
        previous, warnings.showwarning = warnings.showwarning, show_warning
        try:
            yield
        finally:
            warnings.showwarning = previous


INTERRUPTS = (signal.SIGINT, signal.SIGTERM)


def interrupt(signum: int, frame: object) -> None:
    """A signal handler that stops the command as Ctrl-C does (and remembers it did)."""
    state["interrupted"] = True
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def signals_interrupt() -> Iterator[None]:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt while the command runs, so writers abort.

    Only in the main thread (elsewhere signal handlers cannot be set); typer turns the
    interrupt into exit code 130, and ``state["interrupted"]`` tells it from a plain 130.
    """
    state["interrupted"] = False
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, interrupt) for sig in INTERRUPTS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_app(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line and exit code 2, usage errors print usage.

    Ctrl-C and SIGTERM end the command with one line and exit code 130; outputs being written
    are deleted (with ``--resume`` the finished blocks are kept for the next run).
    """
    usage_errors = click_exceptions()
    try:
        with one_line_warnings(), signals_interrupt():
            code = app(args=argv, standalone_mode=False)
    except GeosegError as exc:
        return report_error(exc)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        return int(code or 0)
    except typer.Abort:
        console.print("aborted")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        return report_interrupt()
    except usage_errors as exc:
        exc.show(file=sys.stderr)  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", EXIT_USER_ERROR))
    if state["interrupted"]:
        return report_interrupt()
    return code if isinstance(code, int) else 0


def emit(*renderables: Any) -> None:
    """Print results to stdout (nothing with ``--quiet``)."""
    if not state["quiet"]:
        for renderable in renderables:
            results.print(renderable, highlight=False, soft_wrap=True)


def emit_json(document: Any) -> None:
    """Print one JSON document to stdout (also with ``--quiet``): the ``--json`` output."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()
