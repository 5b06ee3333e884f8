#!/usr/bin/env bash
# Quick check of the measurement pipeline on a lent GPU (device tool): environment, then a short run.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi | tee "$OUT/nvidia-smi.txt"
python3 - <<'PY' 2>&1 | tee "$OUT/env.txt"
import torch, triton, numpy
print(torch.__version__, triton.__version__, numpy.__version__, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
import pynvml; pynvml.nvmlInit(); print("nvml driver", pynvml.nvmlSystemGetDriverVersion())
PY
python3 -m tpsbench run --model moe_1b --batch 8192 --reps 3 --min-time 0.05 --out "$OUT/smoke-moe_1b.json" 2>&1 | tee "$OUT/smoke.log"
