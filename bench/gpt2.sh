#!/usr/bin/env bash
# GPT-2 small's shape (124M parameters, bench/configs/gpt2.toml, random GPT-2 initialisation): parameters and
# FLOPs per token from `qkv info`; training tokens/s and peak RSS at batch 4 x 1024, qkv and libtorch alternating
# (medians of RUNS; libtorch gets its best setting, bench/lib.sh); then cached generation with `qkv sample`:
# tokens/s from a 1-token prompt to a full 1024-token context (the time to the first token taken off).
#   bench/gpt2.sh [RUNS] [STEPS]        default 3 runs of 2 timed steps (a step is tens of seconds on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RUNS=${1:-3}
STEPS_GPT2=${2:-2}
QKV=$BUILD/bin/qkv
TORCH=$BUILD/bin/bench_libtorch
[ -x "$QKV" ] || { echo "build qkv first (make build)" >&2; exit 2; }
. bench/lib.sh  # field, median, qkv_env, torch_env
CONFIG=bench/configs/gpt2.toml
CORES=$(nproc)

"$QKV" info "$CONFIG" | grep -E '^(parameters|forward FLOPs per token):'
print_cpu
train_vs_libtorch "$CONFIG" gpt2 "$RUNS" "$STEPS_GPT2"

# Cached generation: a model file of the config's initialisation, then 1023 tokens after a 1-token prompt.
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$QKV" init "$CONFIG" --out "$OUT/gpt2.safetensors" > /dev/null
seconds() {
  local s e
  s=$(date +%s.%N)
  "$QKV" sample "$OUT/gpt2.safetensors" --ids 464 --length "$1" --temperature 0 > /dev/null
  e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}
g=()
for ((i = 0; i < RUNS; i++)); do
  first=$(seconds 1)
  all=$(seconds 1023)
  g+=("$(echo "1022 / ($all - $first)" | bc -l)")
done
printf "cached generation, context 1 to 1024: %.1f tokens/s (median of %d)\n" "$(printf "%s\n" "${g[@]}" | median)" "$RUNS"
