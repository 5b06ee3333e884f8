#!/usr/bin/env bash
# The expected-time model's GPU check, one call of under 8 minutes on an H100 or H200 (the one-call
# script is tools/gpu_evidence.sh, which ends with this script's moe_1b_a390m outlier; run this one in a later call):
# `calibrate --quick` (with the GEMM shape and launch sweeps), training steps
# of dense_135m and moe_1b (grouped, capacity, triton, loop) eager and compiled at 32,768 tokens, the MoE layers of
# the three MoE models; then, without refitting on them, `validate` of these points against the H100-fitted
# table (the first out-of-sample test) and `compare` of them with the committed H100 runs (speedups decomposed
# into bounded shares). Writes to $OUT: nvidia-smi.txt, calibration.json, e2e-*.json, layers-*.json,
# validate.txt, validate.json, compare.md, expected.log (the console output of every command), traces/ (one
# Chrome trace per training step: `run --trace`), e2e-moe_1b_a390m-16k.json.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 COLUMNS=170
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LOG="$OUT/expected.log"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" 2>&1 | tee "$LOG"
git log -1 --format='code: %H %s' 2>/dev/null | tee -a "$LOG"; git status --short | head -20 | tee -a "$LOG"
timeout 120 python3 -m tpsbench calibrate --quick --out "$OUT/calibration.json" 2>&1 | tail -20 | tee -a "$LOG"
for model in dense_135m moe_1b; do
  impls=(); [ "$model" = moe_1b ] && impls=(--impl grouped,capacity,triton,loop,dense_active)  # dense: none
  timeout 150 python3 -m tpsbench run --model "$model" --batch 32768 "${impls[@]}" --mode e2e --reps 5 \
    --min-time 0.5 --trace "$OUT/traces" --out "$OUT/e2e-$model.json" 2>&1 | tail -12 | tee -a "$LOG"
  timeout 100 python3 -m tpsbench run --model "$model" --batch 32768 "${impls[@]/,loop/}" --mode e2e --compile \
    --reps 5 --min-time 0.5 --out "$OUT/e2e-$model-compile.json" 2>&1 | tail -8 | tee -a "$LOG"
done
# the one committed step the model misses by 2x (H100: 648 ms measured, 317 expected, samples 509-775 ms), again with
# more repetitions and the allocator's record (raw.allocator: retries, cudaMalloc/cudaFree) to test whether the
# caching allocator, not in the model, is what it missed
timeout 60 python3 -m tpsbench run --model moe_1b_a390m --batch 16384 --impl loop,grouped --mode e2e --reps 10 \
  --min-time 0.5 --out "$OUT/e2e-moe_1b_a390m-16k.json" 2>&1 | tail -6 | tee -a "$LOG"
for model in moe_1b moe_1b_a390m olmoe_1b_7b; do
  timeout 60 python3 -m tpsbench run --model "$model" --batch 32768 --impl triton,grouped,capacity,loop --mode micro \
    --layers moe --no-stages --out "$OUT/layers-$model.json" 2>&1 | tail -6 | tee -a "$LOG"
done
# out of sample: the H100-fitted table (or its same-architecture transfer) against these points, no refit
python3 -m tpsbench validate "$OUT"/e2e-*.json "$OUT"/layers-*.json > "$OUT/validate.txt" 2>&1
python3 -m tpsbench validate "$OUT"/e2e-*.json "$OUT"/layers-*.json --json > "$OUT/validate.json" 2>&1
tail -12 "$OUT/validate.txt" | tee -a "$LOG"
python3 -m tpsbench compare results/h100-validation/h100-dense_135m.json results/h100-validation/h100-moe_1b.json \
  results/h100-validation/h100-dense_135m-compile.json results/h100-validation/h100-moe_1b-compile.json \
  "$OUT"/e2e-*.json --markdown "$OUT/compare.md" > /dev/null 2>&1
grep -A12 "Speedups" "$OUT/compare.md" | tee -a "$LOG"
