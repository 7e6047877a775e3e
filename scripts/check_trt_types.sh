#!/usr/bin/env bash
# Static type check of the TensorRT layer against the TensorRT 10 Python API.
#
# TensorRT cannot be installed on the machines gcf-trt is developed and tested on (no GPU, and
# its libraries come from a host they cannot reach), so this is how the calls that
# gcf_trt/compile/trt_build.py and gcf_trt/runtime/backends/tensorrt.py make into `tensorrt`
# are checked: mypy against the community stubs `tensorrt-stubs` (generated from TensorRT
# 10.13), pinned.  Names that exist only in TensorRT 8.x or 11.x are reached through getattr
# or carry a `# type: ignore[attr-defined]` with a comment.
#
# The stubs need small fixes before mypy can read them; each is applied below (on a copy in a
# temp dir) and must match the expected number of places, so a new stubs release fails loudly:
#   1. `import tensorrt_libs as tensorrt_libs` (tensorrt/__init__.pyi and
#      tensorrt_bindings/__init__.pyi): a runtime-only package with no stubs -> removed.
#   2. parameters named `in` (a Python keyword) in IPluginV3 methods -> renamed `in_`.
#   3. `add_scale_nd(..., power: Weights = None, channel_axis: int)`: a parameter without a
#      default after defaulted ones (a syntax error) -> `channel_axis: int = ...`.
#   4. the module-level constant `bool: DataType` shadows the builtin, so every `-> bool` /
#      `x: bool` annotation in the stubs became invalid -> those annotations use `builtins.bool`.
#   5. remaining errors *inside* the stubs (e.g. undefined `capsule`) are silenced with
#      `ignore_errors` for the tensorrt modules only; our two files are checked in full.
# A negative control then checks a snippet with wrong TensorRT calls and requires mypy to
# reject it, so a broken stub setup cannot pass silently.
#
# Usage: scripts/check_trt_types.sh   (needs network access to PyPI the first time)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
STUBS_VERSION=10.13.0.35.1
MYPY_VERSION=${MYPY_VERSION:-2.4.1}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "check_trt_types: installing tensorrt-stubs==$STUBS_VERSION and mypy==$MYPY_VERSION into $WORK"
"$PY" -m pip install -q --disable-pip-version-check --no-deps --target "$WORK/stubs" \
    "tensorrt-stubs==$STUBS_VERSION"
"$PY" -m pip install -q --disable-pip-version-check --target "$WORK/mypy" "mypy==$MYPY_VERSION"

"$PY" - "$WORK/stubs" <<'EOF'
import re
import sys
from pathlib import Path

root = Path(sys.argv[1])

def patch(rel, pattern, repl, expected, flags=0):
    path = root / rel
    text = path.read_text()
    new, n = re.subn(pattern, repl, text, flags=flags)
    if n != expected:
        sys.exit(f"check_trt_types: stub fix {pattern!r} matched {n} times in {rel}, expected {expected}; "
                 f"the stubs changed, review the fixes in scripts/check_trt_types.sh")
    path.write_text(new)

# 1. runtime-only import
patch("tensorrt/__init__.pyi", r"^import tensorrt_libs as tensorrt_libs\r?$\n?", "", 1, re.M)
patch("tensorrt_bindings/__init__.pyi", r"^import tensorrt_libs as tensorrt_libs\r?$\n?", "", 1, re.M)
# 2. keyword as parameter name
patch("tensorrt_bindings/tensorrt.pyi", r"(?<=, )in: ", "in_: ", 4)
# 3. non-default parameter after default ones
patch("tensorrt_bindings/tensorrt.pyi", r"(def add_scale_nd\(.*power: Weights = None, channel_axis: int)\)",
      r"\1 = ...)", 1)
# 4. `bool` annotations -> builtins.bool (the module defines `bool: DataType`)
patch("tensorrt_bindings/tensorrt.pyi", r"^from __future__ import annotations$",
      "from __future__ import annotations\nimport builtins", 1, re.M)
path = root / "tensorrt_bindings/tensorrt.pyi"
lines = path.read_text().split("\n")
count = 0
for i, line in enumerate(lines):
    if re.match(r"^\s+(def |[A-Za-z_]\w*: )", line):
        new, n = re.subn(r"\bbool\b", "builtins.bool", line)
        lines[i], count = new, count + n
if count < 100:
    sys.exit(f"check_trt_types: only {count} `bool` annotations found in the stubs; review fix 4")
path.write_text("\n".join(lines))
print(f"check_trt_types: stubs patched ({count} bool annotations)")
EOF

cat > "$WORK/mypy.ini" <<'EOF'
[mypy]
python_version = 3.10
follow_imports = silent
check_untyped_defs = True
warn_unused_ignores = True
warn_redundant_casts = True
# cuda-python and ModelOpt ship no stubs; their calls are covered by the GPU tests.
[mypy-cuda.*]
ignore_missing_imports = True
[mypy-modelopt.*]
ignore_missing_imports = True
# fix 5: errors inside the stubs themselves
[mypy-tensorrt.*]
ignore_errors = True
[mypy-tensorrt_bindings.*]
ignore_errors = True
EOF

run_mypy() {
    MYPYPATH="$WORK/stubs" PYTHONPATH="$WORK/mypy" "$PY" -m mypy --config-file "$WORK/mypy.ini" \
        --cache-dir "$WORK/cache" "$@"
}

# Negative control: wrong TensorRT calls must be rejected (proves the stubs are in effect).
cat > "$WORK/negative.py" <<'EOF'
import tensorrt as trt

def wrong(config: trt.IBuilderConfig, ctx: trt.IExecutionContext) -> None:
    config.set_flag(trt.BuilderFlag.FP17)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, "1GiB")
    ctx.execute_async_v4(0)
EOF
if out=$(run_mypy "$WORK/negative.py" 2>&1); then
    echo "$out"
    echo "check_trt_types: FAILED - mypy accepted wrong TensorRT calls; the stubs are not in effect" >&2
    exit 1
fi
for expect in 'FP17' 'set_memory_pool_limit' 'execute_async_v4'; do
    if ! grep -q "$expect" <<<"$out"; then
        echo "$out"
        echo "check_trt_types: FAILED - negative control did not flag $expect" >&2
        exit 1
    fi
done
echo "check_trt_types: negative control rejected as expected ($(grep -c 'error:' <<<"$out") errors)"

run_mypy gcf_trt/compile/trt_build.py gcf_trt/runtime/backends/tensorrt.py
echo "check_trt_types: OK (TensorRT layer type-checks against tensorrt-stubs $STUBS_VERSION)"
