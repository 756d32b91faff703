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
printf "CPU: %s, %s cores%s\n" "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)" "$CORES" \
  "$(grep -q avx512f /proc/cpuinfo && echo ", AVX-512" || echo ", no AVX-512")"

printf "%-8s %12s %12s %7s %10s %10s\n" "" "qkv tok/s" "torch tok/s" ratio "qkv MB" "torch MB"
q_tps=(); q_rss=(); t_tps=(); t_rss=()
for ((i = 0; i < RUNS; i++)); do
  out=$(qkv_env "$QKV" bench "$CONFIG" --steps "$STEPS_GPT2" --warmup 1)
  q_tps+=("$(echo "$out" | field tokens_per_s)"); q_rss+=("$(echo "$out" | field peak_rss_mb)")
  if [ -x "$TORCH" ]; then
    out=$(torch_env "$TORCH" gpt2 --steps "$STEPS_GPT2" --warmup 1 --threads "$CORES")
    t_tps+=("$(echo "$out" | field tokens_per_s)"); t_rss+=("$(echo "$out" | field peak_rss_mb)")
  fi
done
qt=$(printf "%s\n" "${q_tps[@]}" | median); qr=$(printf "%s\n" "${q_rss[@]}" | median)
if [ ${#t_tps[@]} -gt 0 ]; then
  tt=$(printf "%s\n" "${t_tps[@]}" | median); tr=$(printf "%s\n" "${t_rss[@]}" | median)
  printf "%-8s %12.1f %12.1f %6.2fx %10.1f %10.1f\n" train "$qt" "$tt" "$(echo "$qt / $tt" | bc -l)" "$qr" "$tr"
else
  printf "%-8s %12.1f %12s %7s %10.1f %10s\n" train "$qt" "-" "-" "$qr" "(no bench_libtorch: apt-get install libtorch-dev)"
fi

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
