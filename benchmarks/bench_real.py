"""Benchmark training on REAL aerial imagery with real labels: NEON RGB and tree-crown boxes.

Data: the NEON airborne RGB crop ``2019_YELL_2_541000_4977000_image_crop.png`` (1035 x 1249 px,
0.1 m, Yellowstone) and its 279 hand-drawn tree-crown boxes (Pascal VOC XML), shipped inside the
DeepForest wheel (``deepforest/data``; package MIT, NEON data CC0 1.0). Fetched at benchmark time
with ``pip download --no-deps deepforest==2.1.0`` and unpacked into ``benchmarks/_data/real/``
(ignored); geoseg itself downloads nothing. The PNG has no georeference: it is placed on a UTM
12N grid at 0.1 m with its corner at the tile's name (541000 E, 4977000 N) -- only consistency
between image and labels matters here.

Task: the boxes, rasterized, are the class ``tree`` (a crown's box also covers some ground between
crowns, so even a perfect crown mask scores below 1). The labels are an OSM-style layer (field
``tree``, value ``yes``). The left two thirds of the image train (``geoseg train`` defaults with
``--tile``/``--batch-size``; its own validation strip inside), the right third is predicted with
``predict_scene`` and scored (IoU of ``tree``, by class id). Per-pixel baselines on the same
pixels, with colour and local mean / standard deviation (5 and 21 px) as features: a Gaussian
quadratic discriminant, and a random forest (scikit-learn, a ``dev`` extra; never a dependency of
geoseg itself).

Usage::

    python benchmarks/bench_real.py --tile 128 --batch-size 8      # one markdown row (~20-25 min
                                                                   # on one CPU thread: 1200 steps)
    python benchmarks/bench_real.py --name ce --set loss=ce        # an ablation: one option changed
    python benchmarks/bench_real.py --baseline                     # the per-pixel baseline rows
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "_data" / "real"
WHEEL = "deepforest==2.1.0"
STEM = "2019_YELL_2_541000_4977000_image_crop"
CRS = "EPSG:32612"
ORIGIN = (541000.0, 4977000.0 + 1035 * 0.1)
GSD = 0.1
TRAIN_SHARE = 2 / 3


def fetch() -> Path:
    """The PNG and XML (and the package's licence), unpacked from the DeepForest wheel once."""
    target = DATA / f"{STEM}.png"
    if target.exists():
        return DATA
    DATA.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(DATA)]
    subprocess.run(cmd, check=True, capture_output=True)
    wheel = next(DATA.glob("deepforest-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        for name in zf.namelist():
            if name.endswith((f"{STEM}.png", f"{STEM}.xml")) or "/licenses/" in name:
                (DATA / Path(name).name).write_bytes(zf.read(name))
    wheel.unlink()
    return DATA


def boxes(xml: Path) -> np.ndarray:
    """Tree boxes ``(N, 4)``: xmin, ymin, xmax, ymax in pixels."""
    root = ET.parse(xml).getroot()
    return np.array(
        [[float(o.findtext(f"bndbox/{k}") or 0) for k in ("xmin", "ymin", "xmax", "ymax")]
         for o in root.iter("object")]
    )  # fmt: skip


def prepare(folder: Path) -> dict[str, Path]:
    """Train/test GeoTIFFs, the labels layer (``tree=yes``) and the test truth raster."""
    import geopandas as gpd
    import rasterio
    from rasterio.features import rasterize
    from rasterio.transform import from_origin
    from shapely.geometry import box

    from geoseg.io.raster import write_raster

    paths = {k: folder / f"{k}" for k in ("train.tif", "test.tif", "labels.gpkg", "truth.tif")}
    if all(p.exists() for p in paths.values()):
        return paths
    with rasterio.open(folder / f"{STEM}.png") as ds:
        image = ds.read()
    t = from_origin(*ORIGIN, GSD, GSD)
    b = boxes(folder / f"{STEM}.xml")
    geoms = [box(*(t * (x0, y1)), *(t * (x1, y0))) for x0, y0, x1, y1 in b]
    gpd.GeoDataFrame({"tree": ["yes"] * len(geoms)}, geometry=geoms, crs=CRS).to_file(
        paths["labels.gpkg"]
    )
    cut = round(image.shape[2] * TRAIN_SHARE)
    write_raster(paths["train.tif"], image[:, :, :cut], CRS, t)
    test_t = t * t.translation(cut, 0)
    write_raster(paths["test.tif"], image[:, :, cut:], CRS, test_t)
    truth = rasterize([(g, 1) for g in geoms], out_shape=image.shape[1:], transform=t,
                      dtype="uint8")[:, cut:]  # fmt: skip
    write_raster(paths["truth.tif"], truth, CRS, test_t, nodata=255,
                 tags={"CLASS_NAMES": json.dumps(["background", "tree"])})  # fmt: skip
    return paths


def local_features(image: np.ndarray) -> np.ndarray:
    """Per-pixel features ``(F, H, W)``: bands, local mean and std over 5 and 21 px."""
    x = image.astype(np.float64) / 255.0
    feats = [x]
    for size in (5, 21):
        mean = box_mean(x, size)
        feats += [mean, np.sqrt(np.maximum(box_mean(x * x, size) - mean * mean, 0))]
    return np.concatenate(feats)


def box_mean(x: np.ndarray, size: int) -> np.ndarray:
    """Mean over a ``size`` x ``size`` window (edge-padded), via summed-area tables."""
    r = size // 2
    p = np.pad(x, ((0, 0), (r + 1, r), (r + 1, r)), mode="edge").cumsum(1).cumsum(2)
    h, w = x.shape[1:]
    s = p[:, size:, size:] - p[:, :h, size:] - p[:, size:, :w] + p[:, :h, :w]
    return s / (size * size)


def pixel_features(paths: dict[str, Path]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Per-pixel features of the training and test images ``(pixels, F)``, and the test shape."""
    import rasterio

    with rasterio.open(paths["train.tif"]) as a, rasterio.open(paths["test.tif"]) as b:
        train, test = local_features(a.read()), local_features(b.read())
    flat = [f.reshape(f.shape[0], -1).T for f in (train, test)]
    return flat[0], flat[1], test.shape[1:]


def qda_baseline(paths: dict[str, Path], truth_train: np.ndarray) -> np.ndarray:
    """Per-pixel Gaussian QDA trained on the training image, predicting the test image."""
    x, test, shape = pixel_features(paths)
    y = truth_train.ravel()
    scores = []
    for k in (0, 1):
        xk = x[y == k]
        mean, cov = xk.mean(0), np.cov(xk.T) + 1e-6 * np.eye(x.shape[1])
        inv, (_, logdet) = np.linalg.inv(cov), np.linalg.slogdet(cov)
        d = test - mean
        scores.append(-0.5 * np.einsum("ij,jk,ik->i", d, inv, d) - 0.5 * logdet + np.log(len(xk)))
    return np.argmax(scores, axis=0).reshape(shape).astype(np.uint8)


def forest_baseline(
    paths: dict[str, Path], truth_train: np.ndarray, trees: int = 150, samples: int = 100_000
) -> np.ndarray:
    """Per-pixel random forest (scikit-learn, a dev dependency only) on the same features as the
    QDA, fitted on ``samples`` random training pixels (fixed seed, one core)."""
    from sklearn.ensemble import RandomForestClassifier

    x, test, shape = pixel_features(paths)
    y = truth_train.ravel()
    pick = np.random.default_rng(0).choice(len(y), min(samples, len(y)), replace=False)
    forest = RandomForestClassifier(n_estimators=trees, n_jobs=1, random_state=0)
    forest.fit(x[pick].astype(np.float32), y[pick])
    out = np.concatenate(
        [forest.predict(part.astype(np.float32)) for part in np.array_split(test, 8)]
    )
    return out.reshape(shape).astype(np.uint8)


def train_truth(paths: dict[str, Path]) -> np.ndarray:
    """The labels rasterized on the training image."""
    import geopandas as gpd
    import rasterio
    from rasterio.features import rasterize

    frame = gpd.read_file(paths["labels.gpkg"])
    with rasterio.open(paths["train.tif"]) as ds:
        shapes = [(g, 1) for g in frame.geometry]
        return rasterize(shapes, out_shape=ds.shape, transform=ds.transform, dtype="uint8")


def run_geoseg(paths: dict[str, Path], args: argparse.Namespace) -> tuple[str, float, float]:
    """Train with geoseg's defaults (tile and batch given), predict the test third, score it."""
    import rasterio

    from geoseg.engine.scene import predict_scene
    from geoseg.options import (
        InferenceOptions,
        LabelOptions,
        OutputOptions,
        PredictOptions,
        TrainOptions,
    )
    from geoseg.training.train import TrainProgress, train_model

    out = DATA / f"model_{args.name}.safetensors"
    extra = {"encoder_weights": args.encoder_weights} if args.encoder_weights else {}
    extra.update(parse_settings(args.set))
    options = TrainOptions(tile=args.tile, batch_size=args.batch_size, device="cpu", **extra)
    seen = {"steps": 0}

    def progress(p: TrainProgress) -> None:
        seen["steps"] = p.steps

    tic = time.perf_counter()
    result = train_model([paths["train.tif"]], paths["labels.gpkg"], out, options, overwrite=True,
                         label_options=LabelOptions(class_field="tree"), progress=progress)  # fmt: skip
    seconds = time.perf_counter() - tic
    pred = predict_scene(paths["test.tif"], out, DATA / f"pred_{args.name}", PredictOptions(
        inference=InferenceOptions(device="cpu"), output=OutputOptions(vector_formats=()),
        overwrite=True))  # fmt: skip
    with rasterio.open(pred.segment.classes_path) as ds:
        iou = tree_iou(ds.read(1), paths)
    log = DATA / f"history_{args.name}.json"
    log.write_text(json.dumps([dataclasses.asdict(r) for r in result.history], indent=1))
    steps = f"{len(result.history)} ep x {seen['steps']} steps, best {result.best_epoch}"
    names = ",".join(result.contract.classes)
    return f"{result.contract.encoder}, {steps}, classes {names}", iou, seconds


def parse_settings(items: list[str]) -> dict[str, object]:
    """``["loss=ce", "patience=0"]`` -> TrainOptions fields, typed by the field's annotation."""
    from geoseg.options import TrainOptions

    types = {f.name: str(f.type) for f in dataclasses.fields(TrainOptions)}
    settings: dict[str, object] = {}
    for item in items:
        key, _, text = item.partition("=")
        if key not in types:
            raise SystemExit(f"--set {item}: no TrainOptions field {key!r}")
        kind = types[key]
        if text.lower() == "none":
            settings[key] = None
        elif kind.startswith("bool"):
            settings[key] = text.lower() in ("1", "true", "yes")
        elif kind.startswith("float"):
            settings[key] = float(text)
        elif kind.startswith("int"):
            settings[key] = int(text)
        else:
            settings[key] = text
    return settings


def tree_iou(pred: np.ndarray, paths: dict[str, Path]) -> float:
    """IoU of class id 1 against the truth, by id (geoseg before issue 13 named the class ``yes``,
    which ``evaluate`` rightly does not match with ``tree``)."""
    import rasterio

    with rasterio.open(paths["truth.tif"]) as ds:
        truth = ds.read(1) == 1
    return float((truth & (pred == 1)).sum() / max((truth | (pred == 1)).sum(), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--name", default="current")
    parser.add_argument("--encoder-weights", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a TrainOptions field for an ablation, e.g. loss=ce (repeatable)")  # fmt: skip
    parser.add_argument("--baseline", action="store_true", help="only the per-pixel baselines")
    parser.add_argument("--trees", type=int, default=150, help="random forest size")
    parser.add_argument("--samples", type=int, default=100_000, help="random forest pixels")
    args = parser.parse_args()
    paths = prepare(fetch())
    load = os.getloadavg()[0]
    if args.baseline:
        truth = train_truth(paths)
        baselines = {
            "per-pixel QDA (colour + local mean/std)": lambda: qda_baseline(paths, truth),
            f"per-pixel random forest ({args.trees} trees, {args.samples} training pixels, "
            "same features)": lambda: forest_baseline(paths, truth, args.trees, args.samples),
        }
        for what, predict in baselines.items():
            load, tic = os.getloadavg()[0], time.perf_counter()
            iou = tree_iou(predict(), paths)
            row(what, iou, time.perf_counter() - tic, load)
        return
    what, iou, seconds = run_geoseg(paths, args)
    row(f"{' '.join(args.set) or 'defaults'}: {what}", iou, seconds, load)


def row(what: str, iou: float, seconds: float, load: float) -> None:
    """One markdown row: what ran, tree IoU, seconds, 1-min load at its start and end."""
    end = os.getloadavg()[0]
    print(f"| {what} | {iou:.3f} | {seconds:.0f} s | {load:.1f}-{end:.1f} |", flush=True)


if __name__ == "__main__":
    main()
