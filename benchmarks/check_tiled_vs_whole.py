"""Agreement of tiled (blocks, tiles, blending) and whole-image prediction with a trained model.

Usage: ``python benchmarks/check_tiled_vs_whole.py [MODEL] [SCENE]`` (defaults: the model and
held-out scene that ``geoseg demo`` writes). The whole image is pushed through the network in one
piece (its size must be a multiple of 32); the tiled result comes from ``segment_scene``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import rasterio

from geoseg.engine.block import ModelSpec, SceneJob
from geoseg.engine.scene import OutputPaths, model_job, segment_scene
from geoseg.io.class_raster import Legend
from geoseg.models.modelfile import file_sha256, read_contract
from geoseg.models.predictor import load_predictor
from geoseg.options import PredictOptions

TILINGS = [(256, 32), (256, 64), (512, 64)]


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "geoseg_demo/model.safetensors"
    scene = sys.argv[2] if len(sys.argv) > 2 else "geoseg_demo/scenes/scene_03.tif"
    contract = read_contract(model)
    assert contract.normalization is not None
    with rasterio.open(scene) as ds:
        data, valid = ds.read(), ds.dataset_mask() > 0
        h, w = (ds.height // 32) * 32, (ds.width // 32) * 32  # the network needs multiples of 32
    data, valid = data[:, :h, :w], valid[:h, :w]
    x = contract.normalization.apply(data)
    x[:, ~valid] = 0
    whole = load_predictor(model, "cpu")(x[None])[0].argmax(0)
    print("| tile | overlap | agreement on valid pixels |\n|---|---|---|")
    auto = model_job(scene, model, contract, PredictOptions())  # predict's default tiling
    for tile, overlap in [*TILINGS, (auto.tile, auto.overlap)]:
        spec = ModelSpec(model, file_sha256(model), "cpu")
        job = SceneJob(scene, spec, contract.normalization, tile, overlap, 4)
        paths = OutputPaths(classes=Path(f"/tmp/tiled_vs_whole_{tile}_{overlap}.tif"))
        legend = Legend(contract.classes, contract.colors)
        segment_scene(job, paths, legend, overwrite=True)
        with rasterio.open(paths.classes) as ds:
            tiled = ds.read(1)[:h, :w]
        name = f"{tile} (default)" if (tile, overlap) == (auto.tile, auto.overlap) else tile
        print(f"| {name} | {overlap} | {np.mean(tiled[valid] == whole[valid]):.4%} |")


if __name__ == "__main__":
    main()
