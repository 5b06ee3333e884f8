#!/usr/bin/env bash
# On the CPU, after tools/gpu_evidence.sh: what the H200 evidence says next to the committed H100 runs, from committed files
# only (no hand arithmetic). Run it after the files of tools/gpu_evidence.sh (and tools/gpu_outlier.sh) are
# copied into DIR (default results/h200-evidence):
#   bash tools/h200_report.sh [DIR]
# 1. unpacks DIR/evidence.tar.gz (the JSON and per-stage logs) into DIR;
# 2. compare: the H100 training steps (h100-validation, then the counters runs, which win where both hold a
#    point) and MoE layers (the committed H100 baselines) next to the H200's, with both GPUs' calibrations:
#    DIR/compare.md (tables), DIR/compare.json (the same as data);
# 3. plot: both GPUs on one roofline, DIR/roofline.png;
# 4. validate: the H200 points against the expected-time model fitted on the H100 (transferred: the first
#    out-of-sample test), DIR/validate.txt;
# 5. a new H200 baseline per MoE-layer run (BASELINES/h200-MODEL-moe-layer.json, BASELINES default
#    results/baselines) and `tpsbench check` of the run against it, DIR/check-MODEL.md.
set -euo pipefail
DIR=${1:-results/h200-evidence}
BASELINES=${BASELINES:-results/baselines}
tps() { python3 -m tpsbench "$@"; }
[ -d "$DIR" ] || { echo "h200_report: no folder $DIR: copy the GPU call's files there first" >&2; exit 2; }
# the stages' JSON and logs (and the traces' per-op summaries), unpacked in place; traces.tar.gz stays packed
# (tens of megabytes unpacked: commit it only if it is small)
if [ -f "$DIR/evidence.tar.gz" ]; then tar -xzf "$DIR/evidence.tar.gz" -C "$DIR" && rm "$DIR/evidence.tar.gz"; fi
shopt -s nullglob
H100_STEPS=(results/h100-validation/h100-dense_135m.json results/h100-validation/h100-moe_1b.json
  results/h100-validation/h100-dense_135m-compile.json results/h100-validation/h100-moe_1b-compile.json
  results/h100-validation/h100-moe_1b_a390m-e2e16k.json
  results/h100-counters/validated/counters-dense_135m.json results/h100-counters/validated/counters-moe_1b.json)
H100_LAYERS=(results/baselines/h100_sxm-*-moe-layer.json)
H200=("$DIR"/e2e-*.json "$DIR"/layers-*.json)
[ "${#H200[@]}" -gt 0 ] || { echo "h200_report: no e2e-*.json or layers-*.json in $DIR" >&2; exit 2; }
CAL=(--calibration results/h100-counters/validated/calibration.json)
[ -f "$DIR/calibration.json" ] && CAL+=(--calibration "$DIR/calibration.json")

tps compare "${H100_STEPS[@]}" "${H100_LAYERS[@]}" "${H200[@]}" "${CAL[@]}" --markdown "$DIR/compare.md" \
  > "$DIR/compare.txt"
tps compare "${H100_STEPS[@]}" "${H100_LAYERS[@]}" "${H200[@]}" "${CAL[@]}" --json > "$DIR/compare.json"
tps plot "${H100_STEPS[@]}" "${H100_LAYERS[@]}" "${H200[@]}" -o "$DIR/roofline.png" > /dev/null
tps validate "${H200[@]}" > "$DIR/validate.txt"
for run in "$DIR"/layers-*.json; do
  model=$(basename "$run" .json); model=${model#layers-}
  case $model in *-outlier) continue ;; esac  # the outlier experiment, not a baseline
  base="$BASELINES/h200-$model-moe-layer.json"
  cp "$run" "$base"
  rc=0; tps check --baseline "$base" --current "$run" --markdown "$DIR/check-$model.md" > /dev/null || rc=$?
  echo "check $model against $base: exit $rc"
done
echo "report: $DIR/compare.md, compare.json, roofline.png, validate.txt, check-*.md"
