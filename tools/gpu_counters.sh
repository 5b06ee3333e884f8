#!/usr/bin/env bash
# GPU validation of counters and calibration: `tpsbench calibrate`, then runs of moe_1b and dense_135m with
# counters and GPU idle time (micro + e2e at 32,768 tokens), then compare and plot them. Writes to $OUT the
# 7 files (the device tool brings back 8): nvidia-smi.txt, calibration.json, counters-<model>.json (2),
# counters.log (the console output of calibrate and both runs), compare.md, roofline.png.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 COLUMNS=170
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -m tpsbench calibrate --out "$OUT/calibration.json" 2>&1 | tee "$OUT/counters.log"
for model in dense_135m moe_1b; do
  impls=(); [ "$model" = moe_1b ] && impls=(--impl grouped,capacity,triton,dense_active)  # a dense model has none
  python3 -m tpsbench run --model "$model" --batch 32768 "${impls[@]}" \
    --ceilings calibrated --calibration "$OUT/calibration.json" --out "$OUT/counters-$model.json" 2>&1 \
    | tee -a "$OUT/counters.log" | tail -25
done
# The answers from these runs (counters and profiler idle time now present): verdicts, ratios, the plot.
python3 -m tpsbench compare "$OUT"/counters-*.json --markdown "$OUT/compare.md" > /dev/null
python3 -m tpsbench plot "$OUT"/counters-*.json -o "$OUT/roofline.png"
tail -40 "$OUT/compare.md"
