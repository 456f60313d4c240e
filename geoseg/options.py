"""Option bundles, each validated once when it is made (like rio-tiler's reader options).

One small frozen object per concern, passed unchanged through every layer: the CLI builds them
from flags, the data catalog from YAML sections, Python callers directly. A bad value raises
:class:`~geoseg.errors.InvalidInputError` naming the *option* (``batch_size``), which each front
end renders as its own flag or YAML path, before any work starts.

Examples
--------
>>> TilingOptions(tile=512).resolve(model_tile=256)
(512, 64)
>>> TilingOptions(tile=100)
Traceback (most recent call last):
...
geoseg.errors.InvalidInputError: tile size 100 is not a positive multiple of 32; set tile to e.g. 96
>>> OutputOptions(vector_formats=("gpkg", "fgb")).vector_formats
('gpkg', 'fgb')
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from geoseg.conventions import TILE_MULTIPLE
from geoseg.errors import InvalidInputError, choice_error

VECTOR_FORMATS: dict[str, str] = {
    "gpkg": ".gpkg",
    "geojson": ".geojson",
    "fgb": ".fgb",
    "parquet": ".parquet",
    "shp": ".shp",
}
"""Vector output format name -> file suffix. GeoJSON is written in WGS84 (RFC 7946); the others
keep the raster's CRS."""
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
LOSSES = ("ce", "dice", "focal", "jaccard", "lovasz", "tversky")
"""Loss names; combine with ``+`` (e.g. ``ce+dice``)."""
UNLABELED = ("background", "ignore")


# --- checks shared by the bundles -------------------------------------------------------------


def check_int(option: str, value: object, low: int, what: str = "") -> int:
    """Return ``value`` if it is an integer >= ``low``, else raise naming ``option``.

    Examples
    --------
    >>> check_int("epochs", 3, 1)
    3
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInputError(
            f"{what or option.replace('_', ' ')} {value!r} is invalid; set `{option}` to an "
            f"integer >= {low}",
            option=option,
        )
    return value


def check_number(option: str, value: object, low: float = 0.0, unit: str = "") -> float:
    """Return ``value`` as a float if it is a finite number >= ``low``, else raise."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or float(value) < low:  # type: ignore[arg-type]
        unit_text = f" {unit}" if unit else ""
        raise InvalidInputError(
            f"{option.replace('_', ' ')} {value!r} is invalid; set `{option}` to a number >= "
            f"{low:g}{unit_text}",
            option=option,
        )
    return float(value)  # type: ignore[arg-type]


def check_tile(tile: int, option: str = "tile") -> int:
    """A tile size must be a positive multiple of :data:`~geoseg.conventions.TILE_MULTIPLE`."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < TILE_MULTIPLE or tile % 32:
        near = max(TILE_MULTIPLE, round(tile / TILE_MULTIPLE) * TILE_MULTIPLE)
        raise InvalidInputError(
            f"tile size {tile} is not a positive multiple of {TILE_MULTIPLE}; set `{option}` to "
            f"e.g. {near}",
            option=option,
        )
    return tile


def check_overlap(overlap: int, tile: int) -> int:
    """An overlap must be >= 0 and less than half the tile."""
    check_int("overlap", overlap, 0)
    if overlap >= tile // 2:
        raise InvalidInputError(
            f"overlap {overlap} must be less than half the tile ({tile // 2}); lower `overlap`",
            option="overlap",
        )
    return overlap


def default_overlap(tile: int) -> int:
    """An eighth of the tile: enough context at tile edges for little recomputation.

    Examples
    --------
    >>> default_overlap(512), default_overlap(64)
    (64, 8)
    """
    return tile // 8


# --- the bundles --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class InputOptions:
    """How to read an input scene.

    Attributes
    ----------
    bands
        1-based band indexes to read (default: every band except an alpha band).
    nodata
        Nodata value to use when the file declares none (e.g. a zero collar).
    read_threads
        Threads GDAL decodes a read's compressed blocks on (default: up to 4, one per core), so
        reading keeps up with a fast GPU. Never changes the pixels read.
    """

    bands: tuple[int, ...] | None = None
    nodata: float | None = None
    read_threads: int = field(default_factory=lambda: min(4, os.cpu_count() or 1), repr=False)

    def __post_init__(self) -> None:
        check_int("read_threads", self.read_threads, 1)
        if self.bands is not None:
            bands = tuple(self.bands)
            if not bands or any(isinstance(b, bool) or not isinstance(b, int) for b in bands):
                raise InvalidInputError(
                    f"bands {list(bands)!r} are invalid; set `bands` to 1-based band numbers "
                    "such as 1,2,3",
                    option="bands",
                )
            if min(bands) < 1:
                raise InvalidInputError(
                    f"bands {list(bands)} are invalid: band numbers start at 1; set `bands` "
                    "to e.g. 1,2,3",
                    option="bands",
                )
            object.__setattr__(self, "bands", bands)
        if self.nodata is not None and (
            isinstance(self.nodata, bool) or not isinstance(self.nodata, int | float)
        ):
            raise InvalidInputError(
                f"nodata {self.nodata!r} is not a number; set `nodata` to the value of the "
                "empty pixels (e.g. 0)",
                option="nodata",
            )


@dataclass(frozen=True, kw_only=True)
class TilingOptions:
    """How a scene is cut up: tile size, overlap, batch and block size.

    ``tile`` None lets geoseg pick, per scene, the tile from the model's up to twice it that
    pushes the fewest pixels through the network (with the batch shrunk to hold as many pixels;
    see :func:`geoseg.geo.tiling.auto_tile`). The overlap defaults to an eighth of the given tile,
    or of the model's tile when the tile is picked (64 pixels for 512-pixel models). The block size
    (None: the largest whose buffers fit ``memory_mb`` megabytes, whatever the scene's size)
    changes memory, never the output.
    """

    tile: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    block_size: int | None = None
    memory_mb: int = 512

    def __post_init__(self) -> None:
        if self.tile is not None:
            check_tile(self.tile)
        if self.overlap is not None:
            check_int("overlap", self.overlap, 0)
            if self.tile is not None:
                check_overlap(self.overlap, self.tile)
        check_int("batch_size", self.batch_size, 1)
        if self.block_size is not None:
            check_int("block_size", self.block_size, 1)
        check_int("memory_mb", self.memory_mb, 16)

    def resolve(self, model_tile: int) -> tuple[int, int]:
        """The tile and overlap to use with a model trained at ``model_tile`` pixels."""
        tile = self.tile or model_tile
        overlap = default_overlap(tile) if self.overlap is None else self.overlap
        return tile, check_overlap(overlap, tile)


@dataclass(frozen=True, kw_only=True)
class InferenceOptions:
    """Where and how the network runs.

    Attributes
    ----------
    device
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    tta
        Average the 8 D4 rotations/flips of every tile.
    crf
        Refine the blended probabilities with a local mean-field CRF on the image.
    crf_params
        CRF parameters (default: the model's tuned ones, else :class:`CrfParams`' defaults).
    """

    device: str = "auto"
    tta: bool = False
    crf: bool = False
    crf_params: CrfParams | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not DEVICE_PATTERN.match(self.device):
            raise choice_error("device", str(self.device), DEVICES, option="device")


@dataclass(frozen=True, kw_only=True)
class CrfParams:
    """Parameters of the local mean-field CRF (:mod:`geoseg.models.crf`), validated on creation.

    Each field is an option named ``crf_<field>`` (e.g. ``crf_iterations``).

    Examples
    --------
    >>> CrfParams().reach
    15
    >>> CrfParams(window=4)
    Traceback (most recent call last):
    ...
    geoseg.errors.InvalidInputError: crf window 4 must be odd and >= 3; set crf_window to e.g. 5
    """

    iterations: int = 5
    """Mean-field steps (0 returns ``softmax(-U)``, the input renormalised)."""
    window: int = 7
    """Side of the local window (odd, >= 3); the kernel reaches ``window // 2`` pixels."""
    smoothness_weight: float = 1.0
    smoothness_sigma: float = 3.0
    """Pixels."""
    appearance_weight: float = 10.0
    appearance_sigma_xy: float = 5.0
    """Pixels; the window truncates the kernel however large this is."""
    appearance_sigma_rgb: float = 0.3
    """In the units of the normalised image the network sees."""
    compatibility: str = "potts"

    def __post_init__(self) -> None:
        check_int("crf_iterations", self.iterations, 0, "crf iterations")
        window = check_int("crf_window", self.window, 3, "crf window")
        if window % 2 == 0:
            raise InvalidInputError(
                f"crf window {window} must be odd and >= 3; set `crf_window` to e.g. {window + 1}",
                option="crf_window",
            )
        for name in ("smoothness_weight", "appearance_weight"):
            check_number(f"crf_{name}", getattr(self, name), 0.0)
        for name in ("smoothness_sigma", "appearance_sigma_xy", "appearance_sigma_rgb"):
            if check_number(f"crf_{name}", getattr(self, name), 0.0) == 0:
                raise InvalidInputError(
                    f"crf {name.replace('_', ' ')} must be > 0; set `crf_{name}`",
                    option=f"crf_{name}",
                )
        if self.compatibility != "potts":
            raise choice_error(
                "CRF compatibility", self.compatibility, ["potts"], option="crf_compatibility"
            )

    @property
    def radius(self) -> int:
        """Pixels one mean-field step reaches: ``window // 2``."""
        return self.window // 2

    @property
    def reach(self) -> int:
        """Pixels of context one output pixel depends on: ``iterations * (window // 2)``."""
        return self.iterations * self.radius


@dataclass(frozen=True, kw_only=True)
class VectorOptions:
    """How polygons are shaped.

    Attributes
    ----------
    simplify
        Topology-preserving simplification tolerance in metres (0: exact pixel outlines).
    min_area
        Drop regions smaller than this many m² (sieved first, so neighbours absorb them).
    background
        Class that gets no polygons; None vectorizes every class.
    block_size
        Pixels per block side while vectorizing; memory grows with its square.
    """

    simplify: float = 0.0
    min_area: float = 0.0
    background: int | None = 0
    block_size: int = 2048

    def __post_init__(self) -> None:
        object.__setattr__(self, "simplify", check_number("simplify", self.simplify, 0, "m"))
        object.__setattr__(self, "min_area", check_number("min_area", self.min_area, 0, "m²"))
        if self.background is not None:
            check_int("background", self.background, 0, "background class")
        check_int("block_size", self.block_size, MIN_VECTOR_BLOCK)


MIN_VECTOR_BLOCK = 16
"""Smallest block side for vectorizing (smaller blocks only add merging work)."""


@dataclass(frozen=True, kw_only=True)
class OutputOptions:
    """Which products a prediction writes besides the class raster.

    Attributes
    ----------
    vector_formats
        Polygon layers to write, any of :data:`VECTOR_FORMATS` (empty: none).
    confidence
        Also write ``<stem>_confidence.tif`` (winning probability in %).
    simplify, min_area
        See :class:`VectorOptions`.
    """

    vector_formats: tuple[str, ...] = ("gpkg",)
    confidence: bool = False
    simplify: float = 0.0
    min_area: float = 0.0

    def __post_init__(self) -> None:
        formats = (
            (self.vector_formats,) if isinstance(self.vector_formats, str) else self.vector_formats
        )
        formats = tuple(f.lower() for f in formats if f.lower() != "none")
        for name in formats:
            if name not in VECTOR_FORMATS:
                raise choice_error(
                    "vector format", name, [*VECTOR_FORMATS, "none"], option="vector_formats"
                )
        object.__setattr__(self, "vector_formats", formats)
        self.vector  # validates simplify and min_area  # noqa: B018

    @property
    def vector(self) -> VectorOptions:
        """The polygon-shaping options."""
        return VectorOptions(simplify=self.simplify, min_area=self.min_area)


@dataclass(frozen=True, kw_only=True)
class PredictOptions:
    """Everything that shapes one prediction run (see :func:`geoseg.predict_scene`).

    ``overwrite`` replaces existing outputs; ``resume`` journals finished blocks so that an
    interrupted run of the same job continues where it stopped.
    """

    input: InputOptions = field(default_factory=InputOptions)
    tiling: TilingOptions = field(default_factory=TilingOptions)
    inference: InferenceOptions = field(default_factory=InferenceOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    overwrite: bool = False
    resume: bool = False


@dataclass(frozen=True, kw_only=True)
class LabelOptions:
    """How label layers are read.

    Attributes
    ----------
    class_field
        Attribute holding each feature's class name or id (vector labels).
    classes
        Class names by id, background first (default: found in the files).
    unlabeled
        Pixels no feature covers: ``background`` (complete footprints) or ``ignore`` (sparse).
    colors
        One RGB colour per class of ``classes`` for the model contract (default: the land-cover
        palette by class name); e.g. from a classes file (``geoseg train --classes-file``).
    """

    class_field: str = "class_name"
    classes: tuple[str, ...] | None = None
    unlabeled: str = "background"
    colors: tuple[tuple[int, int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.unlabeled not in UNLABELED:
            raise choice_error("unlabeled mode", self.unlabeled, UNLABELED, option="unlabeled")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes) or None)
        if self.colors and len(self.colors) != len(self.classes or ()):
            raise InvalidInputError(
                f"{len(self.colors)} colours for classes {list(self.classes or ())}; give one "
                "colour per class in `classes`",
                option="classes",
            )


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """The network and the training recipe (see :func:`geoseg.train_model`).

    ``encoder`` None picks one for the amount of labelled data; ``encoder_weights`` is a local
    timm / torchvision / SMP encoder checkpoint; ``patience`` stops after that many epochs
    without a better validation mIoU (0: never early; None: a quarter of the planned epochs, at
    least 10). A fixed count stopped small label sets (many short epochs) early: on real imagery
    (``benchmarks/bench_real.py``) a patience of 6 stopped runs at a third of the schedule, the
    learning rate still near its peak, and cost 0.03 tree IoU (benchmarks/RESULTS.md).
    """

    arch: str = "unet"
    encoder: str | None = None
    encoder_weights: str | None = None
    tile: int = 256
    epochs: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int = 8
    lr: float = 1e-3
    loss: str = "ce+dice"
    device: str = "auto"
    val_fraction: float = 0.2
    seed: int = 0
    tune_crf: bool = False
    patience: int | None = None

    def __post_init__(self) -> None:
        check_tile(self.tile)
        if self.epochs is not None:
            check_int("epochs", self.epochs, 1)
        if self.patience is not None:
            check_int("patience", self.patience, 0)
        check_int("batch_size", self.batch_size, 1)
        if self.steps_per_epoch is not None:
            check_int("steps_per_epoch", self.steps_per_epoch, 1)
        if check_number("lr", self.lr, 0.0) <= 0:
            raise InvalidInputError(f"lr {self.lr} is invalid; set `lr` > 0", option="lr")
        if not 0 <= check_number("val_fraction", self.val_fraction) < 1:
            raise InvalidInputError(
                f"val fraction {self.val_fraction} is invalid; set `val_fraction` in [0, 1)",
                option="val_fraction",
            )
        parse_loss(self.loss)
        InferenceOptions(device=self.device)


def parse_loss(name: str) -> list[str]:
    """Split ``ce+dice`` into its parts, raising on an unknown one.

    Examples
    --------
    >>> parse_loss("CE + dice")
    ['ce', 'dice']
    """
    parts = [p.strip().lower() for p in name.split("+")]
    for part in parts:
        if part not in LOSSES:
            raise choice_error("loss", part, [*LOSSES, "ce+dice"], option="loss")
    return parts
