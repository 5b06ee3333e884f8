#!/usr/bin/env bash
# GPU validation of counters and calibration: `tpsbench calibrate`, then runs of moe_1b and dense_135m with
# counters (micro + e2e at 32,768 tokens). Writes JSON, console logs and nvidia-smi to $OUT.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 COLUMNS=170
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -m tpsbench calibrate --out "$OUT/calibration.json" 2>&1 | tee "$OUT/calibrate.log"
for model in dense_135m moe_1b; do
  python3 -m tpsbench run --model "$model" --batch 32768 --impl grouped,capacity,triton,dense_active \
    --ceilings calibrated --calibration "$OUT/calibration.json" --out "$OUT/counters-$model.json" 2>&1 \
    | tee "$OUT/counters-$model.log" | tail -25
done
