"""The shared Typer app, the ``--verbose`` switch and one-line error reporting."""

from __future__ import annotations

import logging
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from geoseg.errors import GeosegError, GeosegWarning

app = typer.Typer(
    name="geoseg",
    help="Land-cover segmentation of large GeoTIFFs: class COGs and polygon layers for GIS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
state = {"verbose": False}
F = TypeVar("F", bound=Callable[..., Any])
USER_ERRORS = (GeosegError,)
EXIT_USER_ERROR = 2


@app.callback()
def root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks and debug logs."),
) -> None:
    """geoseg: seam-free, memory-bounded segmentation of GeoTIFFs."""
    state["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)


def show_warning(
    message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any
) -> None:
    """Print geoseg warnings as one line; leave others to Python."""
    console.print(f"[yellow]warning:[/yellow] {message}", highlight=False)


def report_error(exc: BaseException) -> int:
    """Print an error as one line (or a traceback with --verbose) and return the exit code."""
    if state["verbose"]:
        traceback.print_exception(exc)
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    console.print(f"[bold red]error:[/bold red] {first_line}", highlight=False, soft_wrap=True)
    return EXIT_USER_ERROR


def run_app(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line and exit code 2."""
    previous = warnings.showwarning
    warnings.filterwarnings("always", category=GeosegWarning)
    warnings.showwarning = lambda m, c, *a, **k: (
        show_warning(m, c) if issubclass(c, GeosegWarning) else previous(m, c, *a, **k)
    )
    try:
        code = app(args=argv, standalone_mode=False)
    except USER_ERRORS as exc:
        return report_error(exc)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", getattr(exc, "code", 0))
        return int(code or 0)
    except typer.Abort:
        console.print("aborted")
        return 130
    except KeyboardInterrupt:
        console.print("interrupted: no output was replaced (with --resume, rerun to continue)")
        return 130
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show(file=sys.stderr)
            return exc.exit_code
        raise
    finally:
        warnings.showwarning = previous
    return code if isinstance(code, int) else 0
