#!/usr/bin/env bash
# What model.recompute and train.grad_accum_steps trade: tokens/s and peak RSS of `qkv bench` (medians of RUNS,
# the variants alternating) for each config at its batch and at 8 times its batch, plain, with recompute, in
# 8 micro-batches, and both; the precision is PRECISION (default fp32).
#   bench/memory.sh [RUNS] [CONFIGS...]     e.g. bench/memory.sh 3 medium large
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RUNS=${1:-3}
shift || true
CONFIGS=${*:-medium large}
QKV=$BUILD/bin/qkv
[ -x "$QKV" ] || { echo "build qkv first (make build)" >&2; exit 2; }
PRECISION=${PRECISION:-fp32}
. bench/lib.sh  # field, median, qkv_env
batch_of() { sed -n 's/^batch_size = //p' "bench/configs/$1.toml"; }
printf "%-7s %-38s %10s %10s %9s\n" config variant "tokens/s" "peak MB" "vs plain"
for c in $CONFIGS; do
  b=$(batch_of "$c")
  variants=("train.batch_size=$b" "train.batch_size=$b model.recompute=true"
            "train.batch_size=$((8 * b))" "train.batch_size=$((8 * b)) model.recompute=true"
            "train.batch_size=$((8 * b)) train.grad_accum_steps=8"
            "train.batch_size=$((8 * b)) train.grad_accum_steps=8 model.recompute=true")
  declare -A tps=() rss=()
  for ((i = 0; i < RUNS; i++)); do
    for v in "${variants[@]}"; do
      steps=$(( ${STEPS[$c]} / ($(echo "$v" | grep -q "$((8 * b))" && echo 8 || echo 1)) ))
      out=$(qkv_env "$QKV" bench "bench/configs/$c.toml" --steps $((steps > 1 ? steps : 1)) --warmup 1 $v "train.precision=$PRECISION")
      tps[$v]+="$(echo "$out" | field tokens_per_s) "; rss[$v]+="$(echo "$out" | field peak_rss_mb) "
    done
  done
  for v in "${variants[@]}"; do
    t=$(printf "%s\n" ${tps[$v]} | median); r=$(printf "%s\n" ${rss[$v]} | median)
    [[ "$v" == "train.batch_size=$b" ]] && base=$t
    printf "%-7s %-38s %10.0f %10.0f %8.2fx\n" "$c" "${v//train./}" "$t" "$r" "$(echo "$t / $base" | bc -l)"
  done
  unset tps rss
done
