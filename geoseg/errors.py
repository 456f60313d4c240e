"""The geoseg error hierarchy.

Every error geoseg raises for a user's mistake is a :class:`GeosegError`. Each subclass also
inherits the builtin it resembles, so ``except FileNotFoundError`` keeps working for callers that
do not know geoseg. Messages say what was received, what was expected and how to fix it; the CLI
prints them as one line.
"""

from __future__ import annotations


class GeosegError(Exception):
    """Base class of every error geoseg raises on purpose."""


class InputFileNotFoundError(GeosegError, FileNotFoundError):
    """A file the user named does not exist."""


class InvalidInputError(GeosegError, ValueError):
    """An input (raster, vector, parameter) is not usable as given."""


class RasterReadError(GeosegError, OSError):
    """GDAL could not open or read a raster."""


class ModelFileError(GeosegError, ValueError):
    """A model file is missing, corrupt, unsafe or not a geoseg model."""


class ContractMismatchError(GeosegError, ValueError):
    """The input raster does not match what the model was trained on."""


class OutputExistsError(GeosegError, FileExistsError):
    """An output exists and ``overwrite`` was not requested."""


class UnknownChoiceError(GeosegError, ValueError):
    """A name (architecture, encoder, format, loss...) is not one of the valid choices."""


class CatalogError(GeosegError, ValueError):
    """A data catalog file is invalid; the message names the YAML path."""


class ExecutorError(GeosegError, RuntimeError):
    """A distributed executor cannot run the work as configured."""


class GeosegWarning(UserWarning):
    """Base class of geoseg's warnings."""


class GsdMismatchWarning(GeosegWarning):
    """The input's ground sample distance is far from the model's."""


def choice_error(
    kind: str, received: str, valid: list[str] | tuple[str, ...]
) -> UnknownChoiceError:
    """Build an :class:`UnknownChoiceError` that lists the valid choices.

    Examples
    --------
    >>> str(choice_error("architecture", "unet3", ["unet", "fpn"]))
    "unknown architecture 'unet3'; choose one of: fpn, unet"
    """
    return UnknownChoiceError(
        f"unknown {kind} {received!r}; choose one of: {', '.join(sorted(valid))}"
    )
