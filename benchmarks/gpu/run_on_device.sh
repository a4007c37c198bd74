#!/usr/bin/env bash
# Run ON the lent GPU machine (device tool, carry [".whl"] from prepare_wheels.sh), in the
# checkout's root: installs the carried packages beside the image's torch, prints the GPU, and
# runs one stage (each fits one device call of at most 10 minutes; results land in $OUT, which
# the tool brings back):
#   mace    (default) benchmarks.gpu_mace within its time budget (issue 18); extra arguments
#           go to it
#   export  issue 16's CUDA figures: equiforce bench of mace-128-l1 float32 on one molecule and
#           a 999-atom water box, eager vs its exported .pt2 package (AOTInductor for CUDA) vs
#           mace-torch on the same weights
set -euo pipefail
STAGE=${1:-mace}
[ $# -gt 0 ] && shift
SITE=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$SITE" .whl/*.whl
tar -C "$SITE" -xJf .whl/cuequivariance_ops.tar.xz
export PYTHONPATH="$SITE:$PWD/src:$PWD" PYTHONUNBUFFERED=1
OUT=${OUT:-bench_out/gpu}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 - <<'PY' || true  # what runs below; a missing CUDA ops package is reported there too
import torch
print("torch", torch.__version__, torch.cuda.get_device_name(0))
try:
    import cuequivariance_ops_torch  # noqa: F401
    print("cuequivariance_ops_torch: importable")
except Exception as err:  # noqa: BLE001
    print("cuequivariance_ops_torch NOT importable:", type(err).__name__, err)
PY
quiet() { grep -v "UserWarning\|warnings.warn\|return visitor" || true; }
case "$STAGE" in
  mace)
    python3 -m benchmarks.gpu_mace --device cuda --out "$OUT" "$@" 2>&1 | quiet ;;
  export)
    timeout 540 python3 -m equiforce bench --preset mace-128-l1 --systems molecule box-999 \
      --exported fast --peers --mace-python "$(command -v python3)" --device cuda \
      --warmup 5 --repeats 30 --out "$OUT/export" "$@" 2>&1 | quiet ;;
  *)
    echo "unknown stage $STAGE (mace or export)" >&2; exit 2 ;;
esac
