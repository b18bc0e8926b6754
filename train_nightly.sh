#!/usr/bin/env bash
# Keep an experiment training until it has finished: resume from the newest intact
# checkpoint, train, and after a failure wait and try again. Run `bash train_nightly.sh --help`.
set -u

usage() {
  cat <<'EOF'
usage: [VAR=value ...] bash train_nightly.sh [extra train.py arguments]

Loops: train.py --resume auto -> train -> stop once the run is complete (exit 0); after a
crash, a kill or a lost node, wait RETRY_WAIT seconds and resume again, at most MAX_RETRIES
times in a row. A mistake in the command (train.py exits with 2: a bad experiment name,
override or checkpoint) or a run that diverged (exit 4: its loss went non-finite) stops the
loop at once, since retrying cannot help. A training
process that was preempted (SIGTERM or SIGINT sent to it: it saves a checkpoint and exits
with 3) is resumed at once, without a wait and without counting as a failure. The loop
learns each outcome from the file train.py writes when GPTLAB_STATUS_FILE names one (it
sets it to LOG_DIR/.exit_status), so it tells them apart under torchrun too. SIGTERM or
SIGINT sent to this loop is passed on to train.py, which saves a checkpoint; then the
loop stops, and the same command continues the run later.

environment:
  EXPERIMENT   experiment name or path               (default: baseline)
  NPROC        processes, one per GPU                (default: every GPU, else 1)
  TRAIN_ARGS   extra train.py arguments, e.g. "--preset smoke model.n_layer=4"
  LOG_DIR      run directory                         (default: log_train/$EXPERIMENT/log)
  MAX_RETRIES  failed attempts in a row before giving up (default: 20)
  RETRY_WAIT   seconds between attempts              (default: 60)
  PYTHON       Python interpreter                    (default: python)

Arguments after the script name are passed to train.py as well. The loop appends its own
record to LOG_DIR/nightly.log; a lock (LOG_DIR/nightly.lock) keeps two loops off one run.

examples:
  bash train_nightly.sh
  EXPERIMENT=rope bash train_nightly.sh
  EXPERIMENT=mla NPROC=8 TRAIN_ARGS="--max-steps 5000" bash train_nightly.sh
EOF
}

for arg in "$@"; do
  case "$arg" in -h|--help) usage; exit 0 ;; esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
EXPERIMENT="${EXPERIMENT:-baseline}"
PYTHON="${PYTHON:-python}"
MAX_RETRIES="${MAX_RETRIES:-20}"
RETRY_WAIT="${RETRY_WAIT:-60}"
NAME="$(basename "${EXPERIMENT%.py}")"
LOG_DIR="${LOG_DIR:-$ROOT/log_train/$NAME/log}"
if [ -z "${NPROC:-}" ]; then
  NPROC="$("$PYTHON" -c 'import torch; print(max(1, torch.cuda.device_count()))' 2>/dev/null || echo 1)"
fi

mkdir -p "$LOG_DIR" || { echo "error: cannot create $LOG_DIR" >&2; exit 2; }
NIGHTLY_LOG="$LOG_DIR/nightly.log"
say() { echo "[$(date '+%Y-%m-%d %H:%M:%S')] $*" | tee -a "$NIGHTLY_LOG"; }

# the lock: a directory holding the owner's pid; a lock whose owner is gone is taken over
LOCK="$LOG_DIR/nightly.lock"
if ! mkdir "$LOCK" 2>/dev/null; then
  owner="$(cat "$LOCK/pid" 2>/dev/null || true)"
  if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then
    echo "error: another train_nightly.sh (pid $owner) is already running $LOG_DIR; stop it first" >&2
    exit 2
  fi
  say "taking over the stale lock of pid ${owner:-unknown}"
  rm -rf "$LOCK" && mkdir "$LOCK" || { echo "error: cannot take the lock $LOCK" >&2; exit 2; }
fi
echo $$ > "$LOCK/pid"
child=""
stopping=""
cleanup() { [ -n "$child" ] && kill "$child" 2>/dev/null; rm -rf "$LOCK"; }
trap cleanup EXIT
# a scheduler's SIGTERM (or Ctrl-C): train.py saves a checkpoint at its next step, then we stop
on_signal() {
  stopping="$1"
  say "received SIG$1: asking train.py to save a checkpoint and stop"
  [ -n "$child" ] && kill -TERM "$child" 2>/dev/null
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

# shellcheck disable=SC2206  # TRAIN_ARGS is split into words on purpose
extra=(${TRAIN_ARGS:-} "$@")
if [ "$NPROC" -gt 1 ]; then
  launch=("$PYTHON" -m torch.distributed.run --standalone "--nproc_per_node=$NPROC" "$ROOT/train.py")
else
  launch=("$PYTHON" "$ROOT/train.py" --no-launch)
fi
command=("${launch[@]}" --experiment "$EXPERIMENT" --log-dir "$LOG_DIR" --resume auto "${extra[@]}")
# train.py writes its outcome here (complete, stopped, refused, preempted): through torchrun the
# exit status of a failing worker always reads as 1
export GPTLAB_STATUS_FILE="$LOG_DIR/.exit_status"

newest() { ls "$LOG_DIR"/model_*.pt 2>/dev/null | sort -V | tail -n 1; }

failures=0
while true; do
  before="$(newest)"
  rm -f "$GPTLAB_STATUS_FILE"
  say "start: ${command[*]}"
  "${command[@]}" &
  child=$!
  while true; do  # a trapped signal interrupts wait; wait again until train.py has really exited
    wait "$child"
    status=$?
    kill -0 "$child" 2>/dev/null || break
  done
  child=""
  if [ -n "$stopping" ]; then
    say "stopped by SIG$stopping (train.py exit status $status); run the same command to continue"
    [ "$stopping" = INT ] && exit 130
    exit 143
  fi
  outcome="$(cat "$GPTLAB_STATUS_FILE" 2>/dev/null || echo failed)"
  case "$outcome" in
    complete)
      say "finished: the run is complete"
      exit 0 ;;
    stopped)
      say "finished: the run stopped at its train.stop_at, before max_steps; raise or drop stop_at to go on"
      exit 0 ;;
    refused)
      say "stopped: train.py refused the command (exit status $status); fix it and start again"
      exit 2 ;;
    diverged)
      say "stopped: the run diverged (exit status $status); resuming would repeat it: lower train.max_lr"
      exit 4 ;;
    "failed: disk full")
      say "stopped: the disk is full (exit status $status); free space, then run the same command to continue"
      exit 1 ;;
    preempted)
      say "preempted with a checkpoint; resuming at once"
      continue ;;
  esac
  [ "$(newest)" != "$before" ] && failures=0  # it got further: count failures afresh
  failures=$((failures + 1))
  if [ "$failures" -ge "$MAX_RETRIES" ]; then
    say "giving up: $failures failed attempts in a row (last exit status $status)"
    exit 1
  fi
  say "failed with exit status $status (attempt $failures of $MAX_RETRIES); resuming in ${RETRY_WAIT}s"
  sleep "$RETRY_WAIT"
done
