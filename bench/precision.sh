#!/usr/bin/env bash
# bf16 against float32, qkv against libtorch, in one run: for each config, RUNS rounds of four alternating
# commands (qkv fp32, qkv bf16, libtorch fp32, libtorch under CPU autocast to bf16; libtorch at its best setting,
# bench/lib.sh). Prints median steps/s and peak RSS, and the ratios bf16 / fp32 for each framework and qkv /
# libtorch for each precision.
#   bench/precision.sh [RUNS] [CONFIGS...]     e.g. bench/precision.sh 3 small medium large
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RUNS=${1:-3}
shift || true
CONFIGS=${*:-small medium large}
QKV=$BUILD/bin/qkv
TORCH=$BUILD/bin/bench_libtorch
[ -x "$QKV" ] || { echo "build qkv first (make build)" >&2; exit 2; }
[ -x "$TORCH" ] || { echo "bench_libtorch is not built: apt-get install libtorch-dev libopenblas0-pthread, then make build" >&2; exit 2; }
CORES=$(nproc)
. bench/lib.sh  # field, median, qkv_env, torch_env, STEPS
"$QKV" info configs/reverse.toml train.precision=bf16 | grep '^precision:'
printf "%-7s %9s %9s %7s %9s %9s %7s %9s %9s %8s %8s\n" config "qkv fp32" "qkv bf16" "bf16x" "torch fp32" "torch bf16" \
  "bf16x" "qkv/t fp32" "qkv/t bf16" "qkv MB" "torch MB"
for c in $CONFIGS; do
  declare -A sps=() rss=()
  for ((i = 0; i < RUNS; i++)); do
    for p in fp32 bf16; do
      out=$(qkv_env "$QKV" bench "bench/configs/$c.toml" --steps "${STEPS[$c]}" --warmup 2 "train.precision=$p")
      sps[q$p]+="$(echo "$out" | field steps_per_s) "; rss[q$p]+="$(echo "$out" | field peak_rss_mb) "
      out=$(torch_env "$TORCH" "$c" --steps "${STEPS[$c]}" --warmup 2 --threads "$CORES" --bf16 "$([ $p = bf16 ] && echo 1 || echo 0)")
      sps[t$p]+="$(echo "$out" | field steps_per_s) "; rss[t$p]+="$(echo "$out" | field peak_rss_mb) "
    done
  done
  m() { printf "%s\n" ${sps[$1]} | median; }
  r() { printf "%s\n" ${rss[$1]} | median; }
  qf=$(m qfp32) qb=$(m qbf16) tf=$(m tfp32) tb=$(m tbf16)
  printf "%-7s %9.2f %9.2f %6.2fx %9.2f %9.2f %6.2fx %8.2fx %8.2fx %8.0f %8.0f\n" "$c" "$qf" "$qb" \
    "$(echo "$qb / $qf" | bc -l)" "$tf" "$tb" "$(echo "$tb / $tf" | bc -l)" "$(echo "$qf / $tf" | bc -l)" \
    "$(echo "$qb / $tb" | bc -l)" "$(r qbf16)" "$(r tbf16)"
  unset sps rss
done
