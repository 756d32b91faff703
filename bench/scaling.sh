#!/usr/bin/env bash
# What data parallelism would give on a cluster, from what this machine measures: each shipped config's step
# time on one process (qkv bench, median of ROUNDS) and its gradient size, into the ring all-reduce model.
# A ring all-reduce moves 2(N-1)/N x gradient bytes through each link per step in 2(N-1) messages, so with
# global batch fixed (train.batch_size is the global batch) a step on N ranks takes
#   T(N) = T(1)/N + 2(N-1)/N * bytes / bandwidth + 2(N-1) * latency
# and the scaling efficiency is T(1) / (N * T(N)). No overlap of communication with backward is assumed.
# Usage: bench/scaling.sh [ROUNDS]  (from the repository root, after make build)
set -euo pipefail
ROUNDS=${1:-3}
QKV=build/bin/qkv
LATENCY_US=${LATENCY_US:-10}  # per message, a typical TCP/RoCE figure
echo "| config | parameters | gradient MB | step ms, 1 process | 10 Gb/s: N = 2 / 4 / 8 / 16 / 32 / 64 | 100 Gb/s: N = 2 / 4 / 8 / 16 / 32 / 64 |"
echo "|---|---|---|---|---|---|"
for cfg in configs/*.toml bench/configs/*.toml; do
  params=$($QKV info "$cfg" | awk '/^parameters:/ {print $2}')
  rates=()
  for _ in $(seq "$ROUNDS"); do
    rates+=("$($QKV bench "$cfg" --steps 10 --warmup 2 | grep -o 'steps_per_s=[0-9.]*' | cut -d= -f2)")
  done
  rate=$(printf '%s\n' "${rates[@]}" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
  awk -v p="$params" -v r="$rate" -v lat="$LATENCY_US" -v cfg="$cfg" 'BEGIN {
    bytes = 4 * p; t1 = 1 / r
    for (i = 0; i < 2; i++) {
      bw = (i == 0 ? 10e9 : 100e9) / 8; row[i] = ""
      for (n = 2; n <= 64; n *= 2) {
        tn = t1 / n + 2 * (n - 1) / n * bytes / bw + 2 * (n - 1) * lat * 1e-6
        row[i] = row[i] sprintf("%s%.0f%%", n == 2 ? "" : " / ", 100 * t1 / (n * tn))
      }
    }
    printf "| %s | %d | %.2f | %.1f | %s | %s |\n", cfg, p, bytes / 1e6, 1000 * t1, row[0], row[1] }'
done
