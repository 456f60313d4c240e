#!/usr/bin/env bash
# Fetch geoseg's runtime packages (not torch: the GPU machine has it) as Python 3.12 x86-64
# wheels into .whl/, for benchmarks/gpu_check.sh on a bare GPU machine (see the device tool's
# README). Run here, where pip reaches PyPI; .whl/ is ignored by git and travels with `carry`.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
           manylinux1_x86_64)
args=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp -d .whl)
for p in "${PLATFORMS[@]}"; do args+=(--platform "$p"); done
# Only what the GPU machine's image lacks (it has torch, torchvision, timm, numpy, pandas,
# pyarrow, pillow, pyyaml, typer, rich, safetensors, pytest; see the device tool's KINDS.md):
# pyogrio (32 MB, a second GDAL) is left out to stay under the 64 MiB a call may carry: the
# GPU check writes no polygon layers (vectorizing is CPU work, measured on CPU runs).
PACKAGES=(rasterio affine click-plugins cligj shapely pyproj geopandas
          segmentation-models-pytorch pystac)
python3 -m pip download "${args[@]}" "${PACKAGES[@]}"
du -sh .whl
