"""Benchmark training: time per step and per epoch, and mIoU on a held-out synthetic scene.

Writes ``--scenes`` synthetic scenes (``geoseg.synthetic.scenes``) into ``benchmarks/_data/train/`` (reused)
and trains on all but the last with their GeoPackage labels (``--val-fraction`` of those held out
for validation and model selection: whole scenes when that rounds to one or more). The last scene,
never seen in training or selection, is then predicted with ``predict_scene`` and scored with
``evaluate`` (blended tiles, as a user would). Prints one line per epoch and a markdown summary.

Usage::

    python benchmarks/bench_train.py                        # 4 scenes of 1024 px, defaults
    python benchmarks/bench_train.py --epochs 12 --steps 12 --tile 256 --batch-size 8
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DATA = Path(__file__).parent / "_data" / "train"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None, help="steps per epoch (default: auto)")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--loss", default="ce+dice")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()

    import torch

    from geoseg.engine.scene import predict_scene
    from geoseg.options import (
        InferenceOptions,
        OutputOptions,
        PredictOptions,
        TilingOptions,
        TrainOptions,
    )
    from geoseg.synthetic.scenes import write_scenes
    from geoseg.training.evaluate import evaluate
    from geoseg.training.train import TrainProgress, train_model

    if args.threads:
        torch.set_num_threads(args.threads)
    files = write_scenes(DATA / f"{args.size}", args.scenes, args.size, seed=0)
    out = DATA / "model.safetensors"
    started = time.perf_counter()
    step_times: list[float] = []
    last = [started]

    def progress(p: TrainProgress) -> None:
        now = time.perf_counter()
        if p.phase == "train":
            step_times.append(now - last[0])
        else:
            miou = float("nan") if p.miou is None else p.miou
            print(f"{now - started:7.1f} s  epoch {p.epoch:3d}  loss {p.loss:.3f}  "
                  f"val mIoU {miou:.3f}", flush=True)  # fmt: skip
        last[0] = now

    train = files[:-1]
    recipe = TrainOptions(
        tile=args.tile, epochs=args.epochs, steps_per_epoch=args.steps,
        batch_size=args.batch_size, lr=args.lr, loss=args.loss, arch=args.arch,
        encoder=args.encoder, device="cpu", val_fraction=args.val_fraction,
    )  # fmt: skip
    result = train_model(
        [f.image for f in train],
        [f.labels for f in train],
        out,
        recipe,
        overwrite=True,
        progress=progress,
    )
    held_out = files[-1]
    tic = time.perf_counter()
    options = PredictOptions(
        tiling=TilingOptions(overlap=64, batch_size=8),
        inference=InferenceOptions(device="cpu"),
        output=OutputOptions(vector_formats=()),
        overwrite=True,
    )
    pred = predict_scene(held_out.image, out, DATA / "pred", options)
    predict_s = time.perf_counter() - tic
    report = evaluate(pred.segment.classes_path, held_out.classes)
    steps = sorted(step_times[1:]) or [float("nan")]
    epochs = [r.seconds for r in result.history]
    print()
    print("| setting | value |\n|---|---|")
    print(f"| machine | {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.1f} |")  # fmt: skip
    print(f"| data | {args.scenes - 1} scenes of {args.size} px (val {args.val_fraction}) "
          "+ 1 test scene |")  # fmt: skip
    per_epoch = len(step_times) // max(len(epochs), 1)
    print(f"| model | {args.arch}/{args.encoder}, tile {args.tile}, batch {args.batch_size}, "
          f"{len(epochs)} epochs x {per_epoch} steps |")  # fmt: skip
    print(f"| median step | {steps[len(steps) // 2]:.2f} s |")
    print(f"| mean epoch (incl. validation) | {sum(epochs) / max(len(epochs), 1):.1f} s |")
    print(f"| training total | {result.seconds:.0f} s |")
    print(f"| best val mIoU (epoch {result.best_epoch}) | {result.best_miou:.3f} |")
    print(f"| predict_scene test scene | {predict_s:.1f} s, mIoU {report.miou:.3f} |")
    for row in report.table_rows()[:-2]:
        print(f"| IoU {row[0]} | {row[1]} |")


if __name__ == "__main__":
    main()
