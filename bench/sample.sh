#!/usr/bin/env bash
# Generation speed with and without the key/value cache: tokens/s of `qkv sample` (medians of RUNS, the two
# modes alternating) on the causal character model of configs/text.toml with a positional table of 1024 tokens.
# The weights come from one training step: speed does not depend on them. Checks that both modes print the
# same text. Prompt time is included: that is what a user waits for.
#   bench/sample.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
QKV=$BUILD/bin/qkv
RUNS=${1:-3}
[ -x "$QKV" ] || { echo "build qkv first (make build)" >&2; exit 2; }
TEXT=/usr/share/common-licenses/GPL-3
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
"$QKV" train configs/text.toml data.seq_len=1024 data.val_size=2 train.steps=1 train.batch_size=2 \
  schedule.warmup_steps=0 run.out_dir="\"$OUT\"" run.name='"m"' > /dev/null 2> "$OUT/train.log" ||
  { cat "$OUT/train.log" >&2; exit 1; }

. bench/lib.sh  # median
# seconds of one `qkv sample`; its text goes to $OUT/$4.txt
seconds() {
  local s e
  s=$(date +%s.%N)
  "$QKV" sample "$OUT/m" --prompt "$1" --length "$2" --seed 0 $3 > "$OUT/$4.txt"
  e=$(date +%s.%N)
  echo "$e - $s" | bc -l
}

# Generation tokens/s exclude the time to the first token (start-up, loading, the prompt's forward: what
# --length 1 takes with the cache), shown apart.
printf "%-7s %-7s %15s %14s %14s %7s\n" prompt tokens "first token ms" "cached tok/s" "no-cache tok/s" ratio
for case in "16 1000" "16 200" "400 200" "800 200"; do
  read -r plen n <<< "$case"
  prompt=$(head -c "$plen" "$TEXT")
  z=(); c=(); u=()
  for ((i = 0; i < RUNS; i++)); do
    z+=("$(seconds "$prompt" 1 "" first)")
    c+=("$(seconds "$prompt" "$n" "" cached)")
    u+=("$(seconds "$prompt" "$n" --no-cache uncached)")
  done
  cmp -s "$OUT/cached.txt" "$OUT/uncached.txt" || { echo "cached and uncached text differ (prompt $plen)" >&2; exit 1; }
  zm=$(printf "%s\n" "${z[@]}" | median); cm=$(printf "%s\n" "${c[@]}" | median); um=$(printf "%s\n" "${u[@]}" | median)
  cr=$(echo "($n - 1) / ($cm - $zm)" | bc -l); ur=$(echo "($n - 1) / ($um - $zm)" | bc -l)
  printf "%-7s %-7s %15.0f %14.0f %14.0f %6.1fx\n" "$plen" "$n" "$(echo "$zm * 1000" | bc -l)" "$cr" "$ur" \
    "$(echo "$cr / $ur" | bc -l)"
done
