#!/usr/bin/env bash
# Learning parity of train.precision = "bf16" with float32: each config trained twice with the same seed and
# steps (target accuracy off, so both run every step), and the final validation loss of each, with the
# relative difference. The curves are each run's metrics.jsonl, kept under OUT (default: a temporary folder).
#   bench/bf16_parity.sh [CONFIG:STEPS ...]
#   e.g. bench/bf16_parity.sh configs/reverse.toml:300 configs/sort.toml:1500 bench/configs/medium.toml:200
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
QKV=$BUILD/bin/qkv
[ -x "$QKV" ] || { echo "build qkv first (make build)" >&2; exit 2; }
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
RUNS=${*:-configs/reverse.toml:300 configs/sort.toml:1500 configs/recall.toml:1500 bench/configs/small.toml:300 bench/configs/medium.toml:150}
# The last validation loss in a run's metrics.
val_loss() { grep '"split":"val"' "$1/metrics.jsonl" | tail -1 | sed -n 's/.*"loss":\([^,}]*\).*/\1/p'; }
val_acc() { grep '"split":"val"' "$1/metrics.jsonl" | tail -1 | sed -n 's/.*"seq_acc":\([^,}]*\).*/\1/p'; }
printf "%-28s %6s %12s %12s %9s %9s %9s\n" config steps "fp32 loss" "bf16 loss" "rel diff" "fp32 acc" "bf16 acc"
for run in $RUNS; do
  cfg=${run%%:*} steps=${run##*:} name=$(basename "$cfg" .toml)
  for p in fp32 bf16; do
    "$QKV" train "$cfg" "train.steps=$steps" "train.eval_every=$((steps / 10))" train.target_accuracy=0 \
      "train.precision=\"$p\"" "run.out_dir=\"$OUT\"" "run.name=\"$name-$p\"" --force > /dev/null 2> "$OUT/$name-$p.err" ||
      { cat "$OUT/$name-$p.err" >&2; exit 1; }
  done
  f=$(val_loss "$OUT/$name-fp32") b=$(val_loss "$OUT/$name-bf16")
  printf "%-28s %6d %12.6f %12.6f %8.2f%% %9.4f %9.4f\n" "$cfg" "$steps" "$f" "$b" \
    "$(echo "($b - $f) / $f * 100" | bc -l)" "$(val_acc "$OUT/$name-fp32")" "$(val_acc "$OUT/$name-bf16")"
done
echo "runs (metrics.jsonl: the curves) in $OUT"
