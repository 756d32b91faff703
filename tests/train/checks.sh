# Shared by the process-level test scripts (cli_faults.sh, mpi.sh): counted checks and waiting helpers.
# Source it first (source "$3/tests/train/checks.sh"), then `enter_work "$@"`; end the script with `summary NAME`.
# The scripts' arguments, QKV_BINARY WORK_DIR SOURCE_DIR: sets QKV, WORK and SRC, and makes WORK anew as the
# current directory.
enter_work() {
  QKV=$1
  WORK=$2
  SRC=$3
  rm -rf "$WORK"
  mkdir -p "$WORK"
  cd "$WORK" || exit 1
}
passed=0
failed=0
check() {  # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $what"; fi
}
# Waits until FILE exists (at most 30 s).
wait_for() { for _ in $(seq 300); do [ -e "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1"; return 1; }
# gone_within SECONDS PID: the process ends within SECONDS (else it is killed, and false).
gone_within() {
  for _ in $(seq $(($1 * 10))); do kill -0 "$2" 2>/dev/null || return 0; sleep 0.1; done
  echo "pid $2 still running after $1 s"; kill -9 "$2"; return 1
}
# Prints the counts; the script's status is whether every check passed.
summary() {
  echo "$1: $passed passed, $failed failed"
  [ "$failed" = 0 ]
}
