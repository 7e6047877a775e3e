#!/usr/bin/env bash
# Second test command (.ci/run calls it): the torchvision backbones, tested for real.
#
# torchvision needs another torch than the main venv's (the [torchvision] extra pins torch 2.14.1
# + torchvision 0.29.1, the pair that imports together on a CPU machine; the [torch] extra pins
# 2.13), so it gets its own venv, created here from the clean clone.  The tests use tiny clips
# (8 x 64 x 64).  Measured on 2 cores shared with other jobs: the tests 6.5-10 min wall (about
# 2 min of CPU time); the install 4 min on a quiet machine, 27 min under a load average of 7
# (the torch wheel is 5.5 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${GCF_TORCHVISION_VENV:-.venv-torchvision}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/pip" install -q -e '.[torchvision,openvino,dev]'
# The tests skip themselves where torchvision does not import; here that would hide the very
# failure this run exists to catch, so check first and fail loudly.
"$venv/bin/python" - <<'PY'
import torch
from gcf_trt.compile.model import torchvision_status
status = torchvision_status()
assert status is None, f"torchvision does not import in this venv: {status}"
assert torch.__version__.split("+")[0] == "2.14.1", f"the [torchvision] extra pins torch 2.14.1, got {torch.__version__}"
print(f"torch {torch.__version__}, torchvision imports")
PY
"$venv/bin/python" -m pytest -q -m torchvision tests/compile/test_torchvision.py
