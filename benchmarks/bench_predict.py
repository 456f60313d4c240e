"""Benchmark the single-scene pipeline: throughput, efficiency, redundancy and peak memory.

Prints, on synthetic scenes (``geoseg.synthetic.scenes``):

* the limit: model-only throughput on the scene's pixels (redundancy 1.0: as many tiles as the
  scene's pixels fill, in batches of the same size and precision);
* end-to-end throughput of ``predict_scene`` (read, normalise, infer, blend, COG write, vectorize);
* the efficiency: pipeline / limit (so recomputed and overlapping tiles count against it);
* tiles computed vs the grid's minimum (tiles of a margin-free overlapping grid), and the
  redundancy (pixels pushed through the model / scene pixels);
* with ``--device cuda``: the same on the GPU, and peak GPU memory;
* peak RSS of a whole run on each memory size (default 4096^2 and 16384^2), each in a fresh
  process, and their ratio (target <= 1.1: memory must not grow with the scene).

Usage::

    python benchmarks/bench_predict.py                      # the full set (about 15 min on 2 cores)
    python benchmarks/bench_predict.py --sizes 1024 --memory-sizes 1024 2048   # quick look

The memory runs use ``--memory-model`` (default ``pixelwise``: a NumPy 1x1-conv predictor, so a
16384^2 run takes minutes, not an hour, on 2 CPU cores; every other stage is the real pipeline).
Pass ``--memory-model smp`` to use the SMP model there too.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "_data"


def scene(size: int) -> Path:
    """A synthetic RGB scene of ``size``^2 pixels (made once, reused)."""
    from geoseg.synthetic.scenes import write_large_scene

    path = DATA / f"scene_{size}.tif"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        write_large_scene(path, size, seed=7)
        print(f"# generated {path.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss can carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model(arch: str, encoder: str, tile: int, given: str | None = None) -> Path:
    """``given``, or a randomly initialised 5-class model (speed does not depend on the weights).

    A trained model (e.g. ``geoseg_demo/model.safetensors``) gives realistic class maps, which
    matters for the vectorize share of the pipeline.
    """
    if given:
        return Path(given)
    from geoseg.synthetic.scenes import SYNTH_CLASSES, SYNTH_COLORS
    from geoseg.testing import create_test_model

    path = DATA / f"model_{arch}_{encoder}_{tile}.safetensors"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        create_test_model(path, arch, encoder, 3, list(SYNTH_CLASSES), colors=list(SYNTH_COLORS),
                     tile_size=tile, gsd=0.5)  # fmt: skip
    return path


def model_only_seconds(model_path: Path, tiles: int, tile: int, batch: int, device: str) -> float:
    """Time the predictor alone on ``tiles`` tiles in batches of ``batch`` (random inputs)."""
    from geoseg.models.predictor import load_predictor

    predictor = load_predictor(model_path, device=device)
    x = np.random.default_rng(0).normal(size=(batch, 3, tile, tile)).astype(np.float32)
    predictor(x)  # warm-up (and cuDNN autotuning on a GPU)
    started = time.perf_counter()
    for start in range(0, tiles, batch):
        predictor(x[: min(batch, tiles - start)])  # returns host arrays: the GPU has finished
    return time.perf_counter() - started


def grid_minimum(size: int, tile: int, overlap: int) -> int:
    """Tiles of a margin-free overlapping grid over a ``size``^2 scene (the fewest needed)."""
    from geoseg.geo.tiling import TileGrid

    return TileGrid(size, size, tile, overlap, margin=0).num_tiles


def gpu_peak_mb(device: str) -> float:
    """Peak GPU memory allocated by torch so far (0 on CPU)."""
    import torch

    if not device.startswith("cuda"):
        return 0.0
    return float(torch.cuda.max_memory_allocated()) / 2**20


def throughput(size: int, args: argparse.Namespace) -> dict[str, float]:
    """Pipeline vs model-only throughput on one scene."""
    from geoseg.engine.scene import predict_scene
    from geoseg.options import InferenceOptions, OutputOptions, PredictOptions, TilingOptions

    path, model_path = scene(size), model(args.arch, args.encoder, args.model_tile, args.model)
    tiling = TilingOptions(tile=args.tile, overlap=args.overlap, batch_size=args.batch_size)
    formats = () if args.vector_format == "none" else (args.vector_format,)
    options = PredictOptions(
        tiling=tiling,
        inference=InferenceOptions(device=args.device),
        output=OutputOptions(vector_formats=formats),
        overwrite=True,
    )
    out = DATA / "out"
    started = time.perf_counter()
    result = predict_scene(path, model_path, out, options)
    pipeline = time.perf_counter() - started
    seg = result.segment
    # the limit: the tile and batch the pipeline ran, on just the scene's pixels (redundancy 1.0)
    limit_tiles = math.ceil(seg.scene_pixels / seg.tile**2)
    model_s = model_only_seconds(model_path, limit_tiles, seg.tile, seg.batch_size, args.device)
    mpx = seg.scene_pixels / 1e6
    return {
        "size": size, "tiles": seg.tiles, "minimum": grid_minimum(size, seg.tile, seg.overlap),
        "block": seg.block_size, "tile": seg.tile, "overlap": seg.overlap, "batch": seg.batch_size,
        "redundancy": seg.computed_pixels / seg.scene_pixels,
        "model_s": model_s, "pipeline_s": pipeline, "segment_s": seg.seconds,
        "vectorize_s": result.seconds.get("vectorize", 0.0),
        "limit_mpx_s": mpx / model_s, "pipeline_mpx_s": mpx / pipeline,
        "efficiency": model_s / pipeline, "features": result.vector_features,
        "rss_mb": peak_rss_mb(), "gpu_mb": gpu_peak_mb(args.device),
    }  # fmt: skip


def memory_child(size: int, args: argparse.Namespace) -> None:
    """Run one whole scene in this (fresh) process and print its peak RSS as JSON."""
    from geoseg.conventions import NODATA_CLASS  # noqa: F401  (import cost counted like a real run)
    from geoseg.engine.block import ModelSpec, SceneJob
    from geoseg.engine.scene import OutputPaths, segment_scene
    from geoseg.io.class_raster import Legend
    from geoseg.models.contract import default_colors
    from geoseg.synthetic.scenes import SYNTH_CLASSES
    from geoseg.testing import PixelwisePredictor
    from geoseg.vector.vectorize import vectorize_raster

    path = scene(size)
    if args.memory_model == "smp":
        from geoseg.models.modelfile import file_sha256, read_contract

        model_path = model(args.arch, args.encoder, args.model_tile, args.model)
        predictor = ModelSpec(str(model_path), file_sha256(model_path), "cpu")
        normalization = read_contract(model_path).normalization
    else:
        predictor = functools.partial(PixelwisePredictor, 3, len(SYNTH_CLASSES))  # type: ignore[assignment]
        normalization = None
    from geoseg.geo.tiling import auto_tile

    overlap, batch = args.overlap or args.model_tile // 8, args.batch_size
    tile = args.tile
    if tile is None:  # as predict picks it
        tile, batch = auto_tile(size, size, args.model_tile, overlap, args.batch_size)
    job = SceneJob(str(path), predictor, normalization, tile, overlap, batch)
    out = DATA / "mem"
    paths = OutputPaths(classes=out / f"mem_{size}_classes.tif")
    started = time.perf_counter()
    legend = Legend(SYNTH_CLASSES, default_colors(len(SYNTH_CLASSES)))
    seg = segment_scene(job, paths, legend, block_size=args.block_size, overwrite=True)
    features, vectorize_s = 0, 0.0
    if args.memory_vectorize:
        vec = vectorize_raster(paths.classes, out / f"mem_{size}.gpkg", overwrite=True)
        features, vectorize_s = vec.features, vec.seconds
    print(json.dumps({
        "size": size, "peak_rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - started,
        "segment_s": seg.seconds, "vectorize_s": vectorize_s, "features": features,
    }))  # fmt: skip


def memory(size: int, args: argparse.Namespace) -> dict[str, float]:
    """Peak RSS of a whole run in a fresh process."""
    scene(size)  # generate outside the measured process
    cmd = [sys.executable, __file__, "--child-memory", str(size), "--memory-model",
           args.memory_model, "--model-tile", str(args.model_tile),
           "--batch-size", str(args.batch_size), "--arch", args.arch, "--encoder", args.encoder]  # fmt: skip
    cmd += ["--model", args.model] if args.model else []
    cmd += ["--tile", str(args.tile)] if args.tile else []
    cmd += ["--overlap", str(args.overlap)] if args.overlap else []
    cmd += ["--block-size", str(args.block_size)] if args.block_size else []
    cmd += ["--memory-vectorize"] if args.memory_vectorize else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def machine() -> str:
    """One line describing this machine."""
    import os

    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"python {platform.python_version()}, torch {torch.__version__}, "
            f"threads {torch.get_num_threads()}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[2048, 4096])
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[4096, 16384])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--vector-format", default="gpkg", help="polygon layer format, or none")
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--model-tile", type=int, default=512, help="the model's tile size")
    parser.add_argument("--tile", type=int, default=None, help="default: predict's (per scene)")
    parser.add_argument("--overlap", type=int, default=None, help="default: model tile / 8")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="block size of the memory runs (default: predict's, from the 512 MB memory budget; "
        "the same for every scene size)",
    )
    parser.add_argument("--memory-model", choices=["pixelwise", "smp"], default="pixelwise")
    parser.add_argument("--model", help="model file to use (default: a random-weight model)")
    parser.add_argument(
        "--memory-vectorize",
        action="store_true",
        help="also vectorize in the memory runs (slow with the pixelwise predictor's noisy maps)",
    )
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        memory_child(args.child_memory, args)
        return
    print(f"# machine: {machine()}")
    print(f"# model {args.arch}/{args.encoder} (tile {args.model_tile}), tile {args.tile or 'auto'}, "
          f"overlap {args.overlap or 'auto'}, batch {args.batch_size}")  # fmt: skip
    print(
        f"\n## throughput on {args.device} (scene Mpx/s; limit = model-only on the scene's pixels)"
    )
    print("| scene | tile / overlap / batch | block | tiles computed | grid minimum | redundancy | "
          "limit Mpx/s | pipeline Mpx/s | efficiency | segment s | vectorize s | polygons | "
          "peak RSS MB | peak GPU MB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        r = throughput(size, args)
        print(f"| {size}^2 | {r['tile']} / {r['overlap']} / {r['batch']} | {r['block']} | "
              f"{r['tiles']} | {r['minimum']} | {r['redundancy']:.2f} | "
              f"{r['limit_mpx_s']:.3f} | {r['pipeline_mpx_s']:.3f} | {r['efficiency']:.2f} | "
              f"{r['segment_s']:.1f} | {r['vectorize_s']:.1f} | {r['features']} | "
              f"{r['rss_mb']:.0f} | {r['gpu_mb']:.0f} |", flush=True)  # fmt: skip
    if not args.memory_sizes:
        return
    stages = "segment + COG" + (" + vectorize" if args.memory_vectorize else "")
    stages += f", block {args.block_size or 'default'}"
    print(f"\n## peak memory ({stages} in a fresh process; predictor: {args.memory_model})")
    print("| scene | Mpx | peak RSS MB | seconds | polygons |")
    print("|---|---|---|---|---|")
    peaks = []
    for size in args.memory_sizes:
        m = memory(size, args)
        peaks.append(m["peak_rss_mb"])
        print(f"| {size}^2 | {size * size / 1e6:.0f} | {m['peak_rss_mb']:.0f} | "
              f"{m['seconds']:.0f} | {m['features']} |", flush=True)  # fmt: skip
    if len(peaks) >= 2:
        growth = args.memory_sizes[-1] ** 2 / args.memory_sizes[0] ** 2
        print(f"\npeak RSS ratio {args.memory_sizes[-1]}^2 / {args.memory_sizes[0]}^2: "
              f"{peaks[-1] / peaks[0]:.2f} (scene {math.floor(growth)}x larger; target <= 1.1)")  # fmt: skip


if __name__ == "__main__":
    main()
