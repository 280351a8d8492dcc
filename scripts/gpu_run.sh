#!/bin/bash
# One device call: install qref (editable, for its entry points), the conformance suite on the CUDA
# backends, the GPU table. Usage on the lent GPU: bash scripts/gpu_run.sh [SUITE_PROFILE]
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.gpusite:$PWD
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi -L | tee $OUT/device.txt
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || echo "editable install failed"
python3 -c "import qref.registry as r; print([(s, b if isinstance(b, str) else repr(b)) for s, b in r.available()])"
for b in torch:cuda cupy; do
  HYPOTHESIS_PROFILE=${1:-ci} timeout 240 python3 -m pytest --pyargs conformance --backend $b -q -p no:cacheprovider \
    -o addopts= -x 2>&1 | tee $OUT/conform_${b/:/_}.txt | tail -60
done
