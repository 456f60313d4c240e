"""Match a scene to a model's contract before any work: bands, alpha flags, dtype, scaling.

:func:`prepare_input` opens the scene once and decides what every block will read:

- **bands**: explicit ``bands`` always win. Otherwise every band but alpha, except when the model
  needs every band of the file and an alpha-flagged band holds data (an RGBN file whose NIR band
  GDAL flags alpha): that band is then data (the reader warns once). A wrong count is an error that
  counts bands as the file has them and says which band is flagged alpha.
- **dtype**: checked against the contract (:func:`~geoseg.models.contract.check_input`).
- **scaling**: a contract with a percentile ``stretch`` gets its per-band ``low``/``high`` from
  a decimated read of the whole scene, once, so the result does not depend on the block size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from geoseg.errors import ContractMismatchError
from geoseg.geo.geobox import RasterGrid
from geoseg.io.raster import BandLayout, SceneReader, band_layout, open_dataset
from geoseg.models.contract import ModelContract, Normalization, check_input
from geoseg.options import InputOptions

STRETCH_SAMPLE_SIDE = 1024
"""Longest side of the decimated read a percentile stretch is computed from."""


@dataclass(frozen=True)
class PreparedInput:
    """What the blocks of a scene read, and how they are scaled."""

    grid: RasterGrid
    input: InputOptions
    normalization: Normalization


def prepare_input(scene: str, contract: ModelContract, options: InputOptions) -> PreparedInput:
    """Choose bands, check bands, dtype and pixel size, and resolve the scaling of one scene."""
    with open_dataset(scene) as ds:
        bands = choose_bands(scene, band_layout(ds), contract.bands, options.bands)
        chosen = replace(options, bands=bands)
        with SceneReader(ds, chosen) as reader:
            reader.warn_about_alpha()
            grid = reader.grid
            check_input(contract, scene, grid.count, grid.dtype, grid.gsd)
            return PreparedInput(grid, chosen, scene_normalization(reader, contract))


def choose_bands(
    source: str, layout: BandLayout, needed: int, explicit: tuple[int, ...] | None
) -> tuple[int, ...]:
    """The bands to read for a model that needs ``needed`` of them.

    Examples
    --------
    >>> rgbn = BandLayout(4, alpha=(4,), alpha_data=(4,))
    >>> choose_bands("a.tif", rgbn, 3, None)
    (1, 2, 3)
    >>> choose_bands("a.tif", rgbn, 4, None)
    (1, 2, 3, 4)
    >>> choose_bands("a.tif", BandLayout(3), 4, None)
    Traceback (most recent call last):
    ...
    geoseg.errors.ContractMismatchError: a.tif: has 3 band(s) but the model expects 4; use an image with 4 bands (bands picks them from a larger file) or a model made for 3
    """
    if explicit:
        chosen = tuple(explicit)
    elif layout.alpha_data and needed == layout.count:
        chosen = tuple(range(1, layout.count + 1))  # the SceneReader warns, once
    else:
        chosen = tuple(layout.default_bands(alpha_as_data=False))
    if len(chosen) != needed:
        raise band_count_error(source, layout, len(chosen), needed, explicit is not None)
    return chosen


def band_count_error(
    source: str, layout: BandLayout, selected: int, needed: int, explicit: bool
) -> ContractMismatchError:
    """The band mismatch, counted as the file has them, with the fix that applies."""
    example = ",".join(map(str, range(1, needed + 1)))
    flags = f" ({layout.describe()})" if layout.alpha else ""
    if explicit:
        problem = f"`bands` selects {selected} band(s) but the model expects {needed}"
    elif layout.count > selected:
        problem = (
            f"has {layout.count} band(s){flags}, leaving {selected} data band(s), but the model "
            f"expects {needed}"
        )
    else:
        problem = f"has {layout.count} band(s){flags} but the model expects {needed}"
    if layout.count < needed:
        fix = (
            f"use an image with {needed} bands (`bands` picks them from a larger file) or a "
            f"model made for {layout.count}"
        )
    elif layout.count == needed and layout.alpha_masks:
        fix = f"set `bands` to {example} to use band {layout.alpha_masks[0]} as data anyway"
    else:
        fix = f"set `bands` to {needed} band numbers (e.g. {example})"
    return ContractMismatchError(f"{source}: {problem}; {fix}", option="bands")


def scene_normalization(reader: SceneReader, contract: ModelContract) -> Normalization:
    """The contract's normalisation, its ``low``/``high`` computed over the scene with a stretch."""
    norm = contract.normalization
    assert norm is not None
    if contract.stretch is None:
        return norm
    pixels, valid = reader.read_decimated(STRETCH_SAMPLE_SIDE)
    values = pixels.reshape(pixels.shape[0], -1)[:, valid.ravel()].astype(np.float64)
    if values.shape[1] == 0:  # an all-nodata scene: nothing is computed anyway
        return norm
    low, high = np.percentile(values, contract.stretch, axis=1)
    high = np.where(high > low, high, low + 1.0)
    return replace(norm, low=tuple(map(float, low)), high=tuple(map(float, high)))
