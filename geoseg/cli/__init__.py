"""The ``geoseg`` command line: one module per command, each a thin shell over one API call."""

from __future__ import annotations

import sys

from geoseg.cli import (  # noqa: F401  (registers commands)
    catalog,
    demo,
    evaluate,
    model,
    model_edit,
    predict,
    train,
    vectorize,
)
from geoseg.cli._app import app, run_app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_app())
