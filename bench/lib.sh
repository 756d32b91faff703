# Helpers the bench scripts share (sourced, not run).

# Timed steps per reference config (bench/configs/): a few seconds each.
declare -A STEPS=([tiny]=400 [small]=40 [medium]=12 [large]=4)

# The value of key=value in qkv's and bench_libtorch's output lines: `... | field steps_per_s`.
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
# The median of the numbers on stdin, one per line.
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# The environments the two frameworks' commands run in. libtorch gets its best setting: OPENBLAS_NUM_THREADS=1
# (its own threads do the splitting), OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset. qkv's OpenBLAS engine reads
# the last two as well, so they are unset for qkv too: both use the kernels OpenBLAS picks for this CPU.
qkv_env() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$@"; }
torch_env() { env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OPENBLAS_NUM_THREADS=1 "$@"; }

# A model's training tokens/s and peak RSS, qkv (`qkv bench CONFIG`) and libtorch (`bench_libtorch SHAPE`)
# alternating RUNS times, STEPS timed steps each after one warmup; prints one table row of medians and ratios.
#   train_vs_libtorch CONFIG SHAPE RUNS STEPS       (uses $QKV, $TORCH, $CORES)
train_vs_libtorch() {
  local config=$1 shape=$2 runs=$3 steps=$4 out qt qr tt tr i
  local q_tps=() q_rss=() t_tps=() t_rss=()
  printf "%-8s %12s %12s %7s %10s %10s\n" "" "qkv tok/s" "torch tok/s" ratio "qkv MB" "torch MB"
  for ((i = 0; i < runs; i++)); do
    out=$(qkv_env "$QKV" bench "$config" --steps "$steps" --warmup 1)
    q_tps+=("$(echo "$out" | field tokens_per_s)"); q_rss+=("$(echo "$out" | field peak_rss_mb)")
    if [ -x "$TORCH" ]; then
      out=$(torch_env "$TORCH" "$shape" --steps "$steps" --warmup 1 --threads "$CORES")
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
}

# The machine a figure comes from.
print_cpu() {
  printf "CPU: %s, %s cores%s\n" "$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)" "$(nproc)" \
    "$(grep -q avx512f /proc/cpuinfo && echo ", AVX-512" || echo ", no AVX-512")"
}
