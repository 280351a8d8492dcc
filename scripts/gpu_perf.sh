#!/bin/bash
# The speed issue's evidence in one device call: the CUDA kernel tests and the conformance suite on both
# CUDA backends, the golden vectors through them, the GPU table (asv_bench/gpu_table.py: qref, bitsandbytes,
# torchao, copy and write ceilings, whole calls and their kernels' device time, exactness of the timed kernels at
# 4096^2 and 28672x8192) with the SM clock sampled, where a call's time goes (asv_bench/call_anatomy.py), the
# side-by-side knob comparison (asv_bench/tune_kernels.py) and the per-call host/device profile; on request
# (NCU=1) Nsight Compute's view of the hot kernels, and per-kernel times under other knobs (kernel_times.py).
# Usage on the lent GPU: bash scripts/gpu_perf.sh   (carry .gpusite: recipe in scripts/gpu_run.sh)
# Development loop: SKIP_CONFORMANCE=1 SKIP_VECTORS=1 SKIP_TABLE=1 SKIP_PROFILE=1 TUNE_SIZES="28672x8192 4096x4096"
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.gpusite:$PWD
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
{
  nvidia-smi -L
  python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >/dev/null 2>&1 || echo "editable install failed"
  echo "== kernel tests"
  timeout 200 python3 -m pytest tests/test_cuda_kernels.py -q -p no:cacheprovider -o addopts= 2>&1 | tail -2
  if [ -z "${SKIP_CONFORMANCE:-}" ]; then
    for b in torch:cuda cupy; do
      echo "== conformance suite, backend $b, hypothesis profile ci"
      timeout 150 python3 -m pytest --pyargs conformance --backend $b -q -p no:cacheprovider -o addopts= 2>&1 \
        | grep -E "passed|failed|Mismatch:|Falsifying|case=|Error" | head -20
    done
  fi
  if [ -z "${SKIP_VECTORS:-}" ]; then
    python3 -m qref.cli vectors export /tmp/vectors > /dev/null
    for b in torch:cuda cupy; do echo "== vectors, $b"; timeout 60 python3 -m qref.cli vectors check /tmp/vectors --backend $b 2>&1 | tail -1; done
  fi
  if [ -n "${NCU:-}" ]; then
    echo "== Nsight Compute, 28672x8192"
    timeout 240 ncu --clock-control none --kernel-name regex:"quant_lut|quant_dq256|dequant8" --section SpeedOfLight \
      --section SchedulerStats --section WarpStateStats --section Occupancy python3 asv_bench/ncu_target.py 2>&1 \
      | grep -v "^==PROF==\|Warning" | grep -E "^  [a-z_0-9]+|Duration|SM Frequency|DRAM Throughput|Memory Throughput|Compute \(SM\)|Issued Ipc|Issue Slots Busy|No Eligible|Active Warps Per|Achieved Occupancy|Theoretical Occupancy|Registers|Warp Cycles Per Issued|Eligible Warps"
  fi
  if [ -n "${KTIMES:-}" ]; then
    echo "== kernel times (CUPTI)"; timeout 200 python3 asv_bench/kernel_times.py 2>&1 | grep -v Warning
  fi
  if [ -z "${SKIP_TABLE:-}" ]; then
    echo "== GPU table (SM clock, power and clock-event reasons sampled every 100 ms into clocks.csv)"
    nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_event_reasons.active \
      --format=csv -lms 100 > $OUT/clocks.csv 2>&1 & SMI=$!
    timeout 420 python3 asv_bench/gpu_table.py --out $OUT/gpu_table.json --rounds ${ROUNDS:-5} --sizes ${SIZES:-1024x1024 4096x4096 8192x8192 28672x8192} 2>&1 | grep -v Warning
    kill $SMI; python3 docs/scripts/clocks_summary.py $OUT/clocks.csv
  fi
  if [ -z "${SKIP_ANATOMY:-}" ]; then
    echo "== call anatomy"; timeout 120 python3 asv_bench/call_anatomy.py 2>&1 | grep -v "Warn\|_warn_once"
  fi
  if [ -z "${SKIP_TUNE:-}" ]; then
    for sz in ${TUNE_SIZES:-28672x8192}; do echo "== tune $sz"; timeout 150 python3 asv_bench/tune_kernels.py --size $sz 2>&1 | grep -v Warning; done
  fi
  if [ -z "${SKIP_PROFILE:-}" ]; then
    echo "== profile"; timeout 120 python3 asv_bench/profile_quant.py 2>&1 | grep -v Warning | grep -v "^ *$" | grep -v "function calls\|Ordered by\|List reduced" | sed "s#/[^ ]*/site-packages/##; s#$PWD/##"
  fi
} 2>&1 | grep -v "SyntaxWarning" | tee $OUT/log.txt
