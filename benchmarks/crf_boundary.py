"""Boundary F1 (the BF score) and a synthetic demonstration of CRF refinement.

:func:`boundary_f1` is the boundary F1 score of Csurka, Larlus & Perronnin 2013 ("What is a good
evaluation measure for semantic segmentation?", BMVC): the boundary pixels of the prediction and
of the truth are matched within a distance tolerance; precision is the share of predicted
boundary pixels within ``tolerance_px`` of a true one, recall the share of true boundary pixels
within ``tolerance_px`` of a predicted one, and the score their harmonic mean. It is computed over
the label maps' boundaries as a whole (not per class) with numpy only.

Usage: ``python benchmarks/crf_boundary.py`` prints pixel accuracy and boundary F1 before and
after :func:`geoseg.models.crf.crf_refine` on a synthetic scene whose class probabilities are
blurred, misregistered by a few pixels and sprinkled with wrong labels.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from geoseg.training.metrics import boundary_f1


def synthetic_scene(
    size: int = 256, classes: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A scene of rectangles: ``(truth (H, W), image (3, H, W), probs (K, H, W))``.

    The image is one colour per class plus noise, normalised (about zero mean, unit spread). The
    probabilities imitate a network's: the one-hot truth shifted by 3 pixels, blurred (box of 9
    px), mixed with noise, and 5% of pixels given a confident wrong label.
    """
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), dtype=np.int64)
    for _ in range(12):
        y0, x0 = rng.integers(0, size - 16, size=2)
        h, w = rng.integers(16, size // 2, size=2)
        truth[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, classes)
    colours = rng.normal(size=(classes, 3))
    image = colours[truth].transpose(2, 0, 1) + rng.normal(scale=0.1, size=(3, size, size))

    onehot = np.eye(classes)[truth].transpose(2, 0, 1)
    onehot = np.roll(onehot, shift=(3, 3), axis=(1, 2))
    kernel = np.ones(9) / 9
    for axis in (1, 2):
        onehot = np.apply_along_axis(lambda v: np.convolve(v, kernel, mode="same"), axis, onehot)
    logits = 4.0 * onehot + rng.normal(scale=0.5, size=onehot.shape)
    flip = rng.random((size, size)) < 0.05
    wrong = (truth + rng.integers(1, classes, size=truth.shape)) % classes
    logits[:, flip] = 0.0
    logits[wrong[flip], np.flatnonzero(flip) // size, np.flatnonzero(flip) % size] = 4.0
    probs = np.exp(logits - logits.max(0))
    probs /= probs.sum(0)
    return truth, image.astype(np.float32), probs.astype(np.float32)


PARAMETER_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "appearance-heavy": {"smoothness_weight": 1.0, "appearance_weight": 10.0},
}
"""CRF parameters the demonstration compares (overrides of :class:`CrfParams`' defaults)."""


def main() -> None:
    from geoseg.models.crf import crf_refine
    from geoseg.options import CrfParams

    truth, image, probs = synthetic_scene()
    print(f"synthetic scene {probs.shape} (K, H, W); 3-px misregistration, blur, 5% wrong labels")
    print("| probabilities | CRF time | pixel accuracy | boundary F1 (2 px) | boundary F1 (1 px) |")
    print("|---|---|---|---|---|")
    rows = [("network-like input", probs, 0.0)]
    for name, overrides in PARAMETER_SETS.items():
        start = time.perf_counter()
        refined = crf_refine(probs, image, CrfParams(**overrides))
        rows.append((f"CRF, {name} {overrides or ''}", refined, time.perf_counter() - start))
    for name, p, seconds in rows:
        pred = p.argmax(0)
        acc = float((pred == truth).mean())
        bf2, bf1 = boundary_f1(pred, truth, 2), boundary_f1(pred, truth, 1)
        print(f"| {name} | {seconds:.2f} s | {acc:.4f} | {bf2:.4f} | {bf1:.4f} |")


if __name__ == "__main__":
    main()
