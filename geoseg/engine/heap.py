"""Keep a long run's memory flat: large buffers go straight back to the system when freed.

glibc's ``malloc`` serves buffers below a *dynamic* threshold (which rises up to 32 MB as large
buffers are freed) from its heap. A scene run allocates many such buffers per block (inputs,
probabilities, the sums of shared bands that wait for a neighbouring block) and frees them in
another order, so the heap fragments and its size creeps up with the scene's size: measured here,
a 16384^2 run peaked 1.5x higher than a 4096^2 one with identical blocks, and 1.14x with the
threshold fixed at 1 MB. :func:`release_large_buffers` fixes it there (``mallopt``), once per
process; elsewhere (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter: the size from which ``malloc`` maps memory instead of using the heap."""
LARGE_BUFFER = 1 << 20
"""Buffers of 1 MB and more are mapped (and unmapped when freed)."""


@functools.cache
def release_large_buffers() -> bool:
    """Make glibc map buffers of :data:`LARGE_BUFFER` bytes and more; True if it took effect."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER))
