"""Compare architectures on the same data and budget: size, training time, accuracy, speed, CRF.

Every architecture is trained with the same recipe on the same synthetic scenes (generated, no
download), then the held-out scene is predicted with and without the CRF and scored against its
ground truth: mean IoU and boundary F1 (2 px). Throughput is the scene's megapixels per second of
``predict_scene`` (class raster only) on this machine.

Usage::

    python benchmarks/bench_architectures.py [--archs unet,enet,...] [--epochs 3] [--steps 15]

Prints a Markdown table (recorded in ``benchmarks/RESULTS.md``). Run it on an idle machine:
figures taken while other jobs share the cores are slower, not less accurate.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import rasterio

from geoseg.engine.scene import predict_scene
from geoseg.models.registry import build_network
from geoseg.options import (
    InferenceOptions,
    OutputOptions,
    PredictOptions,
    TilingOptions,
    TrainOptions,
)
from geoseg.synthetic.scenes import write_scenes
from geoseg.training.evaluate import evaluate
from geoseg.training.metrics import boundary_f1
from geoseg.training.train import train_model

DATA = Path(__file__).parent / "_data" / "architectures"
ARCHS = (
    "unet", "deeplabv3plus", "pspnet", "fcn32s", "fcn16s", "fcn8s", "segnet", "frrn",
    "fcdensenet56", "fcdensenet67", "fcdensenet103", "refinenet", "gcn", "icnet", "enet",
)  # fmt: skip


def parameters(arch: str, bands: int, classes: int) -> int:
    """Trainable parameters of ``arch`` with the default encoder (resnet18)."""
    net = build_network(arch, "resnet18", bands, classes)
    return sum(p.numel() for p in net.parameters())


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def score(prediction: Path, truth: Path) -> tuple[float, float]:
    """Mean IoU and boundary F1 of a class raster against the truth raster."""
    miou = evaluate(prediction, truth).miou
    pred, true = read(prediction), read(truth)
    valid = (true != 255) & (pred != 255)
    return miou, boundary_f1(np.where(valid, pred, 0), np.where(valid, true, 0), 2, valid)


def run(arch: str, scenes: list, args: argparse.Namespace) -> str:
    """Train, predict (with and without CRF) and score one architecture: a table row."""
    model = DATA / f"{arch}.safetensors"
    recipe = TrainOptions(
        arch=arch, tile=args.tile, epochs=args.epochs, steps_per_epoch=args.steps,
        batch_size=args.batch_size, device="cpu", val_fraction=0.25,
    )  # fmt: skip
    started = time.perf_counter()
    result = train_model(
        [s.image for s in scenes[:-1]], [s.labels for s in scenes[:-1]], model, recipe,
        overwrite=True,
    )  # fmt: skip
    train_s = time.perf_counter() - started
    test = scenes[-1]
    cells = []
    for crf in (False, True):
        options = PredictOptions(
            tiling=TilingOptions(batch_size=8),
            inference=InferenceOptions(device="cpu", crf=crf),
            output=OutputOptions(vector_formats=()),
            overwrite=True,
        )
        out = DATA / f"pred_{arch}_{'crf' if crf else 'plain'}"
        pred = predict_scene(test.image, model, out, options)
        mpx = pred.segment.scene_pixels / 1e6 / pred.segment.seconds
        miou, bf = score(pred.segment.classes_path, test.classes)
        cells.append(f"{miou:.3f} | {bf:.3f} | {mpx:.2f}")
    params = parameters(arch, 3, len(result.contract.classes)) / 1e6
    return f"| {arch} | {params:.1f} M | {train_s:.0f} s | {' | '.join(cells)} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--scenes", type=int, default=3, help="the last one is held out")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    scenes = write_scenes(DATA / "scenes", args.scenes, args.size, seed=11)
    print(
        f"\n## architectures: {args.scenes - 1} training scene(s) of {args.size}^2 px, tile "
        f"{args.tile}, {args.epochs} epochs x {args.steps} steps x batch {args.batch_size}, "
        f"CPU ({platform.processor() or platform.machine()})"
    )
    print(
        "| arch | params | train | mIoU | boundary F1 | Mpx/s | mIoU +CRF | boundary F1 +CRF "
        "| Mpx/s +CRF |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for arch in args.archs.split(","):
        print(run(arch.strip(), scenes, args), flush=True)


if __name__ == "__main__":
    main()
