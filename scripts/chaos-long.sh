#!/usr/bin/env bash
# The long run of the fault-injection suite: every schedule CYCLES times (default 100), in
# chunks of CHUNK cycles (default 5), each chunk a fresh lab with its own workload seed, each
# appending its report to REPORT (default chaos-long.md) and its log to REPORT's .log, so a run
# stopped half-way keeps what it measured. Runs for hours (a cycle takes ~19 s on 2 cores):
#
#   sudo scripts/chaos-long.sh                 # 100 cycles of every schedule, ~6 h
#   sudo CYCLES=20 scripts/chaos-long.sh       # 20 cycles, ~70 min
#   sudo CYCLES=10 SCHEDULES="leader-kill disk-full" scripts/chaos-long.sh
#
# Exits non-zero if any chunk found an anomaly (the others still run). Needs root (network
# namespaces) and a release build (`cargo build --release`); not part of .ci/run.
set -uo pipefail
cd "$(dirname "$0")/.."

CYCLES="${CYCLES:-100}"
CHUNK="${CHUNK:-5}"
REPORT="${REPORT:-chaos-long.md}"
ORCH="${ORCH:-./target/release/orch}"
SCHEDULES="${SCHEDULES:-}"

[ -x "$ORCH" ] || { echo "no $ORCH: run cargo build --release first" >&2; exit 2; }
bash scripts/build-test-images.sh

args=()
for s in $SCHEDULES; do args+=(--schedule "$s"); done

{
    echo
    echo "## Long run $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'): $CYCLES cycles in chunks of $CHUNK"
} >>"$REPORT"

failed=0
done_cycles=0
chunk=0
while [ "$done_cycles" -lt "$CYCLES" ]; do
    n=$(( CYCLES - done_cycles < CHUNK ? CYCLES - done_cycles : CHUNK ))
    chunk=$(( chunk + 1 ))
    echo "== chunk $chunk: $n cycle(s), seed $chunk ($(date -u +%H:%M:%S))" | tee -a "$REPORT.log"
    if ! "$ORCH" lab chaos --cycles "$n" --seed "$chunk" "${args[@]}" --report "$REPORT" \
        >>"$REPORT.log" 2>&1; then
        failed=1
        echo "== chunk $chunk found anomalies (see $REPORT.log)" | tee -a "$REPORT.log"
    fi
    done_cycles=$(( done_cycles + n ))
done
echo "== done: $done_cycles cycles ($(date -u +%H:%M:%S)); anomalies: $([ $failed -eq 0 ] && echo none || echo yes)" | tee -a "$REPORT.log"
exit "$failed"
