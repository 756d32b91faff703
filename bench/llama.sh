#!/usr/bin/env bash
# SmolLM2-135M's shape (bench/configs/llama.toml, Hugging Face's initialisation): parameters and FLOPs per token
# from `qkv info`; training tokens/s and peak RSS at batch 4 x 256, qkv and libtorch alternating (medians of RUNS;
# libtorch gets its best setting, bench/lib.sh); then cached generation with `qkv sample` over a 2048-token
# context (tokens/s from a 1-token prompt to 2048 tokens, the time to the first token taken off).
#   bench/llama.sh [RUNS] [STEPS]        default 3 runs of 2 timed steps
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
RUNS=${1:-3}
STEPS_LLAMA=${2:-2}
QKV=$BUILD/bin/qkv
TORCH=$BUILD/bin/bench_libtorch
[ -x "$QKV" ] || { echo "build qkv first (make build)" >&2; exit 2; }
. bench/lib.sh  # field, median, qkv_env, torch_env
CONFIG=bench/configs/llama.toml
CORES=$(nproc)

"$QKV" info "$CONFIG" | grep -E '^(parameters|forward FLOPs per token):'
print_cpu
train_vs_libtorch "$CONFIG" llama "$RUNS" "$STEPS_LLAMA"

# Cached generation over a 2048-token context: a model file of the config's initialisation with room for it.
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$QKV" init "$CONFIG" model.positions=2048 --out "$OUT/llama.safetensors" > /dev/null
seconds() {
  local s e
  s=$(date +%s.%N)
  "$QKV" sample "$OUT/llama.safetensors" --ids 1 --length "$1" --temperature 0 > /dev/null
  e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}
first=$(seconds 1)
all=$(seconds 2047)
printf "cached generation, context 1 to 2048: %.1f tokens/s (first token after %.1f s)\n" \
  "$(echo "2046 / ($all - $first)" | bc -l)" "$first"
