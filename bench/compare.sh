#!/usr/bin/env bash
# Side-by-side training throughput of qkv and libtorch on the reference configs, run alternately so both see
# the same machine state; prints medians and ratios. libtorch gets its best setting: torch threads = cores,
# OPENBLAS_NUM_THREADS=1, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (for its command only). qkv's OpenBLAS
# engine reads the last two as well, so its command runs with them unset too: both use the kernels OpenBLAS picks
# for this CPU. THREADS=1 runs both on one thread (the single-thread table). PRECISION=bf16 runs qkv with
# train.precision = "bf16" and libtorch under CPU autocast to bfloat16.
#   bench/compare.sh [RUNS] [CONFIGS...]     e.g. bench/compare.sh 5 tiny small medium
#   THREADS=1 bench/compare.sh 5
#   PRECISION=bf16 bench/compare.sh 5 medium large
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RUNS=${1:-5}
shift || true
CONFIGS=${*:-tiny small medium}
QKV=$BUILD/bin/qkv
TORCH=$BUILD/bin/bench_libtorch
[ -x "$QKV" ] || { echo "build qkv first (make build)" >&2; exit 2; }
[ -x "$TORCH" ] || { echo "bench_libtorch is not built: apt-get install libtorch-dev libopenblas0-pthread, then make build" >&2; exit 2; }
CORES=$(nproc)
THREADS=${THREADS:-0}  # qkv's train.threads (0: its default); libtorch gets THREADS, else the core count
TORCH_THREADS=$([ "$THREADS" = 0 ] && echo "$CORES" || echo "$THREADS")
PRECISION=${PRECISION:-fp32}
TORCH_BF16=$([ "$PRECISION" = bf16 ] && echo 1 || echo 0)
. bench/lib.sh  # field, median, qkv_env, torch_env, STEPS

echo "precision: $PRECISION"
printf "%-7s %12s %12s %7s %10s %10s\n" config "qkv step/s" "torch step/s" ratio "qkv MB" "torch MB"
for c in $CONFIGS; do
  q_sps=(); q_rss=(); t_sps=(); t_rss=()
  for ((i = 0; i < RUNS; i++)); do
    out=$(qkv_env "$QKV" bench "bench/configs/$c.toml" --steps "${STEPS[$c]}" --warmup 3 "train.threads=$THREADS" "train.precision=$PRECISION")
    q_sps+=("$(echo "$out" | field steps_per_s)"); q_rss+=("$(echo "$out" | field peak_rss_mb)")
    out=$(torch_env "$TORCH" "$c" --steps "${STEPS[$c]}" --warmup 3 --threads "$TORCH_THREADS" --bf16 "$TORCH_BF16")
    t_sps+=("$(echo "$out" | field steps_per_s)"); t_rss+=("$(echo "$out" | field peak_rss_mb)")
  done
  qs=$(printf "%s\n" "${q_sps[@]}" | median); ts=$(printf "%s\n" "${t_sps[@]}" | median)
  qr=$(printf "%s\n" "${q_rss[@]}" | median); tr=$(printf "%s\n" "${t_rss[@]}" | median)
  printf "%-7s %12.1f %12.1f %6.2fx %10.1f %10.1f\n" "$c" "$qs" "$ts" "$(echo "$qs / $ts" | bc -l)" "$qr" "$tr"
done
# The machine's state that decides whether a second thread helps the tiny step (bench_core's BM_SharedLineWrite):
# on a cloud VM it changes when the host moves the vCPUs, so it is printed with every table.
if [ -x "$BUILD/bin/bench_core" ]; then
  lines=$("$BUILD/bin/bench_core" --benchmark_filter=SharedLineWrite --benchmark_min_time=0.2 2>/dev/null | field ns_per_line)
  printf "cross-core: writing a line only this core read %.1f ns, one another core read too %.1f ns\n" $lines
fi
