"""The model contract: everything a model needs from its input, shipped inside the model file.

Bands, pixel dtype and normalisation, classes and colours, binary or multiclass mode, the ground
sample distance and tile size it was trained at. Prediction checks each input against it before a
run, and normalises exactly as training did.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import numpy as np

from geoseg.errors import (
    ContractMismatchError,
    GsdMismatchWarning,
    InvalidInputError,
    ModelFileError,
)
from geoseg.io.raster import SUPPORTED_DTYPES
from geoseg.models.palette import palette_colors
from geoseg.options import CrfParams

Mode = Literal["multiclass", "binary"]
CONTRACT_VERSION = 2
"""Version 2 adds ``stretch`` (a percentile stretch computed over each scene) and ``crf`` (tuned
CRF parameters); version 1 files load with neither, which is what they meant."""
GSD_TOLERANCE = 1.5
"""Warn when the input's pixel size differs from the model's by more than this factor."""

GDAL_TYPES = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "float32": "Float32"}
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
    crf
        CRF parameters tuned for this model (``train --tune-crf``), used by ``predict --crf``.
    stretch
        Percentiles ``(low, high)``, e.g. ``(2, 98)``: the per-band ``low``/``high`` of the
        normalisation are computed over each scene (once, from a decimated read) instead of
        taken from the contract; ``mean``/``std`` still apply. Such a model accepts any dtype.
    encoder_weights_sha256
        SHA-256 of the pretrained encoder file training started from (provenance), or None.
    version
        Contract version the file was written with.
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
    crf: CrfParams | None = None
    stretch: tuple[float, float] | None = None
    encoder_weights_sha256: str | None = None
    version: int = CONTRACT_VERSION

    def __post_init__(self) -> None:
        if self.version > CONTRACT_VERSION:
            raise ModelFileError(
                f"the model contract is version {self.version} but this geoseg reads up to "
                f"{CONTRACT_VERSION}; upgrade geoseg"
            )
        if self.dtype not in SUPPORTED_DTYPES:
            raise ModelFileError(
                f"the model's input dtype {self.dtype!r} is not one of {', '.join(SUPPORTED_DTYPES)}"
            )
        if self.stretch is not None:
            object.__setattr__(self, "stretch", tuple(float(p) for p in self.stretch))
        object.__setattr__(self, "classes", tuple(self.classes))
        colors = tuple(tuple(int(v) for v in c[:3]) for c in self.colors)
        object.__setattr__(self, "colors", colors or default_colors(self.classes))
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
        crf = data.pop("crf", None)
        try:
            return cls(
                **{
                    **data,
                    "classes": tuple(data["classes"]),
                    "colors": tuple(tuple(c) for c in data["colors"]),
                    "band_names": tuple(data.get("band_names", ())),
                    "stretch": tuple(data["stretch"]) if data.get("stretch") else None,
                    "normalization": Normalization(**{k: tuple(v) for k, v in norm.items()})
                    if norm
                    else None,
                    "crf": CrfParams(**crf) if crf else None,
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


def default_colors(classes: int | Sequence[str]) -> tuple[tuple[int, int, int], ...]:
    """A colour per class: the land-cover palette by name (:mod:`geoseg.models.palette`)."""
    return palette_colors(classes)


def declared_normalization(
    dtype: str,
    bands: int,
    *,
    low: Sequence[float] = (),
    high: Sequence[float] = (),
    mean: Sequence[float] = (),
    std: Sequence[float] = (),
    stretch: tuple[float, float] | None = None,
) -> Normalization:
    """A normalisation declared for a network trained elsewhere (``model-create``).

    Each of ``low``, ``high``, ``mean``, ``std`` is empty (the default: the dtype's range,
    mean 0.5, std 0.25), one value for every band, or one value per band. ``mean``/``std`` are
    of the scaled values in [0, 1]. With a ``stretch``, ``low``/``high`` are computed per scene
    and may not be given. Raises :class:`InvalidInputError` naming the option.

    Examples
    --------
    >>> norm = declared_normalization("uint16", 2, low=[0], high=[10000, 4000])
    >>> norm.high, norm.mean
    ((10000.0, 4000.0), (0.5, 0.5))
    >>> declared_normalization("uint16", 2, low=[5], high=[5])
    Traceback (most recent call last):
    ...
    geoseg.errors.InvalidInputError: band 1: high 5 is not above low 5; set high above low
    """
    check_dtype(dtype)
    if stretch and (low or high):
        raise InvalidInputError(
            "give `stretch` (computed over each scene) or `low`/`high`, not both",
            options=("stretch", "low", "high"),
        )
    base = Normalization.for_dtype(dtype, bands)
    values = {
        name: per_band(name, given, bands) or getattr(base, name)
        for name, given in (("low", low), ("high", high), ("mean", mean), ("std", std))
    }
    for band, (lo, hi) in enumerate(zip(values["low"], values["high"], strict=True), start=1):
        if not hi > lo:
            raise InvalidInputError(
                f"band {band}: high {hi:g} is not above low {lo:g}; set `high` above `low`",
                options=("high", "low"),
            )
    if any(not s > 0 for s in values["std"]):
        raise InvalidInputError(f"std {list(values['std'])} must be > 0; fix `std`", option="std")
    return Normalization(**values)


def per_band(option: str, given: Sequence[float], bands: int) -> tuple[float, ...]:
    """``given`` as one value per band (one value is repeated); empty stays empty.

    Examples
    --------
    >>> per_band("low", [0], 3), per_band("low", [], 3)
    ((0.0, 0.0, 0.0), ())
    """
    if len(given) not in (0, 1, bands) or not all(math.isfinite(v) for v in given):
        raise InvalidInputError(
            f"{option} {list(given)} does not fit {bands} band(s); set `{option}` to one finite "
            "number or one per band",
            option=option,
        )
    return tuple(float(v) for v in given) * (bands if len(given) == 1 else 1)


def check_dtype(dtype: str) -> str:
    """Raise unless ``dtype`` is a pixel dtype geoseg reads."""
    if dtype not in SUPPORTED_DTYPES:
        raise InvalidInputError(
            f"dtype {dtype!r} is not supported; set `dtype` to one of {', '.join(SUPPORTED_DTYPES)}",
            option="dtype",
        )
    return dtype


def check_stretch(stretch: Sequence[float] | None) -> tuple[float, float] | None:
    """Percentiles ``(low, high)`` with ``0 <= low < high <= 100``, or None.

    Examples
    --------
    >>> check_stretch([2, 98])
    (2.0, 98.0)
    """
    if stretch is None or len(stretch) == 0:
        return None
    if len(stretch) != 2 or not 0 <= stretch[0] < stretch[1] <= 100:
        raise InvalidInputError(
            f"stretch {list(stretch)} is invalid; set `stretch` to two percentiles low,high with "
            "0 <= low < high <= 100 (e.g. 2,98)",
            option="stretch",
        )
    return float(stretch[0]), float(stretch[1])


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
    if not compatible_dtypes(contract.dtype, dtype) and contract.stretch is None:
        raise ContractMismatchError(
            f"{source}: pixels are {dtype} but the model expects {contract.dtype} and its "
            f"contract does not say how to scale {dtype}; convert the scene (gdal_translate -ot "
            f"{GDAL_TYPES.get(contract.dtype, contract.dtype)} -scale) or wrap the network for "
            f"{dtype} with model-create, declaring its dtype and scaling (low/high or stretch)"
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
        *scaling_rows(contract),
        ("mean / std", f"{_fmt(norm.mean)} / {_fmt(norm.std)} (of the scaled values)"),
        ("CRF", _crf_text(contract.crf)),
        ("encoder weights", contract.encoder_weights_sha256 or "random initialisation"),
        ("contract", f"version {contract.version}"),
    ]
    rows += [
        (f"class {i}", f"{name}  #{''.join(f'{v:02x}' for v in color)}")
        for i, (name, color) in enumerate(zip(contract.classes, contract.colors, strict=True))
    ]
    return rows


def _crf_text(crf: CrfParams | None) -> str:
    if crf is None:
        return "not tuned (the CRF uses its default parameters)"
    return (
        f"tuned: {crf.iterations} steps, window {crf.window}, smoothness {crf.smoothness_weight:g}"
        f", appearance {crf.appearance_weight:g} (sigma {crf.appearance_sigma_rgb:g})"
    )


def scaling_rows(contract: ModelContract) -> list[tuple[str, str]]:
    """How pixels are scaled to [0, 1]: fixed low/high, or a percentile stretch per scene."""
    norm = contract.normalization
    assert norm is not None
    if contract.stretch:
        low, high = contract.stretch
        return [("scaling", f"per scene: percentiles {low:g}-{high:g} of each band -> [0, 1]")]
    return [("scaling low", _fmt(norm.low)), ("scaling high", _fmt(norm.high))]


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in values)
