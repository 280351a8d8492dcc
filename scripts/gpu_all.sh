#!/bin/bash
# Everything GPU in one device call (at most 8 files come back): the conformance suite on both CUDA
# backends, the GPU table (asv_bench/gpu_table.py; bitsandbytes and torchao in the same run), `qref validate`
# on CUDA, the golden vectors through the CUDA backends, and the small-model experiment (3 seeds).
# Usage on the lent GPU: bash scripts/gpu_all.sh   (carry .gpusite: recipe in scripts/gpu_run.sh)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.gpusite:$PWD
OUT=${OUT:-/tmp/out}; mkdir -p $OUT/exp
{
  nvidia-smi -L
  python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || echo "editable install failed"
  for b in torch:cuda cupy; do
    echo "== conformance suite, backend $b, hypothesis profile ci"
    timeout 150 python3 -m pytest --pyargs conformance --backend $b -q -p no:cacheprovider -o addopts= 2>&1 \
      | grep -E "passed|failed|Mismatch:|Falsifying|case=|Error" | head -20
  done
  echo "== GPU table"
  timeout 200 python3 asv_bench/gpu_table.py --out $OUT/gpu_table.json --sizes ${SIZES:-1024x1024 4096x4096 8192x8192 28672x8192} 2>&1 | grep -v Warning
  start=$(date +%s)
  timeout 120 python3 -m qref.cli validate ${LIBS:-} --device cuda --json $OUT/validate_gpu.json > $OUT/validate_gpu.txt 2>/dev/null
  echo "== qref validate --device cuda: rc=$? in $(( $(date +%s) - start )) s"
  awk '$6 ~ /^[1-9]/' $OUT/validate_gpu.txt | head -20
  python3 -m qref.cli vectors export /tmp/vectors > /dev/null
  for b in torch:cuda cupy; do timeout 60 python3 -m qref.cli vectors check /tmp/vectors --backend $b 2>&1 | tail -1; done
  start=$(date +%s)
  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 timeout 330 python3 -m experiments.run --size small --seeds 0 1 2 --out $OUT/exp
  echo "== experiment: rc=$? in $(( $(date +%s) - start )) s"
} 2>&1 | grep -v "SyntaxWarning\|Configuration class for applying" | tee $OUT/log.txt
