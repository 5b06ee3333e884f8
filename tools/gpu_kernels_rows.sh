#!/usr/bin/env bash
# Triton MoE kernels on a lent GPU (the run that measured the kernels' targets): bf16 correctness against the
# loop reference (last), each kernel timed alone on olmoe_1b_7b and moe_1b (+ moe_1b's layer trace), the MoE
# layer alone (fwd, bwd, fwd_bwd) of olmoe_1b_7b, moe_1b_a390m and moe_1b at 32,768 tokens for $IMPLS, and a
# quick calibration (L2-resident bandwidth from CUDA graphs). Eight files to $OUT, the device tool's limit.
# Compare afterwards, on any machine: tpsbench check --baseline results/baselines/h100_sxm-MODEL-moe-layer.json
# --current kernels-MODEL.json. Near the device tool's 600 s per call: MODELS=..., NO_CALIBRATE=1 and
# NO_PROFILE=1 (skips the correctness tests and the kernel profile) split it.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 COLUMNS=170 TRITON_PRINT_AUTOTUNING=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
IMPLS=${IMPLS:-triton,grouped,capacity,loop}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
if [ -z "${NO_PROFILE:-}" ]; then
for model in olmoe_1b_7b moe_1b; do
  # moe_1b is host-bound: also where its layer's GPU and host time go, triton against grouped
  trace=""; [ "$model" = moe_1b ] && trace="--trace triton,grouped"
  python3 tools/profile_moe_kernels.py --model "$model" $trace 2>&1 | grep -v Warning
done > "$OUT/kernel-profile.log"
echo "profiles done after ${SECONDS}s"
fi
for model in ${MODELS:-olmoe_1b_7b moe_1b_a390m moe_1b}; do
  python3 -m tpsbench run --model "$model" --batch 32768 --mode micro --layers moe --no-stages \
    --impl "$IMPLS" --out "$OUT/kernels-$model.json" 2>&1 | tee -a "$OUT/kernels.log" | grep -E "^│ moe "
  echo "$model done after ${SECONDS}s"
done
# correctness last: the slowest stage (about 3 minutes of first-call autotuning at the tests' small shapes)
[ -n "${NO_PROFILE:-}" ] || python3 -m pytest -q -m gpu tests/test_kernels.py -p no:cacheprovider 2>&1 \
  | tee "$OUT/kernels-correctness.log" | tail -2
echo "correctness done after ${SECONDS}s"
[ -n "${NO_CALIBRATE:-}" ] || python3 -m tpsbench calibrate --quick --out "$OUT/calibration.json" 2>&1 | tee -a "$OUT/kernels.log" | grep -E "l2_|overhead"
[ -f "$OUT/kernel-profile.log" ] && cat "$OUT/kernel-profile.log"
