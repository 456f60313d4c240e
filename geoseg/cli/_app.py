"""The shared Typer app, ``--verbose``/``--version``, one-line errors and one-line warnings."""

from __future__ import annotations

import logging
import sys
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
state = {"verbose": False}
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
    version: bool = typer.Option(
        False, "--version", callback=show_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """geoseg: seam-free, memory-bounded segmentation of GeoTIFFs."""
    state["verbose"] = verbose
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)


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


def run_app(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line and exit code 2, usage errors print usage."""
    usage_errors = click_exceptions()
    try:
        with one_line_warnings():
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
        console.print("interrupted: no output was replaced (with --resume, rerun to continue)")
        return EXIT_INTERRUPTED
    except usage_errors as exc:
        exc.show(file=sys.stderr)  # type: ignore[attr-defined]
        return int(getattr(exc, "exit_code", EXIT_USER_ERROR))
    return code if isinstance(code, int) else 0
