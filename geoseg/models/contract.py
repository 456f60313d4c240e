"""The model contract: everything a model needs from its input, shipped inside the model file.

Bands, pixel dtype and normalisation, classes and colours, binary or multiclass mode, the ground
sample distance and tile size it was trained at. Prediction checks each input against it before a
run, and normalises exactly as training did.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np

from geoseg.errors import ContractMismatchError, GsdMismatchWarning, ModelFileError

Mode = Literal["multiclass", "binary"]
CONTRACT_VERSION = 1
GSD_TOLERANCE = 1.5
"""Warn when the input's pixel size differs from the model's by more than this factor."""

DEFAULT_COLORS = [
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (255, 225, 25),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
]
DTYPE_RANGES = {"uint8": (0.0, 255.0), "uint16": (0.0, 65535.0), "int16": (-32768.0, 32767.0)}


@dataclass(frozen=True)
class Normalization:
    """Per-band scaling: ``x -> clip((x - low) / (high - low), 0, 1)``, then ``(x - mean) / std``.

    ``low`` and ``high`` are robust percentiles of the training images (or the dtype's range);
    ``mean`` and ``std`` are of the scaled values.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def for_dtype(cls, dtype: str, bands: int) -> Normalization:
        """Scale the dtype's full range to [0, 1] (floats are taken as already in [0, 1])."""
        low, high = DTYPE_RANGES.get(dtype, (0.0, 1.0))
        return cls((low,) * bands, (high,) * bands, (0.5,) * bands, (0.25,) * bands)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Normalise ``(C, ...)`` pixels to float32."""
        shape = (-1,) + (1,) * (pixels.ndim - 1)
        low = np.asarray(self.low, np.float32).reshape(shape)
        span = np.asarray(self.high, np.float32).reshape(shape) - low
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        std = np.asarray(self.std, np.float32).reshape(shape)
        x = pixels.astype(np.float32)  # the one copy; everything below is in place
        x -= low
        x /= np.maximum(span, 1e-12)
        np.clip(x, 0.0, 1.0, out=x)
        x -= mean
        x /= std
        return x


@dataclass(frozen=True)
class ModelContract:
    """What a model expects and produces.

    Attributes
    ----------
    arch, encoder
        SMP architecture and encoder names.
    bands
        Number of input bands.
    dtype
        Pixel dtype the normalisation was made for (``uint8``, ``uint16``, ...).
    classes
        Class names; index 0 is background.
    colors
        One RGB triple per class (default: :func:`default_colors`).
    mode
        ``multiclass`` (softmax over ``len(classes)`` outputs) or ``binary`` (one sigmoid output,
        classes ``[background, foreground]``).
    normalization
        Per-band scaling used in training.
    gsd
        Ground sample distance in metres the model was trained at, or None.
    tile_size
        Tile size it was trained at: the default tile for prediction.
    band_names
        Optional names of the input bands, for people.
    """

    arch: str
    encoder: str
    bands: int
    dtype: str
    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...] = ()
    mode: Mode = "multiclass"
    normalization: Normalization | None = None
    gsd: float | None = None
    tile_size: int = 512
    band_names: tuple[str, ...] = field(default=())
    version: int = CONTRACT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        colors = tuple(tuple(int(v) for v in c[:3]) for c in self.colors)
        object.__setattr__(self, "colors", colors or default_colors(len(self.classes)))
        if len(self.colors) != len(self.classes):
            raise ModelFileError(
                f"{len(self.classes)} classes but {len(self.colors)} colours; give one per class"
            )
        if self.mode == "binary" and len(self.classes) != 2:
            raise ModelFileError(
                f"binary mode needs exactly 2 classes (background, foreground), got {self.classes}"
            )
        if self.normalization is None:
            object.__setattr__(
                self, "normalization", Normalization.for_dtype(self.dtype, self.bands)
            )

    @property
    def num_outputs(self) -> int:
        """Channels of the network's output: 1 in binary mode, else one per class."""
        return 1 if self.mode == "binary" else len(self.classes)

    @property
    def num_classes(self) -> int:
        """Number of classes in the output raster."""
        return len(self.classes)

    def to_json(self) -> str:
        """Serialise to a JSON string (stored in the model file's metadata)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ModelContract:
        """Parse a contract written by :meth:`to_json`.

        Raises :class:`ModelFileError` saying what is wrong (not JSON, not an object, a missing
        or unknown field, a value of the wrong type); the caller adds the file's name.

        Examples
        --------
        >>> ModelContract.from_json('["unet"]')
        Traceback (most recent call last):
        ...
        geoseg.errors.ModelFileError: the model contract is malformed: expected a JSON object, got list
        """
        data = contract_fields(text)
        norm = data.pop("normalization", None)
        try:
            return cls(
                **{
                    **data,
                    "classes": tuple(data["classes"]),
                    "colors": tuple(tuple(c) for c in data["colors"]),
                    "band_names": tuple(data.get("band_names", ())),
                    "normalization": Normalization(**{k: tuple(v) for k, v in norm.items()})
                    if norm
                    else None,
                }
            )
        except ModelFileError as exc:
            raise ModelFileError(f"the model contract is inconsistent: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelFileError(f"the model contract is malformed: bad value ({exc})") from exc


CONTRACT_REQUIRED = ("arch", "encoder", "bands", "dtype", "classes", "colors")
CONTRACT_TYPES: dict[str, type] = {
    "arch": str, "encoder": str, "bands": int, "dtype": str, "classes": list, "colors": list,
    "tile_size": int, "mode": str,
}  # fmt: skip
"""JSON types of the fields whose wrong type would only fail later, far from the file."""


def contract_fields(text: str) -> dict[str, Any]:
    """The fields of a contract's JSON, checked against :class:`ModelContract`'s fields."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ModelFileError(f"the model contract is malformed: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelFileError(
            f"the model contract is malformed: expected a JSON object, got {type(data).__name__}"
        )
    known = {f.name for f in fields(ModelContract)}
    unknown = sorted(set(data) - known)
    missing = [name for name in CONTRACT_REQUIRED if name not in data]
    if unknown or missing:
        problem = f"unknown field(s) {unknown}" if unknown else f"missing field(s) {missing}"
        raise ModelFileError(
            f"the model contract is malformed: {problem}; valid fields: {', '.join(sorted(known))}"
        )
    for name, kind in CONTRACT_TYPES.items():
        value = data.get(name, kind())
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ModelFileError(
                f"the model contract is malformed: {name} should be a JSON "
                f"{JSON_NAMES[kind]}, got {value!r}"
            )
    return data


JSON_NAMES = {str: "string", int: "integer", list: "array"}


def default_colors(count: int) -> tuple[tuple[int, int, int], ...]:
    """A distinct colour per class; class 0 (background) is black."""
    return tuple(DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i in range(count))


def parse_color(text: str) -> tuple[int, int, int]:
    """Parse ``#rrggbb`` or ``r,g,b`` (also ``r/g/b``).

    Examples
    --------
    >>> parse_color("#ff8000"), parse_color("0/128/255")
    ((255, 128, 0), (0, 128, 255))
    """
    text = text.strip()
    try:
        if text.startswith("#") and len(text) == 7:
            return tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        parts = [int(p) for p in text.replace("/", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or not all(0 <= p <= 255 for p in parts):
        raise ContractMismatchError(f"colour {text!r} is not '#rrggbb' or 'r/g/b' with 0..255")
    return parts[0], parts[1], parts[2]


def compatible_dtypes(model_dtype: str, input_dtype: str) -> bool:
    """Same dtype, or both floating point."""
    both_float = model_dtype.startswith("float") and input_dtype.startswith("float")
    return model_dtype == input_dtype or both_float


def check_input(
    contract: ModelContract, source: str, bands: int, dtype: str, gsd: float | None
) -> None:
    """Raise :class:`ContractMismatchError` if an input cannot be used; warn on a GSD far off."""
    if bands != contract.bands:
        raise ContractMismatchError(
            f"{source}: has {bands} band(s) but the model expects {contract.bands}; set `bands` "
            f"to {contract.bands} band numbers (e.g. {','.join(map(str, range(1, contract.bands + 1)))})",
            option="bands",
        )
    if not compatible_dtypes(contract.dtype, dtype):
        raise ContractMismatchError(
            f"{source}: pixels are {dtype} but the model was trained on {contract.dtype}; "
            f"convert the scene (gdal_translate -ot) or use a model trained on {dtype}"
        )
    if gsd and contract.gsd and not 1 / GSD_TOLERANCE <= gsd / contract.gsd <= GSD_TOLERANCE:
        warnings.warn(
            f"{source}: pixel size {gsd:.3g} m differs from the model's {contract.gsd:.3g} m; "
            "results may be poor (resample the scene with gdalwarp -tr)",
            GsdMismatchWarning,
            stacklevel=2,
        )


def describe(contract: ModelContract) -> list[tuple[str, str]]:
    """Rows ``(field, value)`` describing a contract for people."""
    norm = contract.normalization
    assert norm is not None
    rows = [
        ("architecture", f"{contract.arch} / {contract.encoder}"),
        ("mode", contract.mode),
        ("input", f"{contract.bands} band(s) of {contract.dtype}"),
        ("tile size", f"{contract.tile_size} px"),
        ("GSD", f"{contract.gsd:g} m" if contract.gsd else "unspecified"),
        ("scaling low", _fmt(norm.low)),
        ("scaling high", _fmt(norm.high)),
        ("mean / std", f"{_fmt(norm.mean)} / {_fmt(norm.std)}"),
    ]
    rows += [
        (f"class {i}", f"{name}  #{''.join(f'{v:02x}' for v in color)}")
        for i, (name, color) in enumerate(zip(contract.classes, contract.colors, strict=True))
    ]
    return rows


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in values)
