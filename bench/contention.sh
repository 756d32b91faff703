#!/usr/bin/env bash
# Training speed on a quiet and on a busy machine (one competing process spinning on a core), with 1 thread and
# with the default thread count, for qkv and libtorch, run alternately; prints medians and default/1-thread.
# libtorch's default is its best setting as in compare.sh (threads = cores, OPENBLAS_NUM_THREADS=1); both run
# with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset (bench/lib.sh).
#   bench/contention.sh [RUNS] [CONFIG]      e.g. bench/contention.sh 5 small
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RUNS=${1:-5}
CONFIG=${2:-small}
QKV=$BUILD/bin/qkv
TORCH=$BUILD/bin/bench_libtorch
[ -x "$QKV" ] || { echo "build qkv first (make build)" >&2; exit 2; }
CORES=$(nproc)
. bench/lib.sh  # field, median, qkv_env, torch_env, STEPS
STEPS_N=${STEPS[$CONFIG]:-40}

qkv_run() { qkv_env "$QKV" bench "bench/configs/$CONFIG.toml" --steps "$STEPS_N" --warmup 3 "train.threads=$1" | field steps_per_s; }
torch_run() {
  torch_env "$TORCH" "$CONFIG" --steps "$STEPS_N" --warmup 3 --threads "$1" | field steps_per_s
}
BUSY=""
trap '[ -n "$BUSY" ] && kill "$BUSY" 2>/dev/null || true' EXIT

printf "%-6s %-9s %12s %12s %10s\n" load framework "1 thread" "default" "default/1"
for load in quiet busy; do
  if [ "$load" = busy ]; then sh -c 'while :; do :; done' & BUSY=$!; fi
  q1=(); qd=(); t1=(); td=()
  for ((i = 0; i < RUNS; i++)); do
    q1+=("$(qkv_run 1)"); qd+=("$(qkv_run 0)")
    if [ -x "$TORCH" ]; then t1+=("$(torch_run 1)"); td+=("$(torch_run "$CORES")"); fi
  done
  for fw in qkv libtorch; do
    if [ "$fw" = qkv ]; then a=$(printf "%s\n" "${q1[@]}" | median); b=$(printf "%s\n" "${qd[@]}" | median)
    else [ -x "$TORCH" ] || continue; a=$(printf "%s\n" "${t1[@]}" | median); b=$(printf "%s\n" "${td[@]}" | median); fi
    printf "%-6s %-9s %12.1f %12.1f %9.0f%%\n" "$load" "$fw" "$a" "$b" "$(echo "100 * $b / $a" | bc -l)"
  done
  if [ -n "$BUSY" ]; then kill "$BUSY"; BUSY=""; fi
done
echo "($CONFIG config, $STEPS_N steps, medians of $RUNS alternating runs; default = train.threads 0 for qkv, $CORES for libtorch)"
