#!/bin/bash
# One device call for issues #5 (GPU part) and #7: `qref validate` on CUDA (bitsandbytes, torchao, PEFT's
# loftq_init), the golden vectors through the CUDA backends, then the small-model experiment with 3 seeds.
# Usage on the lent GPU: bash scripts/gpu_validate_experiment.sh   (carry .gpusite; see gpu_run.sh for it)
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.gpusite:$PWD
OUT=${OUT:-/tmp/out}; mkdir -p $OUT/exp
{
  nvidia-smi -L
  python3 -c "import torch, peft, bitsandbytes, torchao; print('torch', torch.__version__, 'peft', peft.__version__, 'bitsandbytes', bitsandbytes.__version__, 'torchao', torchao.__version__)" 2>&1 | grep -v "Failed to load"
  python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || echo "editable install failed"
  start=$(date +%s)
  timeout 240 python3 -m qref.cli validate ${LIBS:-} --device cuda --json $OUT/validate_gpu.json > $OUT/validate_gpu.txt 2>$OUT/validate_gpu.err
  echo "qref validate --device cuda: rc=$? in $(( $(date +%s) - start )) s"
  grep -E " on cuda$|^skipped" $OUT/validate_gpu.txt
  awk '$6 ~ /^[1-9]/' $OUT/validate_gpu.txt | head -20
  tail -5 $OUT/validate_gpu.err
  python3 -m qref.cli vectors export /tmp/vectors > /dev/null
  for b in torch:cuda cupy; do timeout 90 python3 -m qref.cli vectors check /tmp/vectors --backend $b 2>&1 | tail -4; done
  start=$(date +%s)
  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 timeout 400 python3 -m experiments.run --size small --seeds 0 1 2 --out $OUT/exp
  echo "experiment: rc=$? in $(( $(date +%s) - start )) s"
} 2>&1 | tee $OUT/log.txt
