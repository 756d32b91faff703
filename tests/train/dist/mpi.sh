#!/usr/bin/env bash
# Data parallel training under mpirun (--oversubscribe, so it runs on 2 cores): N ranks follow the 1-process run,
# plain and sharded (ZeRO-1), resume works with a different N, a batch that does not split evenly is one clear
# error, Ctrl-C and a killed rank end the job cleanly, bench reports the communication share. Usage: mpi.sh QKV_BINARY WORK_DIR SOURCE_DIR
set -u
source "$3/tests/train/checks.sh"
enter_work "$@"  # QKV, WORK (made anew, the current directory), SRC
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,vader ASAN_OPTIONS=detect_leaks=0
MPIRUN=(mpirun --oversubscribe --bind-to none)
CFG="$SRC/configs/sort.toml"
# 60 steps with a loss line each; dropout 0 (the config's). Batch 12 splits over 1, 2 and 3 ranks.
COMMON=("run.out_dir=\"$WORK\"" "train.steps=60" "train.log_every=1" "train.eval_every=60" "train.batch_size=12"
        "train.threads=1" "schedule.warmup_steps=10" "train.checkpoint_every=30" "optim.clip_grad_norm=1.0")
losses() { grep '"split":"train"' "$1/metrics.jsonl" | grep -o '"loss":[^,}]*' | cut -d: -f2; }
val_acc() { grep '"split":"val"' "$1/metrics.jsonl" | tail -1 | grep -o '"token_acc":[^,}]*' | cut -d: -f2; }
# The first 50 losses of run $2 within 1e-5 relative of run $1's, and the same final validation accuracy.
same_run() {
  [ "$(losses "$2" | wc -l)" = 60 ] || { echo "$2: expected 60 train lines"; return 1; }
  paste <(losses "$1" | head -50) <(losses "$2" | head -50) |
    awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-5 * ($1 < 0 ? -$1 : $1)) { print "step " NR ": " $1 " vs " $2; bad = 1 } }
         END { exit bad }' || return 1
  [ "$(val_acc "$1")" = "$(val_acc "$2")" ] || { echo "validation accuracy $(val_acc "$1") vs $(val_acc "$2")"; return 1; }
}

"$QKV" train "$CFG" "${COMMON[@]}" run.name=\"one\" >/dev/null 2>one.err
check "1 process trains" [ -f one/model.safetensors ]
for n in 2 3; do
  "${MPIRUN[@]}" -np $n "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"np$n\" >np$n.out 2>np$n.err
  code=$?
  check "np $n: exit 0 (got $code)" [ "$code" = 0 ]
  check "np $n follows the 1-process run" same_run one np$n
  check "np $n: rank 0 alone reports" [ "$(grep -c "^Trained 60 steps" np$n.out)" = 1 ]
done

# Dropout: each rank draws the masks of its own rows of the batch, as the 1-process run draws them (they
# differed by 3e-3 in the loss when every rank drew the same stream for its slice).
"$QKV" train "$CFG" "${COMMON[@]}" model.dropout=0.1 run.name=\"drop1\" >/dev/null 2>drop1.err
for n in 2 3; do
  "${MPIRUN[@]}" -np $n "$QKV" train "$CFG" "${COMMON[@]}" model.dropout=0.1 run.name=\"drop$n\" >drop$n.out 2>drop$n.err
  check "dropout 0.1, np $n follows the 1-process run" same_run drop1 drop$n
done

# Gradient accumulation (train.grad_accum_steps): 2 ranks of 3 micro-batches of 2 rows each, with dropout, plain
# and sharded: the gradients summed over micro-batches and then (once per step) over ranks follow the 1-process
# whole-batch run.
for extra in "optim.shard=false" "optim.shard=true"; do
  "${MPIRUN[@]}" -np 2 "$QKV" train "$CFG" "${COMMON[@]}" model.dropout=0.1 train.grad_accum_steps=3 $extra \
    run.name=\"accum_${extra#*=}\" >accum.out 2>accum.err
  check "grad_accum_steps 3, np 2, $extra: exit 0" [ $? = 0 ]
  check "grad_accum_steps 3, np 2, $extra follows the 1-process run" same_run drop1 accum_${extra#*=}
done
# A rank's slice that the micro-batches do not divide (12 / 3 ranks = 4 rows, 3 micro-batches): exit 2, said once.
"${MPIRUN[@]}" -np 3 "$QKV" train "$CFG" "${COMMON[@]}" train.grad_accum_steps=3 run.name=\"accum_odd\" >accum_odd.out 2>accum_odd.err
code=$?
check "grad_accum_steps 3 on 3 ranks of 4 rows: exit 2 (got $code)" [ "$code" = 2 ]
check "grad_accum_steps 3 on 3 ranks of 4 rows: one message" \
  [ "$(grep -c "train.grad_accum_steps = 3 does not divide the 4 sequences each of the 3 ranks" accum_odd.err)" = 1 ]

# data.task = "tokens": every rank draws every row's window and reads only its own rows; the same trajectory.
printf 'The query of each token attends to every key, and the values are summed.\n%.0s' $(seq 400) > corpus.txt
"$QKV" tokenize corpus.txt --out tokens --val-fraction 0.2 >/dev/null
TOK=("run.out_dir=\"$WORK\"" "train.steps=60" "train.log_every=1" "train.eval_every=60" "train.batch_size=12"
     "train.threads=1" "data.path=\"$WORK/tokens\"" "data.seq_len=16" "model.d_model=16" "model.heads=2"
     "model.dropout=0" "schedule.warmup_steps=10")
"$QKV" train "$SRC/configs/tokens.toml" "${TOK[@]}" run.name=\"tok1\" >/dev/null 2>tok1.err
"${MPIRUN[@]}" -np 2 "$QKV" train "$SRC/configs/tokens.toml" "${TOK[@]}" run.name=\"tok2\" >tok2.out 2>tok2.err
check "tokens, np 2: exit 0" [ $? = 0 ]
check "tokens, np 2 follows the 1-process run" same_run tok1 tok2

# Gradient buckets: one sum after backward (0), and a bucket per parameter or so (1 kB), started during backward.
for b in "2 0" "3 0.001"; do
  set -- $b
  "${MPIRUN[@]}" -np $1 "$QKV" train "$CFG" "${COMMON[@]}" train.bucket_mb=$2 run.name=\"bucket$1\" >bucket$1.out 2>&1
  check "np $1, train.bucket_mb = $2: exit 0" [ $? = 0 ]
  check "np $1, train.bucket_mb = $2 follows the 1-process run" same_run one bucket$1
done

# ZeRO-1 (optim.shard): the same trajectory, each rank holding 1/N of the optimizer state.
for n in 2 3; do
  "${MPIRUN[@]}" -np $n "$QKV" train "$CFG" "${COMMON[@]}" optim.shard=true run.name=\"shard$n\" >shard$n.out 2>shard$n.err
  check "sharded np $n: exit 0" [ $? = 0 ]
  check "sharded np $n follows the 1-process run" same_run one shard$n
  check "sharded np $n: rank 0 holds 1/$n of the optimizer state" \
    grep -q "over all $n ranks ($((100 / n))% here)" shard$n/train.log
done
# Its checkpoints hold every parameter's state (gathered on rank 0): resuming the 2-rank sharded run's step 30
# on 3 sharded ranks, and on one process, both give the uninterrupted run.
for target in "3 shard" "1 plain"; do
  set -- $target
  cp -r shard2 resumed_$2
  rm resumed_$2/checkpoints/step_000000060.safetensors resumed_$2/model.safetensors
  if [ "$1" = 1 ]; then
    "$QKV" train --resume "$WORK/resumed_$2" optim.shard=false >resumed_$2.out 2>&1
  else
    "${MPIRUN[@]}" -np 3 "$QKV" train --resume "$WORK/resumed_$2" >resumed_$2.out 2>&1
  fi
  check "sharded checkpoint resumed on $1 rank(s): exit 0" [ $? = 0 ]
  check "sharded checkpoint resumed on $1 rank(s) follows the 1-process run" same_run one resumed_$2
done
# Re-sharded after the resume: each of the 3 ranks keeps only its own third of the state it loaded, so all ranks
# together hold one copy, as the 2-rank run did (not three).
total_of() { sed -n 's/.*, \([0-9.]*\) MB over all.*/\1/p' "$1/train.log" | tail -1; }  # the newest run's
check "sharded checkpoint resumed on 3 ranks: rank 0 holds 1/3 of the state" \
  grep -q "over all 3 ranks (33% here)" resumed_shard/train.log
same_total() { [ -n "$(total_of "$1")" ] && [ "$(total_of "$1")" = "$(total_of "$2")" ]; }
check "sharded checkpoint resumed on 3 ranks: one copy of the state over all ranks ($(total_of shard2) MB)" \
  same_total shard2 resumed_shard

# The weights every rank starts from are rank 0's: here each rank reads a different model.init (the same relative
# path in its own folder), as ranks on machines whose builds initialise differently would start apart.
mkdir -p bcast0 bcast1
"$QKV" init "$CFG" --out bcast0/init.safetensors >/dev/null
"$QKV" init "$CFG" run.seed=7 --out bcast1/init.safetensors >/dev/null
(cd bcast0 && "$QKV" train "$CFG" "${COMMON[@]}" model.init=\"init.safetensors\" run.name=\"bcast_one\" >/dev/null 2>&1)
"${MPIRUN[@]}" -np 2 sh -c 'cd "bcast$OMPI_COMM_WORLD_RANK" && exec "$@"' sh "$QKV" train "$CFG" "${COMMON[@]}" \
  model.init=\"init.safetensors\" run.name=\"bcast_np2\" >bcast.out 2>bcast.err
check "ranks starting from different weights: exit 0 (got $?)" [ -f bcast_np2/model.safetensors ]
check "ranks starting from different weights follow rank 0's 1-process run" same_run bcast_one bcast_np2

# Ignored targets (-100) falling unevenly across ranks: rank 0's rows have 1 target each, rank 1's have 4; the
# loss is still the mean over the global count, as one process computes it.
for i in $(seq 0 119); do
  if [ $((i % 12)) -lt 6 ]; then t="[-100, -100, -100, $((i % 5))]"; else t="[$((i % 5)), 1, 2, 3]"; fi
  echo "{\"input\": [$((i % 7)), 2, 3, 4], \"target\": $t}"
done >uneven.jsonl
UNEVEN=(data.task=\"jsonl\" "data.path=\"$WORK/uneven.jsonl\"" data.seq_len=4 data.vocab_size=8 data.shuffle=false)
"$QKV" train "$CFG" "${COMMON[@]}" "${UNEVEN[@]}" run.name=\"uneven1\" >/dev/null 2>uneven1.err
"${MPIRUN[@]}" -np 2 "$QKV" train "$CFG" "${COMMON[@]}" "${UNEVEN[@]}" run.name=\"uneven2\" >/dev/null 2>uneven2.err
check "uneven ignored targets: np 2 follows the 1-process run" same_run uneven1 uneven2

# Resume on 3 ranks from a 2-rank run's step-30 checkpoint: the same as never stopping.
cp -r np2 resumed
rm resumed/checkpoints/step_000000060.safetensors resumed/model.safetensors
"${MPIRUN[@]}" -np 3 "$QKV" train --resume "$WORK/resumed" >resumed.out 2>resumed.err
check "resume 2 -> 3 ranks: exit 0" [ $? = 0 ]
check "resume 2 -> 3 ranks follows the 1-process run" same_run one resumed

# A global batch that does not split evenly: exit 2, said once (not once per rank).
"${MPIRUN[@]}" -np 3 "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"odd\" train.batch_size=16 >odd.out 2>odd.err
code=$?
check "batch 16 on 3 ranks: exit 2 (got $code)" [ "$code" = 2 ]
check "batch 16 on 3 ranks: one message" [ "$(grep -c "train.batch_size = 16 is not divisible by the 3 ranks" odd.err)" = 1 ]
check "batch 16 on 3 ranks: no run directory" [ ! -e odd ]

# An existing run directory (only rank 0 looks): every rank stops, exit 2, one message.
"${MPIRUN[@]}" -np 2 "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"np2\" >again.out 2>again.err
code=$?
check "existing run: exit 2 (got $code)" [ "$code" = 2 ]
check "existing run: one message" [ "$(grep -c "already exists" again.err)" = 1 ]

# A non-finite loss or gradient norm (global values) stops every rank at the same step: exit 1, said once.
"${MPIRUN[@]}" -np 2 "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"nan\" optim.name=\"sgd\" optim.lr=1000 \
               optim.clip_grad_norm=0 schedule.kind=\"constant\" schedule.warmup_steps=0 >nan.out 2>nan.err
code=$?
check "non-finite loss on 2 ranks: exit 1 (got $code)" [ "$code" = 1 ]
check "non-finite loss on 2 ranks: one message" \
  [ "$(grep -cE "training failed: step [0-9]+: the (loss|gradient norm) is" nan.err)" = 1 ]

# Ranks started with different configs (here rank 1 with another lr): one error naming the rank, exit 2.
"${MPIRUN[@]}" -np 1 "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"mixed\" : \
               -np 1 "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"mixed\" optim.lr=0.1 >mixed.out 2>mixed.err
code=$?
check "different configs: exit 2 (got $code)" [ "$code" = 2 ]
check "different configs: rank 1 named, once" [ "$(grep -c "rank 1 (on [^)]*) has a different config" mixed.err)" = 1 ]

# bench under mpirun: global figures and the communication share.
"${MPIRUN[@]}" -np 2 "$QKV" bench "$CFG" --steps 5 --warmup 1 train.threads=1 >bench.out 2>bench.err
check "bench under mpirun reports ranks and comm_fraction" grep -q "ranks=2 comm_fraction=" bench.out
check "bench: rank 0 alone prints" [ "$(grep -c steps_per_s bench.out)" = 1 ]
check "bench: every gradient bucket started during backward" \
  grep -qE "buckets=([0-9]+) started_in_backward=\1( |$)" bench.out

# Ctrl-C to mpirun: mpirun sends SIGTERM to every rank; they agree on a step, rank 0 writes one checkpoint and
# prints the resume command, and no rank is left. (mpirun itself then exits 1, not 143: that code is mpirun's.)
# The ranks of the mpirun job $1: its child processes running this qkv binary (never a name pattern, which
# could match another job on the machine).
ranks_of() {
  local p
  for p in $(pgrep -P "$1"); do [ "$(readlink -f "/proc/$p/exe")" = "$(readlink -f "$QKV")" ] && echo "$p"; done
}
# True when none of the given processes is still running within 10 s (a zombie no one has reaped yet counts as
# ended: the container's init may not reap orphans).
none_alive() {
  local p i
  for i in $(seq 100); do
    for p in "$@"; do
      [ -e "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ] && break
      p=""
    done
    [ -z "$p" ] && return 0
    sleep 0.1
  done
  echo "still running: $p"
  return 1
}
LONG=("run.out_dir=\"$WORK\"" "train.steps=1000000" "train.target_accuracy=0" "train.threads=1" "train.checkpoint_every=200")
"${MPIRUN[@]}" -np 2 "$QKV" train "$CFG" "${LONG[@]}" run.name=\"sigint\" >sigint.out 2>sigint.err &
job=$!
wait_for sigint/checkpoints/step_000000200.safetensors
ranks=$(ranks_of $job)
check "SIGINT to mpirun: its 2 ranks found by parent" [ "$(echo "$ranks" | wc -w)" = 2 ]
kill -INT $job
check "SIGINT to mpirun: the job ends within 30 s" gone_within 30 $job
check "SIGINT to mpirun: the resume command is printed once" [ "$(grep -c "Resume with: qkv train --resume" sigint.err)" = 1 ]
check "SIGINT to mpirun: a checkpoint at the agreed step" [ "$(ls sigint/checkpoints | wc -l)" -ge 2 ]
check "SIGINT to mpirun: no rank left" none_alive $ranks

# One rank killed (SIGKILL): mpirun ends the job within 30 s, non-zero; the last checkpoint is intact and resumes.
"${MPIRUN[@]}" -np 2 "$QKV" train "$CFG" "${LONG[@]}" run.name=\"killed\" >killed.out 2>killed.err &
job=$!
wait_for killed/checkpoints/step_000000200.safetensors
ranks=$(ranks_of $job)
check "a killed rank: its 2 ranks found by parent" [ "$(echo "$ranks" | wc -w)" = 2 ]
kill -9 "$(echo "$ranks" | tail -1)"
check "a killed rank ends the job within 30 s" gone_within 30 $job
wait $job
code=$?
check "a killed rank: non-zero exit (got $code)" [ "$code" != 0 ]
check "a killed rank: no rank left" none_alive $ranks
newest=$(ls killed/checkpoints | tail -1 | sed 's/step_0*\([0-9]*\).safetensors/\1/')
"$QKV" train --resume "$WORK/killed" train.steps=$((newest + 5)) >resume_killed.out 2>&1
check "a killed rank: --resume from the last checkpoint works" [ $? = 0 ]

# One rank failing before the first collective (its own bad QKV_GEMM, a config its machine cannot read) hung the
# job: it ends within seconds, non-zero, with that rank's message (issue 25, item 2).
for fault in gemm config; do
  start=$(date +%s)
  timeout 60 "${MPIRUN[@]}" -np 2 sh -c 'c=$1; shift; if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then
      if [ "$c" = gemm ]; then export QKV_GEMM=mkl; else set -- "$1" train /nonexistent/config.toml; fi; fi
    exec "$@"' sh "$fault" "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"alone_$fault\" >alone.out 2>alone.err
  code=$?
  took=$(($(date +%s) - start))
  check "rank 1 fails alone ($fault): the job ends within 30 s (took $took s, exit $code)" [ "$code" != 124 ] && [ "$took" -lt 30 ]
  check "rank 1 fails alone ($fault): non-zero exit (got $code)" [ "$code" != 0 ]
  want=$([ $fault = gemm ] && echo "rank 1: qkv: error: QKV_GEMM: expected eigen" || echo "rank 1: qkv: error: config: /nonexistent/config.toml: no such file")
  check "rank 1 fails alone ($fault): its message" grep -q "$want" alone.err
done
# Every rank failing alike prints one message, from rank 0, without an abort.
timeout 60 "${MPIRUN[@]}" -np 2 "$QKV" train /nonexistent/config.toml >all.out 2>all.err
check "every rank fails alike: one message" [ "$(grep -c "qkv: error: config: /nonexistent/config.toml: no such file" all.err)" = 1 ]
check "every rank fails alike: no abort" [ "$(grep -c "MPI_ABORT" all.err)" = 0 ]

summary mpi
