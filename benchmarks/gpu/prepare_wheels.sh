#!/usr/bin/env bash
# Run HERE (a machine with pip access), in the checkout's root, before lending a GPU machine:
# puts into .whl/ (git-ignored) what the GPU machine's image lacks for benchmarks.gpu_mace,
# for its Python 3.12 / torch cu13: mace-torch and the packages it imports that the image does
# not hold, ase, vesin, e3nn 0.4.4 (mace-torch's pin), cuEquivariance, and cuEquivariance's two
# CUDA ops wheels unpacked into one xz tarball (as wheels they are 73 MB, over the 64 MiB a
# device call carries; xz makes them ~30 MB). The image's package list: the device tool's
# KINDS.md. Then the device tool's run with carry [".whl"] and the command
# `bash benchmarks/gpu/run_on_device.sh mace` (then `... export`; docs/performance.md, "GPU").
set -euo pipefail
CUEQ_VERSION=0.13.0
PYTHON_VERSION=${PYTHON_VERSION:-3.12}  # the GPU image's python
rm -rf .whl && mkdir -p .whl/ops
download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 "$@"
}
download -d .whl mace-torch==0.3.16 e3nn==0.4.4 ase==3.29.0 vesin==0.6.2 matscipy==1.3.1 \
  torch-ema==0.3 lmdb orjson configargparse prettytable \
  "cuequivariance==$CUEQ_VERSION" "cuequivariance-torch==$CUEQ_VERSION"
download -d .whl/ops "cuequivariance-ops-cu13==$CUEQ_VERSION" \
  "cuequivariance-ops-torch-cu13==$CUEQ_VERSION"
mkdir -p .whl/ops/site
for wheel in .whl/ops/*.whl; do python3 -m zipfile -e "$wheel" .whl/ops/site; done
tar -C .whl/ops/site -cf - . | xz -T0 -6 > .whl/cuequivariance_ops.tar.xz
rm -rf .whl/ops
du -sh .whl
