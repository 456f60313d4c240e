"""Benchmark the Dask executor: per-block overhead, throughput with 1 and 2 workers, peak memory.

Prints three markdown tables:

1. **per-block overhead**: tiny blocks (one 64 px tile each) and a trivial predictor
   (``IdentityPredictor``), so the time per block is almost all executor cost: in-process vs a
   local Dask cluster of 1 and 2 workers, in ms per block (clusters warmed up first);
2. **throughput** of a real small SMP model (unet / resnet18, random weights, tile 256): in-process
   vs Dask with 1 and 2 local workers, scene Mpx/s and the ratio to in-process (models loaded
   and every batch shape run once before timing; in-process torch uses every core, each of N
   workers cores / N threads);
3. **peak RSS** of the client process (which also hosts the local scheduler and the nannies) and
   of each worker, for a 16384^2 scene (and 4096^2 for the ratio), each run in a fresh process on
   2 workers with a cheap NumPy predictor (``PixelwisePredictor``: 1x1 conv + softmax) so it
   finishes in minutes; reading, blending, transfer and COG writing are the real pipeline.

Scenes are a cheap deterministic pattern written strip by strip into ``benchmarks/_data/``
(gitignored) and reused.

Usage::

    python benchmarks/bench_dask.py                                # everything (~10 min, 2 cores)
    python benchmarks/bench_dask.py --size 1024 --memory-sizes 2048   # quick look
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "_data"
STRIP = 512
MEMORY_CLASSES = ("background", "building", "road", "water", "tree")


def pattern_scene(size: int) -> Path:
    """A 3-band uint8 ``size``^2 scene of smooth waves plus hashed noise, written strip by strip."""
    from affine import Affine

    from geoseg.geo.geobox import RasterGrid
    from geoseg.geo.window import Window
    from geoseg.io.raster import RasterBlockWriter

    path = DATA / f"dask_pattern_{size}.tif"
    if path.exists():
        return path
    started = time.perf_counter()
    transform = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 5_300_000.0)
    grid = RasterGrid(size, size, "EPSG:32632", transform, "uint8", 3)  # type: ignore[arg-type]
    cols = np.arange(size, dtype=np.float32)[None, :]
    with RasterBlockWriter(path, grid) as out:
        for row in range(0, size, STRIP):
            rows = np.arange(row, min(row + STRIP, size), dtype=np.float32)[:, None]
            noise = ((rows.astype(np.int64) * 73856093) ^ (cols.astype(np.int64) * 19349663)) % 31
            bands = [
                110 + 90 * np.sin(rows / 53.0) * np.cos(cols / 71.0) + noise,
                120 + 80 * np.sin((rows + cols) / 97.0) + noise,
                100 + 70 * np.cos((rows - 2 * cols) / 151.0) + noise,
            ]
            out.write(Window(row, 0, rows.shape[0], size), np.stack(bands).astype(np.uint8))
    print(f"# generated {path.name} in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def timed_blocks(executor, job, blocks) -> float:
    """Seconds to run ``blocks`` through ``executor`` (results consumed, nothing written)."""
    started = time.perf_counter()
    for _ in executor.map_blocks(job, blocks):
        pass
    return time.perf_counter() - started


def overhead(args: argparse.Namespace) -> None:
    """Table 1: ms per tiny block, in-process vs Dask."""
    from geoseg.engine.block import SceneJob
    from geoseg.engine.dask import DaskExecutor
    from geoseg.engine.executors import SequentialExecutor
    from geoseg.geo.tiling import TileGrid, plan_halo_blocks
    from geoseg.testing import IdentityPredictor

    path = pattern_scene(args.overhead_size)
    job = SceneJob(str(path), functools.partial(IdentityPredictor, 3), None, 64, 0)
    grid = TileGrid(args.overhead_size, args.overhead_size, 64, 0)
    blocks = plan_halo_blocks(grid, 64, halo=0).blocks  # one tile each (no overlap, no halo)
    n = len(blocks)
    print(f"\n## per-block overhead ({n} blocks of one 64 px tile, trivial predictor)")
    print("| executor | cluster start s | ms per block | overhead vs in-process ms/block |")
    print("|---|---|---|---|")
    sequential = SequentialExecutor()
    timed_blocks(sequential, job, blocks[:8])
    base = timed_blocks(sequential, job, blocks) / n * 1e3
    print(f"| in-process | - | {base:.2f} | - |", flush=True)
    for workers in (1, 2):
        started = time.perf_counter()
        with DaskExecutor(workers=workers) as executor:
            start_s = time.perf_counter() - started
            timed_blocks(executor, job, blocks)  # warm-up: imports on the workers
            per_block = timed_blocks(executor, job, blocks) / n * 1e3
        print(f"| Dask, {workers} worker(s) | {start_s:.1f} | {per_block:.2f} | "
              f"{per_block - base:+.2f} |", flush=True)  # fmt: skip


def smp_model(tile: int) -> Path:
    """A randomly initialised unet/resnet18 (speed does not depend on the weights)."""
    from geoseg.testing import create_test_model

    path = DATA / f"dask_unet_resnet18_{tile}.safetensors"
    if not path.exists():
        create_test_model(path, "unet", "resnet18", 3, list(MEMORY_CLASSES), tile_size=tile)
    return path


def warm_up(job, threads: int, bands: int = 3) -> int:
    """Set torch's threads, load the model and run every batch shape once (first calls are slow)."""
    import torch

    torch.set_num_threads(threads)
    predictor = job.predictor()
    for n in range(1, job.batch_size + 1):
        predictor(np.zeros((n, bands, job.tile, job.tile), np.float32))
    return torch.get_num_threads()


def throughput(args: argparse.Namespace) -> None:
    """Table 2: real-model throughput, in-process vs 1 and 2 Dask workers."""
    from geoseg.engine.dask import DaskExecutor
    from geoseg.engine.executors import SequentialExecutor
    from geoseg.engine.scene import OutputPaths, model_job, segment_scene
    from geoseg.io.class_raster import Legend
    from geoseg.models.contract import default_colors
    from geoseg.models.modelfile import read_contract
    from geoseg.options import InferenceOptions, PredictOptions, TilingOptions

    cores = os.cpu_count() or 1
    path, model = pattern_scene(args.size), smp_model(args.tile)
    contract = read_contract(model)
    tiling = TilingOptions(
        tile=args.tile, overlap=args.overlap, batch_size=args.batch_size,
        block_size=args.block_size,
    )  # fmt: skip
    options = PredictOptions(tiling=tiling, inference=InferenceOptions(device="cpu"))
    job = model_job(str(path), model, contract, options)
    legend = Legend(contract.classes, default_colors(len(contract.classes)))
    mpx = args.size**2 / 1e6

    def run(executor, name: str):
        paths = OutputPaths(classes=DATA / "out" / f"dask_{name}_classes.tif")
        return segment_scene(job, paths, legend, block_size=args.block_size, executor=executor,
                             overwrite=True)  # fmt: skip

    print(f"\n## throughput: unet/resnet18, {args.size}^2 scene, tile {args.tile}, overlap "
          f"{args.overlap}, block {args.block_size}, batch {args.batch_size}")  # fmt: skip
    print("| executor | seconds | scene Mpx/s | vs in-process | tiles |")
    print("|---|---|---|---|---|")
    threads = warm_up(job, args.threads or cores)
    base = run(SequentialExecutor(), "seq")
    print(f"| in-process, {threads} thread(s) | {base.seconds:.1f} | "
          f"{mpx / base.seconds:.3f} | 1.00 | {base.tiles} |", flush=True)  # fmt: skip
    reference = (DATA / "out" / "dask_seq_classes.tif").read_bytes()
    for workers in (1, 2):
        with DaskExecutor(workers=workers) as executor:
            per_worker = args.threads or max(1, cores // workers)
            threads = max(executor.client.run(warm_up, job, per_worker).values())
            result = run(executor, f"w{workers}")
        same = (DATA / "out" / f"dask_w{workers}_classes.tif").read_bytes() == reference
        print(f"| Dask, {workers} worker(s) x {threads} thread(s) | {result.seconds:.1f} | "
              f"{mpx / result.seconds:.3f} | {base.seconds / result.seconds:.2f} | "
              f"{result.tiles} |{'' if same else ' OUTPUT DIFFERS'}", flush=True)  # fmt: skip


def peak_rss_mb() -> float:
    """Peak RSS of this process in MB.

    Linux's VmHWM, the high-water mark of this process's own memory map: ``getrusage``'s
    ``ru_maxrss`` survives ``exec`` and so reports the parent's RSS for a freshly spawned child.
    """
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def memory_child(size: int, args: argparse.Namespace) -> None:
    """Run one scene on a fresh local cluster; print the client's and workers' peak RSS as JSON."""
    from geoseg.engine.block import SceneJob
    from geoseg.engine.dask import DaskExecutor
    from geoseg.engine.scene import OutputPaths, segment_scene
    from geoseg.io.class_raster import Legend
    from geoseg.models.contract import default_colors
    from geoseg.testing import PixelwisePredictor

    path = pattern_scene(size)
    job = SceneJob(str(path), functools.partial(PixelwisePredictor, 3, len(MEMORY_CLASSES)),
                   None, 512, 64, args.batch_size)  # fmt: skip
    paths = OutputPaths(classes=DATA / "mem" / f"dask_mem_{size}_classes.tif")
    legend = Legend(MEMORY_CLASSES, default_colors(len(MEMORY_CLASSES)))
    with DaskExecutor(workers=args.workers) as executor:
        result = segment_scene(job, paths, legend, executor=executor, overwrite=True)
        workers = executor.client.run(peak_rss_mb)
    print(json.dumps({"size": size, "client_mb": peak_rss_mb(), "seconds": result.seconds,
                      "workers_mb": sorted(workers.values()), "tiles": result.tiles}))  # fmt: skip


def memory(args: argparse.Namespace) -> None:
    """Table 3: peak RSS of client and workers, each size in a fresh process."""
    print(f"\n## peak RSS, {args.workers} local workers, PixelwisePredictor (NumPy 1x1 conv), "
          "tile 512, overlap 64, default block 3584, classes only")  # fmt: skip
    print("| scene | seconds | client MB | worker MB (each) |")
    print("|---|---|---|---|")
    rows = []
    for size in args.memory_sizes:
        pattern_scene(size)  # generate outside the measured process
        cmd = [sys.executable, __file__, "--child-memory", str(size), "--workers",
               str(args.workers), "--batch-size", str(args.batch_size)]  # fmt: skip
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
        each = ", ".join(f"{mb:.0f}" for mb in row["workers_mb"])
        print(f"| {size}^2 | {row['seconds']:.0f} | {row['client_mb']:.0f} | {each} |", flush=True)
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        print(f"\nratio {last['size']}^2 / {first['size']}^2 (scene "
              f"{last['size'] ** 2 // first['size'] ** 2}x larger): client "
              f"{last['client_mb'] / first['client_mb']:.2f}, worker (max) "
              f"{max(last['workers_mb']) / max(first['workers_mb']):.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overhead-size", type=int, default=1024)
    parser.add_argument("--size", type=int, default=2048, help="throughput scene size")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, help="torch threads per process (default: cores "
                        "in-process, cores / N on each of N workers)")  # fmt: skip
    parser.add_argument("--memory-sizes", type=int, nargs="*", default=[4096, 16384])
    parser.add_argument("--workers", type=int, default=2, help="workers for the memory runs")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["overhead", "throughput", "memory"]
    )
    parser.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    if args.child_memory:
        memory_child(args.child_memory, args)
        return
    import distributed

    print(f"# machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}, dask/distributed {distributed.__version__}")  # fmt: skip
    for name, section in (("overhead", overhead), ("throughput", throughput), ("memory", memory)):
        if name not in args.skip:
            section(args)
            print(f"(load average after this section: {load()}; figures are only comparable "
                  "on an otherwise idle machine)", flush=True)  # fmt: skip


def load() -> str:
    """The 1-minute load average, e.g. ``1.02 on 2 cores``."""
    return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
