#!/usr/bin/env bash
# Long sequences at a constant B·T = 4096 tokens per step: steps/s and peak RSS of `qkv bench` on
# bench/configs/small.toml against its libtorch twin (when built), alternating runs, medians.
# libtorch gets its best setting (torch threads = cores, OPENBLAS_NUM_THREADS=1); both run with OPENBLAS_CORETYPE
# and OPENBLAS_L2_SIZE unset (bench/lib.sh).
#   bench/long_sequences.sh [RUNS] [T...]      e.g. bench/long_sequences.sh 3 64 256 1024 2048 4096
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RUNS=${1:-3}
shift || true
LENGTHS=${*:-64 256 1024 2048 4096}
QKV=$BUILD/bin/qkv
TORCH=$BUILD/bin/bench_libtorch
[ -x "$QKV" ] || { echo "build qkv first (make build)" >&2; exit 2; }
CORES=$(nproc)

. bench/lib.sh  # field, median, qkv_env, torch_env

printf "%-11s %12s %9s %14s %9s %7s\n" "T x B" "qkv step/s" "qkv MB" "torch step/s" "torch MB" ratio
for t in $LENGTHS; do
  b=$((4096 / t))
  q_sps=(); q_rss=(); t_sps=(); t_rss=()
  for ((i = 0; i < RUNS; i++)); do
    out=$(qkv_env "$QKV" bench bench/configs/small.toml "data.seq_len=$t" "train.batch_size=$b" --steps 3 --warmup 2)
    q_sps+=("$(echo "$out" | field steps_per_s)"); q_rss+=("$(echo "$out" | field peak_rss_mb)")
    if [ -x "$TORCH" ]; then
      out=$(torch_env "$TORCH" small --seq "$t" --batch "$b" --steps 3 --warmup 2 --threads "$CORES")
      t_sps+=("$(echo "$out" | field steps_per_s)"); t_rss+=("$(echo "$out" | field peak_rss_mb)")
    fi
  done
  qs=$(printf "%s\n" "${q_sps[@]}" | median); qr=$(printf "%s\n" "${q_rss[@]}" | median)
  if [ -x "$TORCH" ]; then
    ts=$(printf "%s\n" "${t_sps[@]}" | median); tr=$(printf "%s\n" "${t_rss[@]}" | median)
    printf "%-11s %12.2f %9.0f %14.2f %9.0f %6.2fx\n" "$t x $b" "$qs" "$qr" "$ts" "$tr" "$(echo "$qs / $ts" | bc -l)"
  else
    printf "%-11s %12.2f %9.0f %14s %9s %7s\n" "$t x $b" "$qs" "$qr" - - -
  fi
done
