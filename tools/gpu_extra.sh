#!/usr/bin/env bash
# Second GPU batch: moe_1b_a390m end-to-end at 16384 tokens (32768 does not fit an 80 GB H100 in this
# eager harness: see h100-moe_1b_a390m.json), and torch.compile'd end-to-end steps of dense_135m and moe_1b.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 COLUMNS=170
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m tpsbench run --model moe_1b_a390m --batch 16384 --mode e2e --out "$OUT/h100-moe_1b_a390m-e2e16k.json" 2>&1 \
  | tee "$OUT/h100-moe_1b_a390m-e2e16k.log"
python3 -m tpsbench run --model dense_135m --batch 32768 --mode e2e --compile --out "$OUT/h100-dense_135m-compile.json" 2>&1 \
  | tee "$OUT/h100-dense_135m-compile.log"
python3 -m tpsbench run --model moe_1b --batch 32768 --mode e2e --compile --impl grouped,capacity,dense_active \
  --out "$OUT/h100-moe_1b-compile.json" 2>&1 | tee "$OUT/h100-moe_1b-compile.log"
nvidia-smi > "$OUT/nvidia-smi-extra.txt" 2>&1
