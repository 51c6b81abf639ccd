#!/usr/bin/env bash
# Reproduction of "a rolling update stuck in 'updating' after a leader kill" (swarm's
# moby#35564), driven the way a user would drive orch.
#
# Each run, on a fresh lab of 3 managers and no workers (managers run the tasks, heartbeat 1s):
#   1. create `stall`: 6 replicas of orch-test/busybox:1 `sleep 1000000`, all running;
#   2. an update whose command fails, with --update-failure-action rollback: rolls back by itself;
#   3. an update whose command fails, with --update-failure-action pause: pauses;
#   4. `orch service rollback stall`: rolls back by hand;
#   5. the update under test, detached:
#        --image orch-test/busybox:2 --update-parallelism 1 --update-delay 3s
#        --update-monitor 3s --update-failure-action pause
#      4 s later the leader is SIGKILLed, and a few seconds after that it is restarted.
# The update must then end (completed, paused or rolled back, saying why). A run is STUCK if
# UpdateStatus still says it is in progress $STUCK_AFTER s after the update command.
#
# Usage (root: the lab uses network namespaces; needs jq and the orch-test images):
#   scripts/repro-update-stall.sh              # one run
#   RUNS=12 scripts/repro-update-stall.sh      # twelve runs
# One line per run on stdout: outcome, seconds from the update command to its end, the
# leader killed, tasks running on :2, and the final UpdateStatus message.
# Exit status: 1 if any run was STUCK, 2 if a run could not set up its scenario, else 0.
#
# Environment (all optional):
#   RUNS=1            number of runs
#   ORCH=…            the orch binary (default: target/release/orch of this checkout)
#   LAB_DIR=…         the lab's directory, used by this script alone
#                     (default /tmp/orch-repro-update-stall)
#   LOG_DIR=…         where each run's step log and node logs are kept
#                     (default /tmp/orch-repro-update-stall-logs; its run-* dirs are
#                     replaced at start)
#   STUCK_AFTER=150   seconds after the update command before a run counts as STUCK
#   RESTART_AFTER=3   seconds between the SIGKILL and the restart of the old leader
#
# The script only touches its own lab: it refuses a LAB_DIR that holds anything but an
# orch lab, removes a lab left there by an interrupted run, and always tears its lab down
# (`orch lab down`), also on failure or Ctrl-C.

set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ORCH=${ORCH:-$here/../target/release/orch}
RUNS=${RUNS:-1}
LAB_DIR=${LAB_DIR:-/tmp/orch-repro-update-stall}
LOG_DIR=${LOG_DIR:-/tmp/orch-repro-update-stall-logs}
STUCK_AFTER=${STUCK_AFTER:-150}
RESTART_AFTER=${RESTART_AFTER:-3}
KILL_AFTER=4 # seconds between the update command and the leader's SIGKILL

SVC=stall
V1=orch-test/busybox:1
V2=orch-test/busybox:2
MANAGERS=(m1 m2 m3)
RUN_LOG=/dev/null # the current run's step log (set per run)

# ---------------------------------------------------------------------------------------
# Helpers

die() {
    echo "repro-update-stall: $*" >&2
    exit 2
}

now() { date +%s; }

# Step log of the current run (stderr of everything the script runs goes there too).
log() { echo "$(date +%T) $*" >>"$RUN_LOG"; }

# `orch` against lab node $1.
o() {
    local node=$1
    shift
    timeout 20 "$ORCH" --data-dir "$LAB_DIR/$node" "$@" 2>>"$RUN_LOG"
}

# `orch` against the first manager that answers (a killed one does not, and one that lost
# its leader may fail for a while): prints its stdout, fails if none answered.
ask() {
    local m out
    for m in "${MANAGERS[@]}"; do
        [[ $m == "${DOWN_NODE:-}" ]] && continue
        if out=$(o "$m" "$@"); then
            printf '%s\n' "$out"
            return 0
        fi
    done
    return 1
}

# The service's UpdateStatus as "STATE|STARTED_AT|MESSAGE" (empty fields when the service
# has had no update yet); fails if no manager answered.
update_status() {
    local json
    json=$(ask service inspect "$SVC" --format json) || return 1
    jq -r '.[0].UpdateStatus // {} | [.State // "", .StartedAt // "", .Message // ""] | join("|")' <<<"$json"
}

# Number of the service's tasks that should run and do run, on image $1.
running_on() {
    ask service ps "$SVC" --filter desired-state=running --format '{{.Image}} {{.CurrentState}}' |
        awk -v img="$1" '$1 == img && $2 == "Running" { n++ } END { print n + 0 }'
}

# The hostname (= lab node name) of the leader, as the managers see it.
leader() {
    ask node ls --format json | jq -r 'select(.ManagerStatus == "Leader") | .Hostname'
}

# Polls `cmd…` every second until it succeeds or $1 seconds passed.
wait_for() {
    local timeout=$1
    shift
    local deadline=$(($(now) + timeout))
    until "$@"; do
        (($(now) >= deadline)) && return 1
        sleep 1
    done
}

all_running_v1() { [[ $(running_on "$V1") == 6 ]]; }

lab_whole() {
    local rows
    rows=$(ask node ls --format json) || return 1
    [[ $(jq -s '[.[] | select(.Status == "Ready")] | length' <<<"$rows") == 3 &&
        $(jq -s '[.[] | select(.ManagerStatus == "Leader")] | length' <<<"$rows") == 1 ]]
}

# Waits until an update newer than the one started at $1 is in state $2 (timeout $3 s).
# Leaves the last status seen in $STATUS.
wait_update_state() {
    local prev=$1 want=$2 timeout=$3
    wait_for "$timeout" update_is "$prev" "$want"
}
update_is() {
    STATUS=$(update_status) || return 1
    local state started
    IFS='|' read -r state started _ <<<"$STATUS"
    [[ $started != "$1" && $state == "$2" ]]
}

# When the update whose status was seen last started.
started_at() { cut -d'|' -f2 <<<"$STATUS"; }

# Whether process $1 still holds its files: a SIGKILLed node process is not gone while some
# thread of it is still finishing a system call, and until then a restart finds its data dir
# locked (the same test as the lab's).
holds_files() {
    local pid=$1 t st
    for t in /proc/"$pid"/task/*/stat; do
        [[ -r $t ]] || continue
        st=$(sed 's/.*) //' "$t" 2>/dev/null | cut -d' ' -f1)
        [[ -n $st && $st != Z && $st != X ]] && return 0
    done
    return 1
}

gone() { ! holds_files "$1"; }

# SIGKILLs lab node $1's process and waits until it is gone.
kill_node() {
    local pid
    pid=$(cat "$LAB_DIR/$1/orch.pid")
    kill -KILL "$pid"
    wait_for 15 gone "$pid" ||
        log "warning: pid $pid of $1 still holds its files 15 s after SIGKILL"
}

# Starts lab node $1's process again, as `orch lab` does: `orch daemon --data-dir DIR` in
# the node's network namespace, in its own session, appending to DIR/orch.log.
restart_node() {
    local node=$1 ns
    ns=$(jq -r --arg n "$node" '.nodes[] | select(.name == $n) | .netns // ""' "$LAB_DIR/lab.json")
    local cmd=("$ORCH" daemon --data-dir "$LAB_DIR/$node")
    [[ -n $ns ]] && cmd=(ip netns exec "$ns" "${cmd[@]}")
    setsid "${cmd[@]}" </dev/null >>"$LAB_DIR/$node/orch.log" 2>&1 &
    RESTARTED_PID=$!
    disown "$RESTARTED_PID" # the lab owns it now: no job notice when `lab down` kills it
    wait_for 30 o "$node" info >/dev/null
}

# Removes the lab (if this script's lab dir holds one), keeping its nodes' logs in $1.
teardown() {
    local keep=${1:-}
    [[ -f $LAB_DIR/lab.json ]] || return 0
    if [[ -n $keep ]]; then
        local m
        for m in "${MANAGERS[@]}"; do
            [[ -f $LAB_DIR/$m/orch.log ]] && cp "$LAB_DIR/$m/orch.log" "$keep/$m.orch.log"
        done
    fi
    "$ORCH" lab down --dir "$LAB_DIR" >/dev/null 2>&1 || echo "warning: orch lab down --dir $LAB_DIR failed" >&2
    # A node restarted by this script whose pid file was not written yet is not known to
    # the lab: end it by its pid (only if it still is that orch daemon).
    if [[ -n ${RESTARTED_PID:-} ]] && grep -qa -- "$LAB_DIR" "/proc/$RESTARTED_PID/cmdline" 2>/dev/null; then
        kill -KILL "$RESTARTED_PID" 2>/dev/null
    fi
    RESTARTED_PID=
}

on_exit() { teardown "${RUN_DIR:-}"; }
trap on_exit EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------
# Checks

[[ $(id -u) == 0 ]] || die "needs root (the lab uses network namespaces)"
[[ -x $ORCH ]] || die "no orch binary at $ORCH (set ORCH=…)"
command -v jq >/dev/null || die "needs jq"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive number"
for img in "$V1" "$V2"; do
    docker image inspect "$img" >/dev/null 2>&1 || die "no image $img (scripts/build-test-images.sh)"
done
# LAB_DIR must be ours: empty, absent, or a lab (left by an interrupted run of this script).
if [[ -d $LAB_DIR && ! -f $LAB_DIR/lab.json && -n $(ls -A "$LAB_DIR") ]]; then
    die "$LAB_DIR exists and is not an orch lab: choose another LAB_DIR"
fi
mkdir -p "$LOG_DIR" && rm -rf "${LOG_DIR:?}"/run-*

# ---------------------------------------------------------------------------------------
# One run: sets OUTCOME; prints its line.

setup_fail() {
    OUTCOME=SETUP-FAILED
    log "setup failed: $*"
    printf 'run %d: SETUP-FAILED  %s (see %s)\n' "$run" "$*" "$RUN_LOG"
}

one_run() {
    local run=$1
    RUN_DIR=$LOG_DIR/run-$run
    RUN_LOG=$RUN_DIR/steps.log
    mkdir -p "$RUN_DIR"
    DOWN_NODE=
    STATUS=
    teardown # a lab left by an interrupted run

    log "lab up"
    "$ORCH" lab up --managers 3 --workers 0 --netns --heartbeat 1s --dir "$LAB_DIR" >>"$RUN_LOG" 2>&1 ||
        { setup_fail "orch lab up failed"; return; }
    wait_for 30 lab_whole || { setup_fail "lab not whole"; return; }

    # 1. The service, all 6 tasks running.
    log "create"
    o m1 service create -d --name "$SVC" --replicas 6 "$V1" sleep 1000000 >>"$RUN_LOG" ||
        { setup_fail "service create failed"; return; }
    wait_for 60 all_running_v1 || { setup_fail "6 tasks not running after create"; return; }

    # 2. A failed update that rolls back by itself (the new command exits 127 at once).
    log "update 1: failing command, failure action rollback"
    o m1 service update -d --args "sh -c exit_1_now" \
        --update-failure-action rollback --update-monitor 2s "$SVC" >>"$RUN_LOG" ||
        { setup_fail "update 1 refused"; return; }
    wait_update_state "" rollback_completed 90 ||
        { setup_fail "update 1 did not roll back: $STATUS"; return; }
    log "update 1: $STATUS"
    wait_for 60 all_running_v1 || { setup_fail "6 tasks not running after update 1"; return; }

    # 3. A failed update that pauses.
    local prev
    prev=$(started_at)
    log "update 2: failing command, failure action pause"
    o m1 service update -d --args "sh -c exit_2_now" \
        --update-failure-action pause --update-monitor 2s "$SVC" >>"$RUN_LOG" ||
        { setup_fail "update 2 refused"; return; }
    wait_update_state "$prev" paused 90 || { setup_fail "update 2 did not pause: $STATUS"; return; }
    log "update 2: $STATUS"

    # 4. A manual rollback of the paused update.
    prev=$(started_at)
    log "manual rollback"
    o m1 service rollback -d "$SVC" >>"$RUN_LOG" || { setup_fail "rollback refused"; return; }
    wait_update_state "$prev" rollback_completed 90 ||
        { setup_fail "manual rollback did not complete: $STATUS"; return; }
    log "rollback: $STATUS"
    wait_for 60 all_running_v1 || { setup_fail "6 tasks not running after the rollback"; return; }

    # 5. The update under test, and the leader's SIGKILL 4 s after it.
    prev=$(started_at)
    local victim
    victim=$(leader)
    [[ -n $victim ]] || { setup_fail "no leader"; return; }
    log "update 3: image $V2; leader is $victim"
    local t0
    t0=$(now)
    o m1 service update -d --image "$V2" --update-parallelism 1 --update-delay 3s \
        --update-monitor 3s --update-failure-action pause "$SVC" >>"$RUN_LOG" ||
        { setup_fail "update 3 refused"; return; }
    local wait=$((t0 + KILL_AFTER - $(now)))
    ((wait > 0)) && sleep "$wait"
    log "SIGKILL $victim (pid $(cat "$LAB_DIR/$victim/orch.pid"))"
    DOWN_NODE=$victim
    kill_node "$victim"
    sleep "$RESTART_AFTER"
    log "restart $victim"
    restart_node "$victim" || log "warning: $victim did not answer 30 s after its restart"
    DOWN_NODE=

    # Wait for the update to end, up to STUCK_AFTER s after the update command.
    local state="" started="" message="" elapsed
    while :; do
        elapsed=$(($(now) - t0))
        if STATUS=$(update_status); then
            IFS='|' read -r state started message <<<"$STATUS"
            if [[ $started != "$prev" ]]; then
                case $state in
                completed) OUTCOME=completed ;;
                paused | rollback_paused) OUTCOME=paused ;;
                rollback_completed) OUTCOME="rolled back" ;;
                *) OUTCOME= ;;
                esac
            else
                OUTCOME= state="(not started)" message=""
            fi
            [[ -n $OUTCOME ]] && break
        fi
        if ((elapsed >= STUCK_AFTER)); then
            OUTCOME=STUCK
            break
        fi
        sleep 1
    done
    local on_v2
    on_v2=$(running_on "$V2")
    log "end: $OUTCOME after ${elapsed}s; $on_v2/6 running on $V2; status: $STATUS"
    ask service ps "$SVC" >>"$RUN_LOG"
    if [[ $OUTCOME == STUCK ]]; then
        message="still $state: $message"
    fi
    printf 'run %d: %-11s %3ds  killed leader %s, %s/6 on :2  "%s"\n' \
        "$run" "$OUTCOME" "$elapsed" "$victim" "$on_v2" "$message"
}

# ---------------------------------------------------------------------------------------

stuck=0 failed=0
for ((run = 1; run <= RUNS; run++)); do
    OUTCOME=
    one_run "$run"
    teardown "$RUN_DIR"
    case $OUTCOME in
    STUCK) stuck=$((stuck + 1)) ;;
    SETUP-FAILED) failed=$((failed + 1)) ;;
    esac
done
RUN_DIR=
echo "$RUNS run(s): $stuck stuck, $failed could not set up; logs in $LOG_DIR" >&2
((stuck > 0)) && exit 1
((failed > 0)) && exit 2
exit 0
