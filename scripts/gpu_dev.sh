#!/bin/bash
# Kernel development in one device call: the CUDA kernel tests, the conformance suite on both CUDA
# backends, a host/device profile per call, the side-by-side knob comparison and (TABLE=sizes) the GPU
# table with bitsandbytes and torchao in the same run.
# Usage on the lent GPU: bash scripts/gpu_dev.sh   (carry .gpusite: recipe in scripts/gpu_run.sh)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.gpusite:$PWD
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
{
  nvidia-smi -L
  python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || echo "editable install failed"
  echo "== kernel tests"
  timeout 200 python3 -m pytest tests/test_cuda_kernels.py -x -q -p no:cacheprovider -o addopts= 2>&1 | tail -25
  if [ -z "${SKIP_CONFORMANCE:-}" ]; then
    for b in torch:cuda cupy; do
      echo "== conformance suite, backend $b, hypothesis profile ci"
      timeout 150 python3 -m pytest --pyargs conformance --backend $b -q -p no:cacheprovider -o addopts= 2>&1 \
        | grep -E "passed|failed|Mismatch:|Falsifying|case=|Error" | head -20
    done
  fi
  if [ -z "${SKIP_PROFILE:-}" ]; then echo "== profile"; timeout 120 python3 asv_bench/profile_quant.py 2>&1 | grep -v Warning | grep -v "^ *$"; fi
  if [ -z "${SKIP_TUNE:-}" ]; then for sz in ${TUNE_SIZES:-28672x8192}; do echo "== tune $sz"; timeout 200 python3 asv_bench/tune_kernels.py --size $sz 2>&1 | grep -v Warning; done; fi
  if [ -n "${TABLE:-}" ]; then echo "== GPU table"; timeout 200 python3 asv_bench/gpu_table.py --out $OUT/gpu_table.json --sizes $TABLE 2>&1 | grep -v Warning; fi
} 2>&1 | grep -v "SyntaxWarning" | tee $OUT/log.txt
