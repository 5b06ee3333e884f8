# Sourced by the one-call GPU scripts (tools/gpu_evidence.sh, tools/gpu_outlier.sh): the models and sizes (the
# real ones, or the tiny CPU ones under DRY_RUN=1), and `stage`, which runs one command under a timeout cut to
# what is left of the call's budget, logs it, and re-packs every file written so far into $OUT/evidence.tar.gz,
# so that a call cut short still brings back what finished. The caller sets BUDGET_S, OUT, WORK, LOG and START.
# MAX_STAGES=N runs the first N stages and skips the rest (a budget counted in stages: the CPU tests use it, so
# that what runs does not depend on how fast the machine is); under DRY_RUN a stage's own timeout is not applied
# (the CPU's dry runs are slower than the GPU stages the timeouts are sized for), only the call's budget.
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 COLUMNS=170
if [ -n "${DRY_RUN:-}" ]; then
  DENSE=dense_tiny MOE=moe_tiny LAYER_MODELS="moe_tiny" OUTLIER=moe_tiny BATCH=256 OUTLIER_BATCH=128 SEQ=64
  E2E_IMPLS=grouped,capacity,dense_active LAYER_IMPLS=grouped,capacity COMPILE="" DEV="--device cpu --no-counters"
  CHURN_CALLS=4
else
  DENSE=dense_135m MOE=moe_1b LAYER_MODELS="moe_1b moe_1b_a390m olmoe_1b_7b" OUTLIER=moe_1b_a390m BATCH=32768
  OUTLIER_BATCH=16384 SEQ=2048 E2E_IMPLS=grouped,capacity,triton,dense_active LAYER_IMPLS=triton,grouped,capacity
  COMPILE="--compile" DEV="" CHURN_CALLS=200
fi
read -r -a RUN <<< "python3 -m tpsbench run $DEV --seq $SEQ"  # timeout runs commands, not shell functions

left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
# The profiler traces go in a tarball of their own, which is dropped when over 15 MiB (the device tool brings
# back files of up to 16 MiB): a many-kernel step's trace can run to tens of megabytes, and must not cost the
# results; each trace's per-op summary (*.ops.txt, small) stays in evidence.tar.gz.
TRACE_LIMIT_BYTES=$(( 15 * 1024 * 1024 ))
pack() {
  tar -czf "$OUT/evidence.tar.gz.part" -C "$WORK" --exclude='*.trace.json' . \
    && mv "$OUT/evidence.tar.gz.part" "$OUT/evidence.tar.gz"
  if compgen -G "$WORK/traces/*.trace.json" > /dev/null; then
    tar -czf "$OUT/traces.tar.gz.part" -C "$WORK" traces && mv "$OUT/traces.tar.gz.part" "$OUT/traces.tar.gz"
    if [ "$(stat -c %s "$OUT/traces.tar.gz")" -gt "$TRACE_LIMIT_BYTES" ]; then
      rm -f "$OUT/traces.tar.gz"; echo "traces.tar.gz over 15 MiB: left out (the *.ops.txt summaries are kept)" >> "$LOG"
    fi
  fi
}
# stage NAME TIMEOUT_S COMMAND...: run under min(TIMEOUT_S, what is left), log it, pack what exists
STAGES_RUN=0
stage() {
  local name=$1 want=$2; shift 2
  local have; have=$(left)
  [ -n "${DRY_RUN:-}" ] && want=$have
  local limit=$(( want < have ? want : have ))
  if [ -n "${MAX_STAGES:-}" ] && [ "$STAGES_RUN" -ge "$MAX_STAGES" ]; then
    echo "== $name: skipped, the limit of ${MAX_STAGES} stages was reached" | tee -a "$LOG"; return
  fi
  if [ "$limit" -lt 15 ]; then
    echo "== $name: skipped, ${have} s of the ${BUDGET_S} s budget left" | tee -a "$LOG"; return
  fi
  STAGES_RUN=$(( STAGES_RUN + 1 ))
  echo "== $name (timeout ${limit} s, ${have} s left): $*" | tee -a "$LOG"
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  tail -25 "$WORK/$name.log" >> "$LOG"
  echo "== $name: exit $rc after $(( $(date +%s) - t0 )) s$([ $rc = 124 ] && echo ' (timed out)')" | tee -a "$LOG"
  pack
}

# What the code is, in the log's first lines (results files record it too)
code_header() {
  { python3 -c "import torch, triton, numpy; print('torch', torch.__version__, 'triton', triton.__version__, 'numpy', numpy.__version__)"
    git log -1 --format='code: %H %s' 2>/dev/null; git status --short | head -20; } >> "$LOG" 2>&1
}

# The expected model's one outlier, the moe_1b_a390m loop training step at 16,384 tokens (H100: 648 ms measured, samples
# 509-775 ms, five of them; 310 ms expected; its MoE layer alone matches the model), measured so that the
# explanations separate:
# - learned routing, loop after grouped, 10 repetitions, the allocator's record (raw.allocator) and a profiler
#   trace: first-point effects (the H100 run timed loop first) and allocator churn (cudaMalloc/cudaFree and
#   retries) show in the record, host time inside the per-expert matmuls in the trace;
# - uniform routing: every expert gets the same rows in every step, so no new shapes appear from step to step
#   (the learned router's counts change with every optimizer step): if this one meets the model and the learned
#   one does not, the extra time comes from shapes changing between steps (allocator, or cuBLAS heuristics: a
#   heuristic query was measured at 0.059 ms in ml-explore/mlx issue 3861; moe_1b's ~128-row experts repeat
#   their few row counts, moe_1b_a390m's ~2,048-row ones draw new counts every step; raw.row_counts now counts the
#   new ones per step: on the CPU its real forward at fresh weights gave 367 distinct counts among 384 experts);
# - shape-churn first (seconds): the host time of a matmul of a shape not run before against a repeated one, at
#   the expert GEMM's (k, n) (tpsbench/bench/shape_churn.py): ~100-180 us would explain the step alone;
# - the MoE layer alone at 16,384 tokens (the committed layer points are at 32,768): its fwd_bwd x 12 layers
#   against the step.
outlier_stages() {
  stage shape-churn 20 python3 -m tpsbench.bench.shape_churn "$CHURN_CALLS"
  stage outlier-learned 100 "${RUN[@]}" --model "$OUTLIER" --batch "$OUTLIER_BATCH" --impl grouped,loop --mode e2e \
    --reps 10 --trace "$WORK/traces" --out "$WORK/e2e-$OUTLIER-outlier.json"
  stage outlier-uniform 45 "${RUN[@]}" --model "$OUTLIER" --batch "$OUTLIER_BATCH" --impl loop --mode e2e \
    --routing uniform --reps 10 --out "$WORK/e2e-$OUTLIER-outlier-uniform.json"
  stage outlier-layer 45 "${RUN[@]}" --model "$OUTLIER" --batch "$OUTLIER_BATCH" --impl loop,grouped --mode micro \
    --layers moe --no-stages --out "$WORK/layers-$OUTLIER-outlier.json"
}
