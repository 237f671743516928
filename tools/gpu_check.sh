#!/usr/bin/env bash
# The GPU check on a CUDA machine without internet (docs/sam2_backend.md, "GPU check"):
#   tools/gpu_check.sh [WHEEL_DIR] [extra options of python -m tools.gpu_check]
# installs the wheels collected by `python -m tools.gpu_check --prepare-wheels WHEEL_DIR` offline, then runs
# the check, writing gpu_check.json/.md to $OUT (or out/gpu_check). Run from the repository root.
set -euo pipefail
wheels="${1:-build/gpu_wheels}"
shift || true
PYTHON="${PYTHON:-python}"
"$PYTHON" -V
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
"$PYTHON" -m tools.gpu_check --install-from "$wheels"
exec "$PYTHON" -m tools.gpu_check "$@"
