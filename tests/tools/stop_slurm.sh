#!/usr/bin/env bash
# Stop the daemons tests/tools/start_slurm.sh started (and only those), newest first,
# by the PIDs it recorded: SIGTERM, up to 10 s to exit, then SIGKILL.
set -uo pipefail

PID_FILE=${MEDAUG_SLURM_PID_FILE:-/run/medaug-slurm.pids}
# A killed daemon stays a zombie until PID 1 reaps it; a zombie no longer runs.
running() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null)
    [[ -n $state && $state != Z* ]]
}

[[ -s $PID_FILE ]] || exit 0
for pid in $(tac "$PID_FILE"); do
    running "$pid" || continue
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do
        running "$pid" || break
        sleep 0.2
    done
    if running "$pid"; then
        echo "stop_slurm: PID $pid ignored SIGTERM; killing it" >&2
        kill -9 "$pid" 2>/dev/null
    fi
done
rm -f "$PID_FILE"
