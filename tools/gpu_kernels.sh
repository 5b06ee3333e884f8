#!/usr/bin/env bash
# Triton MoE kernels on a lent GPU: bf16 correctness against the loop reference, then the MoE layer of
# moe_1b, moe_1b_a390m and olmoe_1b_7b at 32,768 tokens for triton, grouped, capacity and loop.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 COLUMNS=170
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi-kernels.txt" 2>&1
python3 -m pytest -q -m gpu tests/test_kernels.py -p no:cacheprovider 2>&1 | tee "$OUT/kernels-correctness.log"
for model in ${MODELS:-moe_1b moe_1b_a390m olmoe_1b_7b}; do
  python3 -m tpsbench run --model "$model" --batch 32768 --mode micro --no-stages --impl triton,grouped,capacity,loop \
    --out "$OUT/kernels-$model.json" 2>&1 | tee "$OUT/kernels-$model.log" | grep -E "moe  |error|Error"
done
