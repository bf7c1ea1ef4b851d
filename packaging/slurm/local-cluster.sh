#!/usr/bin/env bash
# Start and stop a throw-away one-machine Slurm cluster (tested with Slurm
# 22.05 / munge 0.5.15 on Debian 12) that lives entirely inside one folder.
#
#   local-cluster.sh available    exit 0 if munged, slurmctld, slurmd, sbatch,
#                                 sinfo, scontrol, scancel and squeue exist,
#                                 else list what is missing and exit 77 (skip)
#   local-cluster.sh start DIR    write munge key + slurm.conf into DIR, start
#                                 munged, slurmctld and slurmd, wait until the
#                                 node is idle, print `export SLURM_CONF=...`
#                                 (exit 77 if unavailable, 1 on failure, with
#                                 whatever it started stopped again)
#   local-cluster.sh stop DIR     cancel this cluster's jobs, then end exactly
#                                 the daemons recorded in DIR/pids (no-op if
#                                 there is no DIR/pids, so fine in traps)
#
# Usage: eval "$(local-cluster.sh start "$dir")"; ...; local-cluster.sh stop "$dir"
# Logs: DIR/log/*.out (daemon stderr) and DIR/log/slurm*.log.
#
# Must run as root (SlurmUser=root, SlurmdUser=root). Never touches /etc/munge,
# /etc/slurm or the system's munged: every file, socket and port is private.
set -Eeuo pipefail

readonly START_TIMEOUT=30   # seconds to wait for the node to become idle
readonly STOP_GRACE=5       # seconds between SIGTERM and SIGKILL
readonly JOB_DRAIN=10       # seconds `stop` waits for cancelled jobs to end

die() { echo "local-cluster.sh: $*" >&2; exit 1; }

usage() {
    echo "usage: $0 available | start DIR | stop DIR" >&2
    exit 2
}

# Find the daemons in /usr/sbin even when the caller's PATH lacks it.
export PATH="$PATH:/usr/sbin:/sbin"

cmd_available() {
    local missing=() tool
    for tool in munged slurmctld slurmd sbatch sinfo squeue scontrol scancel; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    ((EUID == 0)) || missing+=("root privileges (SlurmUser=root)")
    if ((${#missing[@]})); then
        echo "local-cluster.sh: missing: ${missing[*]}" \
             "(Debian: apt-get install slurmctld slurmd slurm-client munge)"
        exit 77
    fi
}

# TCP ports somebody listens on now (IPv4 + IPv6), one decimal per line.
listening_ports() {
    local f
    for f in /proc/net/tcp /proc/net/tcp6; do
        [[ -r $f ]] || continue
        # Column 2 is local addr:port in hex, column 4 the state (0A = LISTEN).
        awk 'NR > 1 && $4 == "0A" { split($2, a, ":"); print a[2] }' "$f"
    done | while read -r hex; do echo $((16#$hex)); done
}

# Print one port nobody listens on and not listed in "$@", from 20000..32767:
# below Linux's default ephemeral range (32768..60999), so outgoing
# connections cannot take it between now and the daemons' bind().
free_port() {
    local used port tries
    used=" $(listening_ports | tr '\n' ' ') $* "
    for ((tries = 0; tries < 200; tries++)); do
        port=$((20000 + RANDOM % 12768))
        [[ $used == *" $port "* ]] || { echo "$port"; return; }
    done
    die "no free TCP port found"
}

# Start "$@" in the background with no terminal I/O; record "name pid".
# Daemons run in the foreground (-D / -F) so $! is the daemon's own PID.
spawn() {
    local name=$1 pid self tries; shift
    "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
    pid=$!
    echo "$name $pid" >>"$DIR/pids"
    # Until it has exec'd, the child is a copy of this shell (same comm);
    # wait for that so `alive` below sees the daemon's name.
    self=$(cat "/proc/$BASHPID/comm")
    for ((tries = 0; tries < 100; tries++)); do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$self" ]] || return 0
        sleep 0.02
    done
}

# True while the recorded PID still runs the recorded program (guards
# against signalling a recycled PID).
alive() {
    local name=$1 pid=$2 comm
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$name"* ]]
}

# True when every recorded daemon still runs (a dead one means start failed).
all_alive() {
    local name pid
    while read -r name pid; do
        alive "$name" "$pid" || return 1
    done <"$DIR/pids"
}

# SIGTERM every recorded daemon still alive, SIGKILL after STOP_GRACE.
kill_recorded() {
    local name pid left deadline
    [[ -f $DIR/pids ]] || return 0
    # Reverse order: slurmd, slurmctld, then munged (which they depend on).
    while read -r name pid; do
        if alive "$name" "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done < <(tac "$DIR/pids")
    deadline=$((SECONDS + STOP_GRACE))
    while :; do
        left=0
        while read -r name pid; do
            if alive "$name" "$pid"; then left=1; fi
        done <"$DIR/pids"
        ((left)) || break
        if ((SECONDS >= deadline)); then
            while read -r name pid; do
                if alive "$name" "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
            done <"$DIR/pids"
            break
        fi
        sleep 0.2
    done
    rm -f "$DIR/pids"
}

cmd_start() {
    cmd_available >&2   # exits 77 if something is missing
    mkdir -p "$1"
    DIR=$(cd "$1" && pwd -P)
    # slurm.conf has no quoting: paths must not contain blanks.
    [[ $DIR != *[[:space:]]* ]] || die "DIR must not contain white space: $DIR"
    [[ ! -s $DIR/pids ]] || die "$DIR/pids exists: cluster already running? (stop it first)"

    # A UNIX socket path must fit in sun_path (108 bytes incl. NUL).
    local sock=$DIR/munge/munge.socket
    ((${#sock} < 100)) || die "DIR path too long for a munge socket: $sock"

    mkdir -p "$DIR"/{munge,log,state,spool}
    # munged refuses group/world-writable key/socket folders.
    chmod 0755 "$DIR" "$DIR/munge"
    chmod 0700 "$DIR/state" "$DIR/spool"
    : >"$DIR/pids"

    # Own munge key (munge needs >= 32 bytes; 1024 like mungekey's default).
    head -c 1024 /dev/urandom >"$DIR/munge/munge.key"
    chmod 0400 "$DIR/munge/munge.key"

    local host ctld_port slurmd_port node_line
    host=$(hostname -s)
    ctld_port=$(free_port)
    slurmd_port=$(free_port "$ctld_port")

    # Hardware as slurmd sees it, e.g.
    # "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2
    #  ThreadsPerCore=1 RealMemory=24105"; a mismatch would DRAIN the node.
    node_line=$(slurmd -C | head -n 1)
    [[ $node_line == NodeName=* ]] || die "unexpected 'slurmd -C' output: $node_line"
    # Address the node and controller as 127.0.0.1 so nothing depends on
    # how (or whether) the host name resolves.
    node_line="$node_line NodeAddr=127.0.0.1 NodeHostname=$host State=UNKNOWN"

    : >"$DIR/plugstack.conf"   # keep /etc/slurm/plugstack.conf out
    cat >"$DIR/slurm.conf" <<EOF
# Generated by local-cluster.sh for a throw-away test cluster.
ClusterName=kinoratest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$DIR/plugstack.conf
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# Keep finished job records 10 min so callers can read exit codes with
# 'scontrol show job' (there is no accounting, hence no sacct).
MinJobAge=600
# Seconds between SIGTERM and SIGKILL when a job is cancelled (default 30).
KillWait=5
$node_line
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

    # Clean up what was started if anything below fails.
    trap 'echo "local-cluster.sh: start failed; logs in $DIR/log" >&2; kill_recorded' ERR

    # -F (foreground) logs to stderr, i.e. DIR/log/munged.out.
    spawn munged munged -F --key-file="$DIR/munge/munge.key" \
        --socket="$sock" --pid-file="$DIR/munge/munged.pid" \
        --seed-file="$DIR/munge/munged.seed" --num-threads=2
    local started=$SECONDS deadline=$((SECONDS + START_TIMEOUT))
    until [[ -S $sock ]]; do
        if ! all_alive || ((SECONDS >= deadline)); then
            tail -n 20 "$DIR/log/munged.out" >&2
            false
        fi
        sleep 0.1
    done

    export SLURM_CONF=$DIR/slurm.conf
    spawn slurmctld slurmctld -D -i -f "$SLURM_CONF"
    spawn slurmd slurmd -D -f "$SLURM_CONF"

    # Ready when sinfo reports the node idle (slurmd registered).
    local state=""
    while :; do
        state=$(sinfo -h -N -n "$host" -o %t 2>/dev/null || true)
        [[ $state == idle ]] && break
        if ! all_alive || ((SECONDS >= deadline)); then
            echo "node state '$state' after $((SECONDS - started))s" >&2
            tail -n 20 "$DIR"/log/*.out >&2 || true
            false
        fi
        sleep 0.3
    done
    trap - ERR
    echo "export SLURM_CONF=$SLURM_CONF"
}

# True while some slurmstepd socket remains in this cluster's spool.
stepd_sockets() {
    local f
    for f in "$DIR"/spool/*_*.*; do
        [[ -S $f ]] && return 0
    done
    return 1
}

cmd_stop() {
    # Nothing recorded (never started, or already stopped): nothing to do,
    # so stop is safe in cleanup traps.
    [[ -f $1/pids ]] || return 0
    DIR=$(cd "$1" && pwd -P)
    # Jobs' slurmstepd/processes are not children of slurmd and would
    # outlive it: cancel them through this cluster's controller first.
    local name pid ctld_up=0
    while read -r name pid; do
        if [[ $name == slurmctld ]] && alive "$name" "$pid"; then ctld_up=1; fi
    done <"$DIR/pids"
    if ((ctld_up)) && [[ -f $DIR/slurm.conf ]]; then
        export SLURM_CONF=$DIR/slurm.conf
        # scancel needs job ids (or filters); %F is the array job id, so
        # one id cancels a whole array, pending tasks included.
        local jobs
        jobs=$(squeue -h -o %F 2>/dev/null | sort -u | tr '\n' ' ' || true)
        if [[ -n ${jobs// /} ]]; then
            # shellcheck disable=SC2086  # one word per job id
            scancel $jobs 2>/dev/null || true
            local deadline=$((SECONDS + JOB_DRAIN))
            while [[ -n $(squeue -h -o %i 2>/dev/null) ]] && ((SECONDS < deadline)); do
                sleep 0.3
            done
            # Each slurmstepd owns a socket NODE_JOB.STEP in the spool until
            # it exits; wait for those too so no job process outlives stop.
            while stepd_sockets && ((SECONDS < deadline)); do sleep 0.2; done
        fi
    fi
    kill_recorded
}

case ${1:-} in
    available) (($# == 1)) || usage; cmd_available ;;
    start) (($# == 2)) || usage; cmd_start "$2" ;;
    stop) (($# == 2)) || usage; cmd_stop "$2" ;;
    *) usage ;;
esac
