"""Peak memory of ``predict`` on a 2048² and a 4096² synthetic scene: it must not grow with the scene.

Each size runs in a fresh Python process that writes the scene (in strips), segments it into a
class COG and vectorizes it, and reports its own peak RSS (``ru_maxrss``). A scene 4x larger
should need about the same memory (ratio near 1.0; a scene-sized buffer would give ~4).

By default the predictor is a tiny model file (U-Net / resnet18, 3 classes, random weights) run
through :func:`geoseg.predict_scene`; ``--fake`` uses a per-pixel NumPy predictor instead (the
engine alone, fast on a small CPU). Not a timed test: it prints figures.

    python benchmarks/check_memory_bound.py [--sizes 2048 4096] [--fake]
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _same(predictor: object) -> object:
    return predictor


def run_fake(scene: Path, out: Path) -> None:
    """Segment with a per-pixel predictor, then vectorize: the engine's own memory."""
    from geoseg.engine.block import SceneJob
    from geoseg.engine.scene import OutputPaths, segment_scene
    from geoseg.io.class_raster import Legend
    from geoseg.models.contract import Normalization, default_colors
    from geoseg.testing import PixelwisePredictor
    from geoseg.vector.vectorize import vectorize_raster

    scaling = Normalization((0.0,) * 3, (255.0,) * 3, (0.5,) * 3, (0.25,) * 3)
    predictor = functools.partial(_same, PixelwisePredictor(3, 3))
    job = SceneJob(str(scene), predictor, scaling, 256, 32, 8)
    paths = OutputPaths(classes=out / "classes.tif")
    segment_scene(job, paths, Legend(["bg", "a", "b"], default_colors(3)))
    vectorize_raster(paths.classes, out / "classes.gpkg")


def run_model(scene: Path, out: Path) -> None:
    """``predict_scene`` with a tiny random U-Net, as ``geoseg predict`` runs it."""
    from geoseg import predict_scene
    from geoseg.options import InferenceOptions, PredictOptions
    from geoseg.testing import create_test_model

    model = create_test_model(out / "m.safetensors", "unet", "resnet18", 3, ["bg", "a", "b"],
                              tile_size=256, gsd=0.5)  # fmt: skip
    options = PredictOptions(inference=InferenceOptions(device="cpu"))
    predict_scene(scene, model, out / "pred", options)


def child(size: int, fake: bool) -> None:
    """Write one scene, predict it, print ``{"size", "peak_mib", "seconds"}`` as JSON."""
    from geoseg.synthetic.scenes import write_large_scene

    with tempfile.TemporaryDirectory() as tmp:
        scene = Path(tmp) / "scene.tif"
        write_large_scene(scene, size, seed=1)
        before = peak_rss_mib()
        started = time.perf_counter()
        (run_fake if fake else run_model)(scene, Path(tmp))
        seconds = time.perf_counter() - started
    print(json.dumps({"size": size, "peak_mib": peak_rss_mib(), "after_writing_mib": before,
                      "seconds": round(seconds, 1)}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--fake", action="store_true", help="per-pixel NumPy predictor")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.fake)
        return
    results = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--child", str(size), *(["--fake"] if args.fake else [])]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        last = results[-1]
        print(f"{size}^2 px: peak RSS {last['peak_mib']:.0f} MiB ({last['seconds']} s; "
              f"{last['after_writing_mib']:.0f} MiB after writing the scene)")  # fmt: skip
    ratio = results[-1]["peak_mib"] / results[0]["peak_mib"]
    pixels = (args.sizes[-1] / args.sizes[0]) ** 2
    print(f"peak RSS ratio {args.sizes[-1]}^2 / {args.sizes[0]}^2: {ratio:.2f} "
          f"(scene {pixels:.0f}x larger)")  # fmt: skip


if __name__ == "__main__":
    main()
