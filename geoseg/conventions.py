"""Values every part of geoseg agrees on (no imports, no behaviour)."""

NODATA_CLASS = 255
"""Class value written where the input is nodata (and label value of pixels that do not count)."""

TILE_MULTIPLE = 32
"""Tile sizes must be a multiple of this (the deepest encoder stride of SMP models)."""

LOGGER_NAME = "geoseg"
"""Every module logs through ``logging.getLogger("geoseg")`` (or a child of it)."""
