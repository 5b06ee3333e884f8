#!/usr/bin/env bash
# Triton MoE kernels after the wgrad rework: the MoE layer alone (fwd, bwd, fwd_bwd) for triton, grouped
# and capacity at 32,768 tokens, largest model first; Triton's autotuning choices are printed to the log.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 COLUMNS=170 TRITON_PRINT_AUTOTUNING=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi-final.txt" 2>&1
for model in olmoe_1b_7b moe_1b_a390m moe_1b; do
  python3 -m tpsbench run --model "$model" --batch 32768 --mode micro --layers moe --no-stages \
    --impl triton,grouped,capacity --out "$OUT/final-$model.json" > "$OUT/final-$model.log" 2>&1
  grep -E "moe  " "$OUT/final-$model.log"
done
