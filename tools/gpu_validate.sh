#!/usr/bin/env bash
# GPU validation of `tpsbench run` : dense_135m, moe_1b and moe_1b_a390m at
# microbatch 32768 tokens, seq 2048, every implementation, micro and e2e. Run on a lent GPU (each results file
# records the content hash of the code that ran: `tpsbench provenance`); writes results JSON, console logs and
# nvidia-smi to $OUT.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 COLUMNS=170
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
nvidia-smi -q -d CLOCK,POWER,PERFORMANCE > "$OUT/nvidia-smi-q.txt" 2>&1
for model in ${MODELS:-dense_135m moe_1b moe_1b_a390m}; do
  python3 -m tpsbench run --gpu auto --model "$model" --batch 32768 --seq 2048 \
    --out "$OUT/h100-$model.json" 2>&1 | tee "$OUT/h100-$model.log"
done
nvidia-smi > "$OUT/nvidia-smi-after.txt" 2>&1
