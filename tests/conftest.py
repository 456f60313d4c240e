"""Shared fixtures: every test generates its own tiny rasters."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.testing import write_test_scene


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


@pytest.fixture
def smooth_scene(tmp_path, rng):
    """A 3-band uint8 scene (200 x 300) of smooth blobs, so classes form regions; no nodata."""

    def make(height: int = 200, width: int = 300, nodata: float | None = None, name="scene.tif"):
        coarse = rng.integers(0, 256, size=(3, height // 16 + 2, width // 16 + 2))
        up = np.kron(coarse, np.ones((16, 16)))[:, :height, :width]
        noise = rng.integers(-20, 21, size=up.shape)
        data = np.clip(up + noise, 0, 255).astype(np.uint8)
        return write_test_scene(tmp_path / name, data, nodata=nodata), data

    return make


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """One small random U-Net model file (3 bands, 3 classes, 64-px tiles) shared by the session.

    Tests must not modify it; tests that need their own contract make their own model.
    """
    from geoseg.testing import create_test_model

    folder = tmp_path_factory.mktemp("tiny_model")
    return create_test_model(
        folder / "m.safetensors", "unet", "resnet18", 3, ["background", "a", "b"], tile_size=64
    )


collect_ignore_glob = ["data/*"]
"""Helper scripts and fixtures under tests/data (e.g. the PyQGIS probe, run by Debian's python3)
are not test modules; --doctest-modules must not import them."""
