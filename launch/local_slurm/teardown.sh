#!/bin/bash
# Stops the local SLURM cluster that setup.sh started under STATE_DIR, and whatever its jobs left.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: teardown.sh STATE_DIR [--wipe]

Stops slurmctld, every slurmd and munged of the cluster under STATE_DIR (by their PID files
only), then kills leftover slurmstepd processes holding files under STATE_DIR and job processes
whose environment has SLURM_CONF=STATE_DIR/slurm.conf and SLURM_JOB_ID.
--wipe also removes STATE_DIR. Does nothing, successfully, when nothing runs.
EOF
}

die() {
    echo "teardown.sh: $*" >&2
    exit 1
}

WIPE=0
STATE_ARG=""
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
        --wipe) WIPE=1 ;;
        -*) usage >&2; exit 2 ;;
        *) [ -z "$STATE_ARG" ] || { usage >&2; exit 2; }; STATE_ARG=$arg ;;
    esac
done
[ -n "$STATE_ARG" ] || { usage >&2; exit 2; }

STATE=$(realpath -m -- "$STATE_ARG")
CONF=$STATE/slurm.conf
[ -d "$STATE" ] || exit 0
[ "$STATE" != / ] || die "refusing to work on /"

if [ "${SLURM_LOCAL_LOCK_HELD:-0}" != 1 ] && [ -e "$STATE/.lock" ]; then
    exec 9>"$STATE/.lock"
    flock -w 300 9 || die "timed out waiting for the lock on $STATE/.lock"
fi

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

# Alive and not a zombie: PID 1 here reaps orphans slowly (error #14).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

any_alive() {
    local pid
    for pid in "$@"; do alive "$pid" && return 0; done
    return 1
}

# TERM, then KILL after GRACE seconds: stop_pids GRACE PID...
stop_pids() {
    local grace=$1 i
    shift
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        any_alive "$@" || return 0
        sleep 0.1
    done
    kill -KILL "$@" 2>/dev/null || true
}

# A PID file is trusted only when the process still has the daemon's name, so a reused PID is
# never killed.
pid_from_file() {
    local file=$1 name=$2 pid
    [ -s "$file" ] || return 1
    pid=$(<"$file")
    is_uint "$pid" && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    echo "$pid"
}

daemons=()
for f in "$STATE/run/slurmctld.pid" "$STATE"/run/slurmd-*.pid; do
    [ -e "$f" ] || continue
    name=slurmd
    [ "${f##*/}" != slurmctld.pid ] || name=slurmctld
    if pid=$(pid_from_file "$f" "$name"); then daemons+=("$pid"); fi
done
stop_pids 10 "${daemons[@]}"
rm -f "$STATE"/run/*.pid

# Never kill this script or what runs it, should it be called from inside a job.
declare -A keep=()
pid=$$
while is_uint "$pid" && [ "$pid" -gt 1 ]; do
    keep[$pid]=1
    pid=$(awk '/^PPid:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
done

# Killing slurmctld/slurmd leaves slurmstepd and the job's processes running (error #13).
leftovers() {
    local dir pid fd env
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        [ -z "${keep[$pid]:-}" ] || continue
        if [ "$(cat "$dir/comm" 2>/dev/null)" = slurmstepd ]; then
            for fd in "$dir"/cwd "$dir"/fd/*; do
                case "$(readlink "$fd" 2>/dev/null)" in
                    "$STATE"/*) echo "$pid"; continue 2 ;;
                esac
            done
        fi
        env=$(tr '\0' '\n' 2>/dev/null <"$dir/environ") || continue
        if grep -qxF "SLURM_CONF=$CONF" <<<"$env" && grep -q '^SLURM_JOB_ID=' <<<"$env"; then
            echo "$pid"
        fi
    done
}

# A job script may still fork while its parents die: sweep until nothing matches.
for ((round = 0; round < 5; round++)); do
    mapfile -t pids < <(leftovers)
    [ "${#pids[@]}" -gt 0 ] || break
    stop_pids 2 "${pids[@]}"
done

if pid=$(pid_from_file "$STATE/munge/munged.pid" munged); then
    stop_pids 10 "$pid"
fi
rm -f "$STATE/munge/munged.pid"

if [ "$WIPE" -eq 1 ]; then
    # Only a directory setup.sh made (or an empty one) is removed.
    if [ -e "$STATE/.slurm_local" ] || [ -z "$(ls -A "$STATE")" ]; then
        rm -rf -- "$STATE"
    else
        die "$STATE was not made by setup.sh (no .slurm_local); not removing it"
    fi
fi
