#!/usr/bin/env bash
# One prepared device check (issue 12): encode images/s (SAM vit_b, CLIP ViT-B-16; random weights,
# bf16 autocast, batch 8/16/32), masks candidates/s, trainer steps/s at configs/paper.yaml batch
# 64 with the mask loss on, and peak GPU memory of each; JSON and a table under $OUT (or
# bench/results/gpu-check). Budget: ≤ 8 minutes on one H100.
#
#   bash bench/gpu_check.sh            # on a machine with an NVIDIA GPU
#   bash bench/gpu_check.sh --smoke    # tiny models and sizes on CPU: what the test suite runs
#
# A fresh machine needs the project's venv first (bash setup.sh); the script makes it if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash setup.sh
out=${OUT:-bench/results/gpu-check}
mkdir -p "$out"
if [ "${1:-}" != "--smoke" ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
fi
exec .venv/bin/python bench/gpu_check.py --out "$out" "$@"
