"""The geoseg error hierarchy.

Every error geoseg raises for a user's mistake is a :class:`GeosegError`. Each subclass also
inherits the builtin it resembles, so ``except FileNotFoundError`` keeps working for callers that
do not know geoseg. Messages say what was received, what was expected and how to fix it; the CLI
prints them as one line.

Errors name *options*, never command-line flags: a message marks an option name in backticks
(`` `bands` ``) and lists it in :attr:`GeosegError.options`; each front end renders the mark in
its own words with :meth:`GeosegError.render`: the CLI as ``--bands``, the data catalog as
``scenes[3].bands``, Python (``str(error)``) as ``bands``.

Examples
--------
>>> error = InvalidInputError("batch size 0 is invalid; set `batch_size` to 1 or more",
...                           option="batch_size")
>>> str(error)
'batch size 0 is invalid; set batch_size to 1 or more'
>>> error.render(lambda name: "--" + name.replace("_", "-"))
'batch size 0 is invalid; set --batch-size to 1 or more'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

OptionNamer = Callable[[str], str]
"""How a front end names an option: ``"batch_size" -> "--batch-size"``."""


class GeosegError(Exception):
    """Base class of every error geoseg raises on purpose.

    Parameters
    ----------
    message
        One line: what was received, what was expected, the fix. Option names in backticks.
    option
        The option the message is about (also accepted: ``options``, several).
    """

    def __init__(
        self, message: str = "", *, option: str | None = None, options: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.template = message
        self.options: tuple[str, ...] = (option,) if option else tuple(options)

    @property
    def option(self) -> str | None:
        """The first option the message names, if any."""
        return self.options[0] if self.options else None

    def render(self, name: OptionNamer | None = None) -> str:
        """The message with each marked option named by ``name`` (default: its Python name)."""
        text = self.template
        for option in self.options:
            text = text.replace(f"`{option}`", name(option) if name else option)
        return text

    def __str__(self) -> str:
        return self.render()

    def __reduce__(self) -> tuple[object, ...]:
        return _rebuild, (type(self), self.template, self.options)


def _rebuild(cls: type[GeosegError], template: str, options: tuple[str, ...]) -> GeosegError:
    """Unpickle an error with its options (errors cross process boundaries on Dask)."""
    return cls(template, options=options)


class InputFileNotFoundError(GeosegError, FileNotFoundError):
    """A file the user named does not exist."""


class InvalidInputError(GeosegError, ValueError):
    """An input (raster, vector, parameter) is not usable as given."""


class RasterReadError(GeosegError, OSError):
    """GDAL could not open or read a raster."""


class RemoteReadError(RasterReadError):
    """GDAL could not open or read a raster over the network (a ``/vsicurl/`` or other virtual
    path), after its own HTTP retries. Unlike other geoseg errors it is *transient*: the batch
    runner and the Prefect flows retry it."""


class ModelFileError(GeosegError, ValueError):
    """A model file is missing, corrupt, unsafe or not a geoseg model."""


class ContractMismatchError(GeosegError, ValueError):
    """The input raster does not match what the model was trained on."""


class OutputExistsError(GeosegError, FileExistsError):
    """An output exists and ``overwrite`` was not requested."""


class OutputWriteError(GeosegError, OSError):
    """An output could not be written: disk full, read-only or not permitted."""


class OutputBusyError(GeosegError, BlockingIOError):
    """Another run is writing the same outputs right now."""


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


class AlphaBandWarning(GeosegWarning):
    """A band flagged alpha is used as data, or a declared nodata value shadows an alpha mask."""


class EmptySceneWarning(GeosegWarning):
    """Every pixel of a scene is nodata: the outputs are valid but empty."""


def choice_error(
    kind: str, received: str, valid: Sequence[str], option: str | None = None
) -> UnknownChoiceError:
    """Build an :class:`UnknownChoiceError` that lists the valid choices.

    Examples
    --------
    >>> str(choice_error("architecture", "unet3", ["unet", "fpn"]))
    "unknown architecture 'unet3'; choose one of: fpn, unet"
    """
    return UnknownChoiceError(
        f"unknown {kind} {received!r}; choose one of: {', '.join(sorted(valid))}", option=option
    )


class StalledClassWarning(GeosegWarning):
    """A class's validation IoU stays near zero while training (said once per run).

    Like :class:`GeosegError`, the message marks option names in backticks; front ends render
    them in their own words (:meth:`render`).

    Examples
    --------
    >>> w = StalledClassWarning("building: IoU 0.05; try `encoder_weights`", option="encoder_weights")
    >>> str(w), w.render(lambda name: "--" + name.replace("_", "-"))
    ('building: IoU 0.05; try encoder_weights', 'building: IoU 0.05; try --encoder-weights')
    """

    def __init__(self, message: str = "", *, option: str | None = None) -> None:
        super().__init__(message)
        self.template = message
        self.options: tuple[str, ...] = (option,) if option else ()

    def render(self, name: OptionNamer | None = None) -> str:
        """The message with each marked option named by ``name`` (default: its Python name)."""
        text = self.template
        for option in self.options:
            text = text.replace(f"`{option}`", name(option) if name else option)
        return text

    def __str__(self) -> str:
        return self.render()
