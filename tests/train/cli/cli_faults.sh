#!/usr/bin/env bash
# Faults that need real processes, which the in-process doctest cases cannot make: a file-size limit (SIGXFSZ),
# SIGKILL, and two processes on one run directory. Usage: cli_faults.sh QKV_BINARY WORK_DIR SOURCE_DIR
set -u
source "$3/tests/train/checks.sh"
enter_work "$@"  # QKV, WORK (made anew, the current directory), SRC
CFG="$SRC/configs/reverse.toml"
COMMON=("run.out_dir=\"$WORK\"" "schedule.warmup_steps=0" "train.target_accuracy=0")
has() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; return 1; }; }
no_temporaries() { [ -z "$(find "$1" -name '.*.tmp.*')" ] || { find "$1" -name '.*.tmp.*'; return 1; }; }

# B6: a file-size limit hit while writing a checkpoint: a clear error, exit 1, no temporary left, the earlier
# checkpoint intact. (The checkpoint holds ~180 KB; the limit is 20 KB.)
"$QKV" train "$CFG" "${COMMON[@]}" run.name=\"fsize\" train.steps=10 >/dev/null 2>&1
RUN="$WORK/fsize"  # a model the later checks read
(ulimit -f 20; exec "$QKV" train --resume "$WORK/fsize" train.steps=20) >out.txt 2>err.txt
code=$?
check "file-size limit: exit 1 (got $code)" [ "$code" = 1 ]
check "file-size limit: the message" has err.txt "step 20: writing the checkpoint failed: .*File too large"
check "file-size limit: no temporary file left" no_temporaries "$WORK/fsize"
check "file-size limit: the earlier checkpoint loads" "$QKV" eval "$WORK/fsize/checkpoints/step_000000010.safetensors" >/dev/null

# Records that cannot be written end the run with exit 1 (issue 25, item 6: a full disk lost a third of
# metrics.jsonl and the run exited 0). The limit (8 KB) is reached by metrics.jsonl and train.log long before the
# only checkpoint, at the end; each failed append is retried for 5 s first.
(ulimit -f 8; exec "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"records\" train.steps=400 train.log_every=1 \
  train.checkpoint_every=0) >records.out 2>records.err
code=$?
check "records unwritable: exit 1 (got $code)" [ "$code" = 1 ]
check "records unwritable: the message" has records.err "training failed: step [0-9]*: writing .*File too large"
whole_lines() { [ "$(grep -cv '^{.*}$' "$1")" = 0 ] && [ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" = '\n' ]; }
check "records unwritable: metrics.jsonl keeps whole lines" whole_lines "$WORK/records/metrics.jsonl"
# Whichever record failed first stopped the run: metrics.jsonl reaches the step before the one named (a failure
# of metrics.jsonl passed over in silence would leave it behind while train.log went on).
failed_at=$(sed -n 's/.*training failed: step \([0-9]*\): writing.*/\1/p' records.err)
last=$(tail -1 "$WORK/records/metrics.jsonl" | sed 's/.*"step":\([0-9]*\).*/\1/')
check "records unwritable: metrics.jsonl reaches step $((failed_at - 1)) (has $last)" [ "$last" -ge $((failed_at - 1)) ]

# Inputs that never end or block (issue 25, item 7): /dev/zero or a FIFO as the config or the data, a folder as
# the data. Each is refused at once (exit 2), never read until memory runs out.
mkfifo "$WORK/in.fifo"
for what in "config /dev/zero" "config $WORK/in.fifo" "data /dev/zero" "data $WORK/in.fifo" "data $WORK"; do
  set -- $what
  if [ "$1" = config ]; then
    timeout 20 "$QKV" train "$2" >/dev/null 2>input.err
  else
    timeout 20 "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"input\" data.task=\"text\" model.causal=true \
      "data.path=\"$2\"" --force >/dev/null 2>input.err
  fi
  code=$?
  check "$1 = $2: exit 2 at once (got $code)" [ "$code" = 2 ]
  check "$1 = $2: not a regular file" has input.err "not a regular file"
done

# Out of address space with the OpenBLAS engine: OpenBLAS retried a failed 128 MB mmap forever, deaf to signals.
# Now: "out of memory", exit 1, within seconds (item 10). (Not under AddressSanitizer, whose shadow memory needs
# far more address space than any limit that tests this: gcc links its runtime, clang builds it in.)
if ! ldd "$QKV" | grep -q libasan && ! nm "$QKV" 2>/dev/null | grep -q ' __asan_init$'; then
  (ulimit -v 300000; QKV_GEMM=blas exec timeout -s KILL 60 "$QKV" train "$SRC/configs/sort.toml" "${COMMON[@]}" \
    run.name=\"vmem\" train.steps=5 >/dev/null 2>vmem.err)
  code=$?
  if ! grep -q "built without OpenBLAS" vmem.err; then
    check "ulimit -v with OpenBLAS: exit 1, not a hang (got $code)" [ "$code" = 1 ]
    check "ulimit -v with OpenBLAS: out of memory" has vmem.err "out of memory"
  fi
fi

# The weak cases (item 15): each one clear message, and the documented exit status (2 for input, 1 for a write).
expect() {  # expect CODE TEXT COMMAND...: the command exits CODE and its stderr has TEXT
  local want=$1 text=$2
  shift 2
  timeout 60 "$@" >weak.out 2>weak.err
  local code=$?
  check "$* : exit $want (got $code)" [ "$code" = "$want" ]
  check "$* : says '$text'" has weak.err "$text"
}
echo "in the way" >"$WORK/a-file"
expect 2 "is not a folder (a file is in the way" "$QKV" train "$CFG" run.out_dir=\"$WORK/a-file\"
expect 2 "File name too long" "$QKV" train "$CFG" "run.out_dir=\"$WORK/$(printf 'n%.0s' $(seq 300))\""
ln -s loop-b "$WORK/loop-a"; ln -s loop-a "$WORK/loop-b"
expect 2 "Too many levels of symbolic links" "$QKV" train "$WORK/loop-a"
if ! mkdir /sys/qkv-probe 2>/dev/null; then  # a folder even root cannot write
  expect 1 "qkv: failed: train: cannot create the run directory /sys/qkv/" "$QKV" train "$CFG" run.out_dir=\"/sys/qkv\"
fi
expect 2 "--resume continues a run and --force replaces one" "$QKV" train --resume "$RUN" --force
expect 2 "sample: --seed must be a whole number from 0 to 18446744073709551615, got '-1'" \
  "$QKV" sample "$RUN" --prompt "1 2" --seed -1
expect 2 "bench: --steps must be 1 to 1000000" "$QKV" bench "$CFG" --steps 9999999999
"$QKV" export "$RUN/model.safetensors" --dtype bf16 >/dev/null 2>&1
check "export FILE: written beside it" [ -f "$RUN/model.bf16.safetensors" ]
"$QKV" info "$CFG" model.d_model=65536 model.layers=4 >info.out 2>&1
check "info of a model beyond memory: described, not built" has info.out "(not built: its .* parameters alone need"
truncate -s 20G "$WORK/sparse.safetensors"
printf '\x10\x00\x00\x00\x00\x00\x00\x00{"a":1}         ' | dd of="$WORK/sparse.safetensors" conv=notrunc 2>/dev/null
start=$(date +%s)
expect 2 "tensor 'a' needs dtype, shape and data_offsets" "$QKV" eval "$WORK/sparse.safetensors"
check "a 20 GB sparse model file: its header is read first (took $(($(date +%s) - start)) s)" [ $(($(date +%s) - start)) -lt 5 ]
rm -f "$WORK/sparse.safetensors"

# A run that would go on for ever, in the background (its pid in $pid), past its first records.
start_endless() {
  "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"$1\" train.steps=100000000 train.log_every=50 \
    train.checkpoint_every=0 >"$1.out" 2>"$1.err" &
  pid=$!
  wait_for "$WORK/$1/metrics.jsonl"
}
# The run $1 (pid $pid) ends within 30 s, exit 1, saying that its run directory went ($2: how).
stopped_for_run_dir() {
  gone_within 30 "$pid"
  wait "$pid"
  local code=$?
  check "run directory $2 while training: exit 1 (got $code)" [ "$code" = 1 ]
  check "run directory $2 while training: said so" has "$1.err" "was deleted or moved while training"
}

# The run directory is locked itself: deleting .qkv-run and then --force gives no second writer; deleting the
# directory stops the run (exit 1) at its next write.
start_endless doomed
rm -f "$WORK/doomed/.qkv-run"
expect 2 "is in use by" "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"doomed\" --force
rm -rf "$WORK/doomed"
stopped_for_run_dir doomed deleted
# Moved away and replaced by another folder of the same name: the run stops too (the folder it holds is gone).
start_endless swapped
mv "$WORK/swapped" "$WORK/swapped.away" && mkdir "$WORK/swapped"
stopped_for_run_dir swapped "moved and replaced"
check "run directory moved and replaced: nothing written into the new folder" [ -z "$(ls -A "$WORK/swapped")" ]

# A second process on a training run is refused (exit 2) naming the holder; SIGTERM then stops the first (143).
"$QKV" train "$CFG" "${COMMON[@]}" run.name=\"busy\" train.steps=100000000 train.checkpoint_every=200 \
  >busy.out 2>busy.err &
pid=$!
wait_for "$WORK/busy/checkpoints"
timeout 20 "$QKV" train --resume "$WORK/busy" >second.out 2>second.err  # a regression must fail, not hang
code=$?
check "second --resume: exit 2 (got $code)" [ "$code" = 2 ]
check "second --resume: names the holder" has second.err "is in use by process $pid"
timeout 20 "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"busy\" --force >third.out 2>third.err
code=$?
check "second --force: exit 2 (got $code)" [ "$code" = 2 ]
check "second --force: names the holder" has third.err "is in use by process $pid"
check "second --force: the first run's files are still there" [ -e "$WORK/busy/config.toml" ]
kill -TERM "$pid"
wait "$pid"
code=$?
check "SIGTERM: exit 143 (got $code)" [ "$code" = 143 ]
check "SIGTERM: prints the resume command" has busy.err "Resume with: qkv train --resume $WORK/busy"

# SIGKILL mid-run: the lock dies with the process, and the run resumes from its last checkpoint.
"$QKV" train "$CFG" "${COMMON[@]}" run.name=\"killed\" train.steps=100000000 train.checkpoint_every=1 \
  >/dev/null 2>&1 &
pid=$!
wait_for "$WORK/killed/metrics.jsonl"
sleep 0.5  # mid-run: a checkpoint write is under way most of the time
kill -KILL "$pid"
wait "$pid" 2>/dev/null
touch "$WORK/killed/checkpoints/.step_000000999.safetensors.tmp.12345"  # what a kill during a write leaves
"$QKV" train --resume "$WORK/killed" train.checkpoint_every=0 >resumed.out 2>resumed.err &
pid=$!
wait_for "$WORK/killed/config.toml"
sleep 1
kill -TERM "$pid"
wait "$pid"
code=$?
check "resume after SIGKILL: ran and stopped on SIGTERM (got $code)" [ "$code" = 143 ]
check "resume after SIGKILL: from a checkpoint" has resumed.err "resumed $WORK/killed from step_"
check "resume after SIGKILL: stale temporaries removed" has resumed.err "removed [0-9]* stale temporary file"
check "resume after SIGKILL: no temporary left" no_temporaries "$WORK/killed"

# B1 as make train runs it (--force): a hostile run.name exits 2 and the folders around it survive.
mkdir -p "$WORK/out/keep"
echo "precious" >"$WORK/out/keep/file"
for name in '".."' '""' "\"$WORK/out\"" '"../out"'; do
  "$QKV" train "$CFG" run.out_dir=\""$WORK/out/runs"\" "run.name=$name" --force >/dev/null 2>force.err
  code=$?
  check "--force run.name=$name: exit 2 (got $code)" [ "$code" = 2 ]
  check "--force run.name=$name: nothing deleted" [ -e "$WORK/out/keep/file" ]
done

# A bad QKV_GEMM is a usage error (exit 2) naming the variable, before any work; a good one is used.
QKV_GEMM=mkl "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"gemm\" >/dev/null 2>gemm.err
code=$?
check "QKV_GEMM=mkl: exit 2 (got $code)" [ "$code" = 2 ]
check "QKV_GEMM=mkl: the message" has gemm.err "QKV_GEMM: expected eigen, blas or auto, got 'mkl'"
check "QKV_GEMM=mkl: no run directory" [ ! -e "$WORK/gemm" ]
QKV_GEMM=eigen "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"gemm\" train.steps=5 >/dev/null 2>&1
check "QKV_GEMM=eigen: the log says so" has "$WORK/gemm/train.log" "gemm: eigen for every product (forced)"

# Outputs never replace what they point at (item 1 of issue 25): a character device (our own, made with mknod
# when root can), a FIFO, a symlink to a user's file; and the GEMM cache never touches a foreign file or FIFO.
if mknod "$WORK/null" c 1 3 2>/dev/null; then
  for cmd in export report attention; do
    case $cmd in
      export) "$QKV" export "$RUN" --out "$WORK/null" ;;
      report) "$QKV" report "$RUN" --out "$WORK/null" ;;
      attention) "$QKV" attention "$RUN" --tokens "1 2 3" --svg "$WORK/null" ;;
    esac >/dev/null 2>out.err
    code=$?
    check "$cmd onto a character device: exit 0 (got $code)" [ "$code" = 0 ]
    check "$cmd onto a character device: still a device" [ -c "$WORK/null" ]
  done
fi
echo "my notes" >"$WORK/notes.txt"
ln -s "$WORK/notes.txt" "$WORK/notes.link"
"$QKV" export "$RUN" --out "$WORK/notes.link" >/dev/null 2>&1
check "export through a symlink: the link stays a link" [ -L "$WORK/notes.link" ]
check "export through a symlink: its target holds the model" "$QKV" eval "$WORK/notes.txt"
"$QKV" attention "$RUN" --tokens "1 2 3" --svg /dev/stdout >svg.out 2>&1
check "attention --svg /dev/stdout: the SVG on stdout" has svg.out "</svg>"
echo "my notes" >"$WORK/notes.txt"
mkfifo "$WORK/cache.fifo"
for cache in "$WORK/notes.txt" "$WORK/cache.fifo"; do
  QKV_GEMM=auto QKV_GEMM_CACHE="$cache" timeout 20 "$QKV" train "$CFG" "${COMMON[@]}" run.name=\"cache\" train.steps=2 --force \
    >/dev/null 2>cache.err
  code=$?
  check "QKV_GEMM_CACHE=$cache: trains (got $code)" [ "$code" = 0 ]
  check "QKV_GEMM_CACHE=$cache: left alone, said so" has "$WORK/cache/train.log" "is not a qkv cache file; it was left alone"
done
check "QKV_GEMM_CACHE=notes.txt: the file is unchanged" [ "$(cat "$WORK/notes.txt")" = "my notes" ]
check "QKV_GEMM_CACHE=fifo: still a FIFO" [ -p "$WORK/cache.fifo" ]

# With no place to cache the engine table (HOME missing), no folder is created and every run gets the same
# weights (issue 25, item 13: measured tables flipped between runs).
for i in 1 2 3; do
  env -u XDG_CACHE_HOME -u QKV_GEMM_CACHE QKV_GEMM=auto HOME="$WORK/no-home" "$QKV" train "$CFG" "${COMMON[@]}" \
    run.name=\"nocache$i\" train.steps=20 model.d_model=64 data.seq_len=32 >/dev/null 2>&1
done
check "no cache: HOME is not created" [ ! -e "$WORK/no-home" ]
check "no cache: the log says why" has "$WORK/nocache1/train.log" "not measured (no cache folder"
check "no cache: run 2 has run 1's weights" cmp -s "$WORK/nocache1/model.safetensors" "$WORK/nocache2/model.safetensors"
check "no cache: run 3 has run 1's weights" cmp -s "$WORK/nocache1/model.safetensors" "$WORK/nocache3/model.safetensors"

# Printed commands are quoted for a POSIX shell (item 14): pasting them runs qkv, never the name's $(...).
"$QKV" train "$CFG" "${COMMON[@]}" 'run.name=$(touch PWNED)' train.steps=3 >/dev/null 2>&1
"$QKV" train --resume "$WORK/\$(touch PWNED)" >again.out 2>&1
line=$(sed -n 's/.*To train longer: qkv \(train --resume .*\) train.steps=N$/\1/p' again.out | head -1)
check "quoted resume command: printed" [ -n "$line" ]
(cd "$WORK" && sh -c "\"\$0\" $line train.steps=4" "$QKV" >/dev/null 2>&1)
code=$?
check "quoted resume command: pasted into sh, it resumes (got $code)" [ "$code" = 0 ]
check "quoted resume command: the name was not run" [ ! -e "$WORK/PWNED" ]
grep -o 'qkv train [^<]*' "$WORK/\$(touch PWNED)/report.html" | head -1 | sed 's/&#39;/'"'"'/g; s/&quot;/"/g; s/&amp;/\&/g' \
  >reproduce.txt
check "report's reproduce command: quoted" has reproduce.txt "run.name=\"\$(touch PWNED)-again\"'"
(cd "$WORK" && sh -c "\"\$0\" $(sed 's/^qkv //' reproduce.txt) train.steps=1 run.out_dir=\\\"$WORK\\\"" "$QKV" >/dev/null 2>&1)
check "report's reproduce command: pasted into sh, it trains" [ -e "$WORK/\$(touch PWNED)-again/model.safetensors" ]
check "report's reproduce command: the name was not run" [ ! -e "$WORK/PWNED" ]

summary "cli faults"
