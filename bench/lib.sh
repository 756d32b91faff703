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
