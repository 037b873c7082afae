#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py and for trying the SLURM
# profile by hand: Debian's slurm-wlm and munge, one node (this host), one partition "main",
# no accounting (the SLURM profile reads job states with squeue). Run as root:
#
#     bash tests/cluster/start-slurm.sh
#
# Idempotent: it installs only what is missing, keeps an existing munge key, rewrites
# slurm.conf only when it would change (and then restarts the daemons), starts only the
# daemons that are not running, and waits (bounded) until sinfo shows the node idle.
# Logs: /var/log/slurm/slurmctld.log, /var/log/slurm/slurmd.log, /var/log/munge/munged.log.
set -euo pipefail

PARTITION=main
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
WAIT_SECONDS=${SLURM_START_WAIT_SECONDS:-90}

say() { echo "start-slurm: $*"; }
die() { echo "start-slurm: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and starts daemons)"

# --- packages -------------------------------------------------------------------------------
missing=()
for tool in slurmctld slurmd sinfo sbatch squeue scontrol; do
    command -v "$tool" >/dev/null 2>&1 || missing=(slurm-wlm)
done
command -v munged >/dev/null 2>&1 || missing+=(munge)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt_log=$(mktemp)
    # waits for another apt/dpkg to finish; the packages' own service start fails harmlessly
    # where there is no init system
    if ! { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
           apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
               "${missing[@]}"; } >"$apt_log" 2>&1; then
        tail -n 30 "$apt_log" >&2
        die "apt-get install ${missing[*]} failed"
    fi
    rm -f "$apt_log"
fi

# --- munge ----------------------------------------------------------------------------------
id munge >/dev/null 2>&1 || die "user munge missing after installing munge"
install -d -m 0700 -o munge -g munge /etc/munge /var/lib/munge /var/log/munge
install -d -m 0755 -o munge -g munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    say "writing /etc/munge/munge.key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already running"
else
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.2
    done
    munge -n | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
fi

# --- slurm.conf -----------------------------------------------------------------------------
host=$(hostname)
cpus=$(nproc)
mem_total_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
# a little under the machine's: slurmd drains a node that has less memory than configured
real_memory=$(( mem_total_mb * 95 / 100 ))
install -d -m 0755 "$CONF_DIR" /var/log/slurm /var/spool/slurmd /var/spool/slurmctld
new_conf=$(cat <<CONF
# Written by tests/cluster/start-slurm.sh: a one-node test cluster, no accounting.
ClusterName=sviflow
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: processes are tracked through /proc, tasks are not confined
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# finished jobs stay visible to squeue for an hour: the status checks (and tests/test_slurm.py)
# read them there
MinJobAge=3600
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${real_memory} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
)
changed=no
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$new_conf" ]; then
    say "writing $CONF (node $host, $cpus CPUs, RealMemory $real_memory MB, partition $PARTITION)"
    printf '%s\n' "$new_conf" > "$CONF"
    changed=yes
fi

running() {  # running PIDFILE NAME: the pid in PIDFILE is alive and is NAME
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}
stop() {  # stop PIDFILE NAME
    if running "$1" "$2"; then
        say "stopping $2 (config changed)"
        kill "$(cat "$1")"
        for _ in $(seq 1 50); do running "$1" "$2" || return 0; sleep 0.2; done
        die "$2 did not stop"
    fi
}
if [ "$changed" = yes ]; then
    stop /run/slurmd.pid slurmd
    stop /run/slurmctld.pid slurmctld
fi

# --- daemons --------------------------------------------------------------------------------
if running /run/slurmctld.pid slurmctld; then
    say "slurmctld already running"
else
    say "starting slurmctld"
    slurmctld
fi
for _ in $(seq 1 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
if running /run/slurmd.pid slurmd; then
    say "slurmd already running"
else
    say "starting slurmd"
    slurmd
fi

# --- wait for the node ----------------------------------------------------------------------
state=""
for _ in $(seq 1 "$WAIT_SECONDS"); do
    state=$(sinfo --noheader --nodes="$host" --format=%T 2>/dev/null | head -n1 || true)
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|fail*)
            scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
case "$state" in
    idle|mixed|allocated|completing)
        say "node $host is $state in partition $PARTITION; the cluster is up"
        sinfo ;;
    *)
        echo "start-slurm: ERROR: node $host not idle after ${WAIT_SECONDS}s (state: '${state:-no answer}')" >&2
        sinfo >&2 || true
        tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
        exit 1 ;;
esac
