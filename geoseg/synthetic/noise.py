"""Smooth value noise hashed from global pixel positions (pure NumPy).

Every value is a function of the *global* lattice position, never of the order numbers are drawn
in, so any window of a scene gets the same values: a scene rendered in strips equals the whole.

Examples
--------
>>> a = value_noise(np.arange(8.0), np.arange(8.0), (4.0, 4.0), salt=1)
>>> b = value_noise(np.arange(4.0, 8.0), np.arange(8.0), (4.0, 4.0), salt=1)
>>> bool(np.allclose(a[4:], b))
True
"""

from __future__ import annotations

import numpy as np


def lattice_hash(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """A uint32 hash of integer lattice coordinates (broadcast)."""
    h = (np.asarray(ix, np.int64) & 0xFFFFFFFF).astype(np.uint32) * np.uint32(0x8DA6B343)
    h = h ^ (np.asarray(iy, np.int64) & 0xFFFFFFFF).astype(np.uint32) * np.uint32(0xD8163841)
    h ^= np.uint32(salt & 0xFFFFFFFF)
    for shift, mult in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        h ^= h >> np.uint32(shift)
        h *= np.uint32(mult)
    return h ^ (h >> np.uint32(16))


def _axis(coords: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Lattice index and smoothstep weight of each coordinate."""
    f = coords / cell
    i = np.floor(f).astype(np.int64)
    t = f - i
    return i, (t * t * (3 - 2 * t)).astype(np.float32)


def value_noise(
    rows: np.ndarray, cols: np.ndarray, cell: tuple[float, float], salt: int
) -> np.ndarray:
    """Smooth noise in [0, 1) on a lattice of ``cell`` (rows, cols) pixels: ``(rows, cols)``.

    Lattice values hash global lattice indices, so any window gives the same values.
    """
    iy, ty = _axis(rows, cell[0])
    ix, tx = _axis(cols, cell[1])
    ly, lx = np.arange(iy[0], iy[-1] + 2), np.arange(ix[0], ix[-1] + 2)
    lattice = (lattice_hash(lx[None, :], ly[:, None], salt) >> np.uint32(8)).astype(
        np.float32
    ) / 2**24
    jx, jy = ix - lx[0], iy - ly[0]
    along_x = lattice[:, jx] * (1 - tx) + lattice[:, jx + 1] * tx
    return along_x[jy] * (1 - ty)[:, None] + along_x[jy + 1] * ty[:, None]


def fbm(rows: np.ndarray, cols: np.ndarray, cell: float, octaves: int, salt: int) -> np.ndarray:
    """Fractal value noise in [0, 1): octaves of halving cell size and amplitude."""
    total = np.zeros((len(rows), len(cols)), np.float32)
    for k in range(octaves):
        total += value_noise(rows, cols, (cell / 2**k, cell / 2**k), salt + k) / 2**k
    return total / (2 - 2 ** (1 - octaves))
