#!/usr/bin/env bash
# Run ON the lent GPU machine (device tool, carry [".whl"] from prepare_wheels.sh), in the
# checkout's root: installs the carried packages beside the image's torch, prints the GPU,
# and runs benchmarks.gpu_mace within its time budget; the JSON lands in $OUT (what the tool
# brings back). Extra arguments go to benchmarks.gpu_mace.
set -euo pipefail
SITE=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" .whl/*.whl
tar -C "$SITE" -xJf .whl/cuequivariance_ops.tar.xz
export PYTHONPATH="$SITE:$PWD/src:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch, mace, cuequivariance_ops_torch; print('torch', torch.__version__, \
torch.cuda.get_device_name(0))"
python3 -m benchmarks.gpu_mace --device cuda --out "${OUT:-bench_out/gpu_mace}" "$@" \
  2>&1 | grep -v "UserWarning\|warnings.warn\|return visitor"
