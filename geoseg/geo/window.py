"""Windows and the one tiler: pure pixel rectangles, no file, no CRS.

Coordinates are pixel rows and columns of a scene; a window may reach outside it (negative
offsets, or past the last row), which is how padded margins and halos are described. Like
rasterio's ``windows`` module: a frozen value object and small pure functions.

Examples
--------
>>> scene = Window(0, 0, 5, 7)
>>> [w.width for w in cover(scene, 3)]
[3, 3, 1, 3, 3, 1]
>>> Window(1, 1, 2, 2).buffer(2).clip(scene)
Window(row=0, col=0, height=5, width=5)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    """A rectangle of pixels: offsets may be negative or reach past the scene.

    Examples
    --------
    >>> Window(0, 0, 10, 10).intersection(Window(5, -3, 10, 10))
    Window(row=5, col=0, height=5, width=7)
    """

    row: int
    col: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        """One past the last row."""
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        """One past the last column."""
        return self.col + self.width

    @property
    def size(self) -> int:
        """Number of pixels."""
        return self.height * self.width

    def slices(self) -> tuple[slice, slice]:
        """Row and column slices, for indexing an array that starts at (0, 0)."""
        return slice(self.row, self.row_stop), slice(self.col, self.col_stop)

    def intersection(self, other: Window) -> Window | None:
        """The overlap of two windows, or None when they do not overlap."""
        row, col = max(self.row, other.row), max(self.col, other.col)
        row_stop = min(self.row_stop, other.row_stop)
        col_stop = min(self.col_stop, other.col_stop)
        if row_stop <= row or col_stop <= col:
            return None
        return Window(row, col, row_stop - row, col_stop - col)

    def clip(self, bounds: Window) -> Window:
        """The part of this window inside ``bounds`` (which it must overlap).

        Examples
        --------
        >>> Window(-2, 3, 4, 4).clip(Window(0, 0, 5, 5))
        Window(row=0, col=3, height=2, width=2)
        """
        inside = self.intersection(bounds)
        if inside is None:
            raise ValueError(f"{self} lies outside {bounds}")
        return inside

    def buffer(self, pixels: int) -> Window:
        """This window grown by ``pixels`` on every side (a halo).

        Examples
        --------
        >>> Window(4, 4, 2, 2).buffer(1)
        Window(row=3, col=3, height=4, width=4)
        """
        return Window(
            self.row - pixels, self.col - pixels, self.height + 2 * pixels, self.width + 2 * pixels
        )

    def relative_to(self, origin: Window) -> Window:
        """This window in the coordinates of an array whose pixel (0, 0) is ``origin``'s corner."""
        return Window(self.row - origin.row, self.col - origin.col, self.height, self.width)


def cover(area: Window, size: int | tuple[int, int]) -> list[Window]:
    """Non-overlapping windows of ``size`` pixels covering ``area``, row by row.

    ``size`` is a side or ``(height, width)``; windows at the bottom and right edges are
    smaller. This is geoseg's one tiler: blocks, strips, survey and validation windows.

    Examples
    --------
    >>> cover(Window(10, 0, 4, 6), (3, 6))
    [Window(row=10, col=0, height=3, width=6), Window(row=13, col=0, height=1, width=6)]
    """
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ValueError(f"window size must be positive, got {size}")
    return [
        Window(r, c, min(height, area.row_stop - r), min(width, area.col_stop - c))
        for r in range(area.row, area.row_stop, height)
        for c in range(area.col, area.col_stop, width)
    ]


def rows_of(windows: list[Window]) -> list[list[Window]]:
    """Group :func:`cover`'s windows into rows (same ``row``), keeping their order.

    Examples
    --------
    >>> [len(r) for r in rows_of(cover(Window(0, 0, 5, 7), 3))]
    [3, 3]
    """
    rows: list[list[Window]] = []
    for window in windows:
        if rows and rows[-1][0].row == window.row:
            rows[-1].append(window)
        else:
            rows.append([window])
    return rows
