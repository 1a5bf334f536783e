#!/usr/bin/env bash
# Every GPU figure of the project in one short run, for a lent GPU machine (the device tool: ~15 minutes
# of device time in all, one H200). Run from the repository root there:
#
#   bash bench/gpu_all.sh            # results land in $OUT (the device tool's folder) or bench/results
#
# That machine has PyTorch, timm, onnx and onnxruntime but not open_clip, segment-anything or our pinned
# transformers, and it cannot download: fetch them here as wheels first (pure Python, any platform), and
# they travel with the working tree in .whl/ (git-ignored through .git/info/exclude):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl open_clip_torch==3.3.0 segment-anything==1.0 \
#       transformers==4.57.6 ftfy wcwidth
#   python3 -m pip download --no-deps --only-binary=:all: -d .whl --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 tokenizers==0.22.2
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
if [ -d .whl ]; then
  python3 -m pip install --quiet --no-deps --no-index .whl/*.whl
fi
export PYTHONPATH=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
# 1. Osprey-7B shapes (random weights, bf16): one region per call vs batched, encoder backends.
timeout 240 python3 bench/run_bench.py --preset osprey-7b --device cuda --dtype bfloat16 --decode static-compiled \
    --regions 1 8 16 --repeats 5 --out "$OUT" --name osprey7b-h200-bf16 || echo "run_bench failed: $?"
# 1b. Hundreds of regions on Osprey-7B shapes (bf16): replicated vs shared prefix KV, 8 / 64 / 300 regions.
timeout 240 python3 bench/shared_prefix_bench.py --preset osprey-7b --device cuda --dtype bfloat16 \
    --regions 8 64 300 --out "$OUT" --name shared-prefix-h200-bf16 || echo "shared_prefix_bench failed: $?"
# 2. SAM: ViT-H (what LISA and the released SAM use) and ViT-B in bf16, and the shipped tiny.
timeout 240 python3 bench/sam_bench.py --presets vit_h vit_b tiny --device cuda --dtype bfloat16 --repeats 5 \
    --points-per-side 32 --out "$OUT" --name sam-h200-bf16 || echo "sam_bench failed: $?"
