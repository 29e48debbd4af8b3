#!/bin/bash
# Brings up a real SLURM cluster (Debian's slurm 22.05: slurmctld, slurmd, munged) on this machine,
# with every file under STATE_DIR. Measured facts and the errors this avoids: shared/docs/SLURM_LOCAL.md.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: setup.sh STATE_DIR

Starts a local SLURM cluster whose config, state, logs and munge key live under STATE_DIR,
waits until every node is idle and writes STATE_DIR/env.sh (source it: exports SLURM_CONF).
Installs slurmctld, slurmd, slurm-client and munge with apt-get if they are missing.
Idempotent: if the same cluster is already up, it returns at once. Needs root.
Stop it with: teardown.sh STATE_DIR [--wipe]

Environment:
  SLURM_LOCAL_NODES       emulated nodes (default 1: one node named after the host;
                          N>1: nodes n1..nN, daemons in a private mount namespace whose
                          /etc/hosts also maps n1..nN to 127.0.0.1)
  SLURM_LOCAL_GPUS        fake GPUs per node (default 0; device nodes under STATE_DIR/fakegpu)
  SLURM_LOCAL_CPUS        CPUs per node (default: nproc)
  SLURM_LOCAL_MEM_MB      RealMemory per node in MB (default: physical memory minus 15%)
  SLURM_LOCAL_PARTITIONS  comma-separated partitions, all nodes in each (default "debug";
                          the first one is the default partition)
  SLURM_LOCAL_FEATURES    node features, for --constraint (default none)
  SLURM_LOCAL_PORT        slurmctld port; slurmd ports follow it (default 6817)
  SLURM_LOCAL_KEEP_STATE  1: keep the jobs of the previous run (default: start clean, slurmctld -c)
  SLURM_LOCAL_DEBUG       SlurmdDebug level, e.g. debug2 to see GRES detection (default info)
  SLURM_LOCAL_TIMEOUT     seconds to wait for the nodes to become idle (default 60)
EOF
}

die() {
    echo "setup.sh: $*" >&2
    exit 1
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "" | -*) usage >&2; exit 2 ;;
esac
[ $# -eq 1 ] || { usage >&2; exit 2; }

ORIG_PATH=$PATH
# Daemons live in /usr/sbin, which a venv's or a non-login shell's PATH may lack.
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"
SELF_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }

STATE=$(realpath -m -- "$1")
CONF=$STATE/slurm.conf
HOST=$(hostname -s)
# nproc honours OMP_NUM_THREADS (a test runner sets it to 1): count the CPUs themselves.
NPROC=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
PHYS_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))

NODES=${SLURM_LOCAL_NODES:-1}
GPUS=${SLURM_LOCAL_GPUS:-0}
CPUS=${SLURM_LOCAL_CPUS:-$NPROC}
MEM_MB=${SLURM_LOCAL_MEM_MB:-$(( PHYS_MB - PHYS_MB * 15 / 100 ))}
PARTITIONS=${SLURM_LOCAL_PARTITIONS:-debug}
FEATURES=${SLURM_LOCAL_FEATURES:-}
PORT=${SLURM_LOCAL_PORT:-6817}
KEEP_STATE=${SLURM_LOCAL_KEEP_STATE:-0}
DEBUG=${SLURM_LOCAL_DEBUG:-info}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}

for knob in NODES GPUS CPUS MEM_MB PORT TIMEOUT; do
    is_uint "${!knob}" || die "SLURM_LOCAL_$knob must be a non-negative integer, got '${!knob}'"
done
[ "$NODES" -ge 1 ] || die "SLURM_LOCAL_NODES must be at least 1"
[ "$CPUS" -ge 1 ] || die "SLURM_LOCAL_CPUS must be at least 1"
[[ "$PARTITIONS" =~ ^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$ ]] || die "bad SLURM_LOCAL_PARTITIONS '$PARTITIONS'"
[ "$(id -u)" -eq 0 ] || die "must run as root (the daemons run as root and packages install with apt-get)"

if [ "$NODES" -eq 1 ]; then
    NODE_NAMES=("$HOST")
else
    NODE_NAMES=()
    for ((i = 1; i <= NODES; i++)); do NODE_NAMES+=("n$i"); done
fi

# --- packages ---------------------------------------------------------------------------------
install_packages() {
    command -v apt-get >/dev/null || die "slurm/munge are not installed and apt-get is unavailable"
    mkdir -p "$STATE/log"
    local temp_policy=0
    # The postinst scripts try to start the services; refuse that, but never replace a policy the
    # machine already has.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        temp_policy=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                slurmctld slurmd slurm-client munge
    } >"$STATE/log/apt.log" 2>&1 || rc=$?
    [ "$temp_policy" -eq 0 ] || rm -f /usr/sbin/policy-rc.d
    if [ "$rc" -ne 0 ]; then
        tail -n 15 "$STATE/log/apt.log" >&2
        die "apt-get install failed (rc $rc), see $STATE/log/apt.log"
    fi
}

have_packages() {
    local bin
    for bin in slurmctld slurmd sbatch srun sinfo scontrol munged munge; do
        command -v "$bin" >/dev/null || return 1
    done
}

# --- process helpers --------------------------------------------------------------------------
# A PID file counts only if its process is alive (not a zombie) and has the expected name, so a
# stale file whose PID was reused is never taken for a daemon.
pid_alive() {
    local file=$1 name=$2 pid stat
    [ -s "$file" ] || return 1
    pid=$(<"$file")
    is_uint "$pid" || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

all_running() {
    local n
    pid_alive "$STATE/munge/munged.pid" munged || return 1
    pid_alive "$STATE/run/slurmctld.pid" slurmctld || return 1
    for n in "${NODE_NAMES[@]}"; do
        pid_alive "$STATE/run/slurmd-$n.pid" slurmd || return 1
    done
}

any_running() {
    local f
    for f in "$STATE/munge/munged.pid" "$STATE"/run/*.pid; do
        [ -e "$f" ] || continue
        pid_alive "$f" munged || pid_alive "$f" slurmctld || pid_alive "$f" slurmd && return 0
    done
    return 1
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

log_tails() {
    local f
    for f in "$STATE/munge/munged.log" "$STATE/log/slurmctld.log" "$STATE"/log/slurmd-*.log "$STATE"/log/*.out; do
        [ -s "$f" ] || continue
        echo "==> $f <==" >&2
        tail -n 15 "$f" >&2
    done
}

# --- config -----------------------------------------------------------------------------------
write_configs() {
    local dir=$1 i gres="" feat="" overrides="" first=1 p n port
    if [ "$CPUS" -gt "$NPROC" ] || [ "$MEM_MB" -gt "$PHYS_MB" ]; then
        # Otherwise a node configured bigger than the hardware comes up INVAL (error #7).
        overrides="SlurmdParameters=config_overrides"
    fi
    [ "$GPUS" -eq 0 ] || gres=" Gres=gpu:$GPUS"
    [ -z "$FEATURES" ] || feat=" Features=$FEATURES"
    {
        cat <<EOF
# Generated by launch/local_slurm/setup.sh; rerun it instead of editing.
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$STATE/munge/munge.sock,cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/spool/slurmctld
SlurmdSpoolDir=$STATE/spool/slurmd-%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
SlurmdDebug=$DEBUG
# No cgroups: limits are not enforced, on purpose.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Job history without slurmdbd: finished jobs leave scontrol after MinJobAge seconds.
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
KillWait=5
# sbatch --wait polls every 2 s only while MinJobAge is small; 0 is not honoured by 22.05.
MinJobAge=5
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=1,sched_min_interval=0
EOF
        [ -z "$overrides" ] || echo "$overrides"
        for ((i = 0; i < NODES; i++)); do
            n=${NODE_NAMES[$i]}
            port=$((PORT + 1 + i))
            echo "NodeName=$n NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$port CPUs=$CPUS RealMemory=$MEM_MB$gres$feat State=UNKNOWN"
        done
        IFS=, read -ra parts <<<"$PARTITIONS"
        for p in "${parts[@]}"; do
            echo "PartitionName=$p Nodes=ALL Default=$([ "$first" -eq 1 ] && echo YES || echo NO) MaxTime=INFINITE State=UP OverSubscribe=NO"
            first=0
        done
    } >"$dir/slurm.conf"

    if [ "$GPUS" -gt 0 ]; then
        local files="$STATE/fakegpu/nvidia0"
        [ "$GPUS" -eq 1 ] || files="$STATE/fakegpu/nvidia[0-$((GPUS - 1))]"
        # 22.05 drops GPUs without File= and rejects regular files (errors #8, #8b).
        printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s\n' \
            "$(IFS=,; echo "${NODE_NAMES[*]}")" "$files" >"$dir/gres.conf"
    fi
}

# --- main ---------------------------------------------------------------------------------------
mkdir -p "$STATE"
[ -d "$STATE" ] || die "cannot create $STATE"
touch "$STATE/.slurm_local"
# Serialises setup and teardown on the same STATE_DIR. Daemons are started with fd 9 closed so
# they never hold the lock.
exec 9>"$STATE/.lock"
flock -w 300 9 || die "timed out waiting for the lock on $STATE/.lock"

have_packages || install_packages
have_packages || die "slurm/munge binaries still missing after apt-get install"

NEW=$(mktemp -d "$STATE/.new.XXXXXX")
trap 'rm -rf "$NEW"' EXIT
write_configs "$NEW"

same_config() {
    cmp -s "$NEW/slurm.conf" "$CONF" || return 1
    if [ -e "$NEW/gres.conf" ]; then cmp -s "$NEW/gres.conf" "$STATE/gres.conf"; else [ ! -e "$STATE/gres.conf" ]; fi
}

write_env() {
    local bindir
    bindir=$(dirname "$(command -v sbatch)")
    {
        printf 'export SLURM_CONF=%q\n' "$CONF"
        # shellcheck disable=SC2016 # $PATH expands when env.sh is sourced
        case ":$ORIG_PATH:" in
            *":$bindir:"*) ;;
            *) printf 'export PATH=%q:"$PATH"\n' "$bindir" ;;
        esac
    } >"$STATE/env.sh"
}

# Ready means every node answers: idle, or busy with jobs when state was kept.
wait_ready() {
    local start=$SECONDS out n bad
    while :; do
        bad=""
        out=$(SLURM_CONF=$CONF sinfo -h -N -o '%N %t' 2>/dev/null || true)
        for n in "${NODE_NAMES[@]}"; do
            grep -Eqx "$n (idle|mix|alloc|comp)" <<<"$out" || bad+=" $n"
        done
        [ -n "$bad" ] || return 0
        # The PID file appears only after slurmctld has daemonized.
        if [ $((SECONDS - start)) -ge 2 ] && ! pid_alive "$STATE/run/slurmctld.pid" slurmctld; then
            log_tails
            die "slurmctld is not running (see $STATE/log/slurmctld.log)"
        fi
        if [ $((SECONDS - start)) -ge "$TIMEOUT" ]; then
            echo "sinfo: ${out:-<no answer>}" | tr '\n' ' ' >&2
            echo >&2
            log_tails
            die "node(s)${bad} not idle after ${TIMEOUT} s (logs under $STATE/log)"
        fi
        sleep 0.2
    done
}

if same_config && all_running; then
    wait_ready
    write_env
    exit 0
fi

if any_running; then
    SLURM_LOCAL_LOCK_HELD=1 bash "$SELF_DIR/teardown.sh" "$STATE" >/dev/null
fi

for ((i = 0; i <= NODES; i++)); do
    ! port_in_use $((PORT + i)) || die "port $((PORT + i)) is in use (another cluster?); set SLURM_LOCAL_PORT"
done

mkdir -p "$STATE"/{munge,run,log,spool/slurmctld}
for n in "${NODE_NAMES[@]}"; do mkdir -p "$STATE/spool/slurmd-$n"; done  # error #5
# munged insists on an executable path to its socket for everyone (error #1).
chmod 755 "$STATE" "$STATE/munge"
mv -f "$NEW/slurm.conf" "$CONF"
if [ -e "$NEW/gres.conf" ]; then
    mv -f "$NEW/gres.conf" "$STATE/gres.conf"
    mkdir -p "$STATE/fakegpu"
    for ((i = 0; i < GPUS; i++)); do
        dev=$STATE/fakegpu/nvidia$i
        [ -c "$dev" ] || { rm -f "$dev"; mknod -m 666 "$dev" c 1 3; } || die "mknod $dev failed: fake GPUs need device nodes"
    done
else
    rm -f "$STATE/gres.conf"
fi
rm -f "$STATE"/run/*.pid

if [ ! -s "$STATE/munge/munge.key" ]; then
    (umask 077 && head -c 1024 /dev/urandom >"$STATE/munge/munge.key")
fi
chmod 0400 "$STATE/munge/munge.key"

SOCK=$STATE/munge/munge.sock
if ! pid_alive "$STATE/munge/munged.pid" munged; then
    rm -f "$SOCK" "$SOCK.lock"
    munged --key-file="$STATE/munge/munge.key" --socket="$SOCK" --pid-file="$STATE/munge/munged.pid" \
        --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed" \
        </dev/null >>"$STATE/log/munged.out" 2>&1 9>&- || { log_tails; die "munged failed to start"; }
fi
for ((i = 0; ; i++)); do
    munge -n -S "$SOCK" </dev/null 2>/dev/null | unmunge -S "$SOCK" >/dev/null 2>&1 && break
    [ "$i" -lt 100 ] || { log_tails; die "munged does not answer on $SOCK"; }
    sleep 0.1
done

if [ "$NODES" -gt 1 ]; then
    # Emulated node names must resolve (torch rendezvous on MASTER_ADDR=n1, error #11) without
    # touching the real /etc/hosts: the daemons, and so every job, see a private copy.
    { cat /etc/hosts; echo "127.0.0.1 ${NODE_NAMES[*]}"; } >"$STATE/hosts"
fi

in_hosts_ns() {
    if [ "$NODES" -gt 1 ]; then
        # shellcheck disable=SC2016 # expanded by the inner sh
        unshare --mount --propagation private -- \
            sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$STATE/hosts" "$@"
    else
        "$@"
    fi
}

ctld_args=(-f "$CONF")
[ "$KEEP_STATE" = 1 ] || ctld_args=(-c "${ctld_args[@]}")
in_hosts_ns slurmctld "${ctld_args[@]}" </dev/null >>"$STATE/log/slurmctld.out" 2>&1 9>&- ||
    { log_tails; die "slurmctld failed to start"; }
for n in "${NODE_NAMES[@]}"; do
    in_hosts_ns slurmd -f "$CONF" -N "$n" </dev/null >>"$STATE/log/slurmd-$n.out" 2>&1 9>&- ||
        { log_tails; die "slurmd -N $n failed to start"; }
done

wait_ready
write_env
