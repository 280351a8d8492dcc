#!/bin/bash
# One device call: install qref (editable, for its entry points), the conformance suite on the CUDA
# backends, then the GPU table. Usage on the lent GPU: bash scripts/gpu_run.sh [SUITE_PROFILE] [TABLE ARGS]
# Peers travel in .gpusite (git-ignored; carry it), built here once a session:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 -d .whl bitsandbytes==0.50.2 torchao==0.18.0
#   pip install --no-deps --no-compile --target .gpusite .whl/*.whl
#   then delete every .gpusite/bitsandbytes/libbitsandbytes_*.so except the _cpu and _cuda130 ones
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.gpusite:$PWD
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi -L | tee $OUT/device.txt
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || echo "editable install failed"
for b in torch:cuda cupy; do
  HYPOTHESIS_PROFILE=${1:-ci} timeout 200 python3 -m pytest --pyargs conformance --backend $b -q -p no:cacheprovider \
    -o addopts= 2>&1 | tee $OUT/conform_${b/:/_}.txt | grep -E "passed|failed|Mismatch:|Falsifying|case=" | head -30
done
shift || true
timeout 300 python3 asv_bench/gpu_table.py --out $OUT/gpu_table.json "$@" 2>&1 | grep -v Warning
