#!/usr/bin/env bash
# The moe_1b_a390m loop outlier experiment alone (see outlier_stages in tools/gpu_stages.sh), for a second, short device call
# after tools/gpu_evidence.sh, or a call of its own: about 2-3 minutes on an H100 by the committed runs' times (the
# five-implementation e2e run at 16,384 tokens took 30 s; the profiler trace of a loop step, ~10^5 kernels, adds
# the most), budget BUDGET_S (default 210 s). Writes to $OUT: nvidia-smi-q.txt, evidence.log, evidence.tar.gz,
# traces.tar.gz. DRY_RUN=1 runs it on the CPU with the tiny models.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
WORK=$(mktemp -d); LOG="$OUT/evidence.log"; : > "$LOG"
BUDGET_S=${BUDGET_S:-210}; START=$(date +%s)
source "$(dirname "$0")/gpu_stages.sh"
code_header
if [ -n "${DRY_RUN:-}" ]; then echo "dry run: no GPU" > "$OUT/nvidia-smi-q.txt"
else stage nvidia-smi 10 nvidia-smi -q; cp "$WORK/nvidia-smi.log" "$OUT/nvidia-smi-q.txt"; fi
outlier_stages
echo "== done after $(( $(date +%s) - START )) s of ${BUDGET_S}; files: $(cd "$WORK" && ls | tr '\n' ' ')" | tee -a "$LOG"
pack
