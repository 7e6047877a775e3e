#!/usr/bin/env bash
# One-command TensorRT check on a machine with an NVIDIA GPU (datacenter or Jetson):
# FP16 + INT8 plans of the demo model, a streamed video compared with the CPU engines, latency,
# all in one JSON file (default gpu_check.json).  See scripts/gpu_check.py for the steps.
#
#   bash scripts/gpu_check.sh                       # needs torch (builds the CPU engines first)
#   bash scripts/gpu_check.sh --from engines/demo   # Jetson without torch: a CPU build made elsewhere
#
# Prerequisites: gcf-trt installed with TensorRT and cuda-python of the driver's CUDA major
# (pip install -e '.[torch,trt-cu12]'; Jetson/JetPack 6: TensorRT from JetPack plus
# pip install -e '.[jetson]').  Exit code 0 only when every step passed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
elif [ -f /etc/nv_tegra_release ]; then
    head -n 1 /etc/nv_tegra_release
else
    echo "gpu_check: no nvidia-smi and not a Jetson; the environment step will say what is missing" >&2
fi
exec "$PY" scripts/gpu_check.py "$@"
