#!/usr/bin/env bash
# Start a real single-node SLURM with accounting on localhost, for the cluster tests:
# munged, MariaDB, slurmdbd, slurmctld and slurmd from Debian's packages, all without an
# init system. Installs what is missing (needs root and apt), reuses daemons already
# running, and appends the PID of every daemon it starts to $PID_FILE, so that
# stop_slurm.sh stops exactly those.
#
#   bash tests/tools/start_slurm.sh [--fake-gpu]
#
# --fake-gpu declares one GRES GPU per CPU (each backed by an empty file), so that rules
# with gpu=1 can be submitted with --gpus on a machine without one, and declares the
# node's memory as at least what that many GPU jobs request (16 GB each, their
# paper-scale host memory), so that GPU jobs run side by side as on a multi-GPU node
# instead of one after the other. The CI-size jobs use under 2 GB each. Every wait is
# bounded.
set -euo pipefail

PID_FILE=${MEDAUG_SLURM_PID_FILE:-/run/medaug-slurm.pids}
CLUSTER=medaug
ACCOUNT=ci
PARTITION=main
GPU_PARTITION=gpu  # the same node again: jobs land in the partition they ask for
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
FAKE_GPU=0
[[ ${1:-} == --fake-gpu ]] && FAKE_GPU=1

die() { echo "start_slurm: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "must run as root (it installs packages and starts system daemons)"

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
started() { echo "$1" >>"$PID_FILE"; }

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND (each try bounded) until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until timeout -s KILL 5 "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out waiting for $what"
        sleep 0.5
    done
}

# --- packages ----------------------------------------------------------------------------------
bash "$(dirname "$0")/ensure_packages.sh" "${PACKAGES[@]}"

# --- configuration -----------------------------------------------------------------------------
host=$(hostname -s)
cpus=$(nproc)
memory_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
gres_node="" gres_types="" tres="" overrides=""
if ((FAKE_GPU)); then
    gres_node=" Gres=gpu:$cpus"
    gres_types="GresTypes=gpu"
    tres="AccountingStorageTRES=gres/gpu"
    install -d /run/medaug-fake-gpu
    printf 'AutoDetect=off\n' >/etc/slurm/gres.conf
    for ((gpu = 0; gpu < cpus; gpu++)); do
        touch "/run/medaug-fake-gpu/gpu$gpu"
        printf 'NodeName=%s Name=gpu File=/run/medaug-fake-gpu/gpu%d\n' "$host" "$gpu" >>/etc/slurm/gres.conf
    done
    gpu_jobs_mb=$((cpus * 16384))
    if ((memory_mb < gpu_jobs_mb)); then
        # slurmd would mark a node declaring more memory than it has INVALID without this.
        memory_mb=$gpu_jobs_mb overrides="SlurmdParameters=config_overrides"
    fi
fi
cat >/etc/slurm/slurm.conf.new <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/linux
SwitchType=switch/none
MailProg=/bin/true
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
$tres
# sacct shows the comment the executor plugin sets: rule_<rule>_wildcards_<values>
AccountingStoreFlags=job_comment
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
Waittime=0
$gres_types
$overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb$gres_node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=$GPU_PARTITION Nodes=ALL MaxTime=INFINITE State=UP
EOF
if ! cmp -s /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf 2>/dev/null; then
    # Daemons running with another configuration would disagree with the new one.
    if alive /run/slurm/slurmctld.pid || alive /run/slurm/slurmd.pid; then
        die "slurmctld/slurmd already run with another slurm.conf; stop them first (tests/tools/stop_slurm.sh)"
    fi
    mv /etc/slurm/slurm.conf.new /etc/slurm/slurm.conf
else
    rm /etc/slurm/slurm.conf.new
fi
install -m 0600 -o slurm -g slurm /dev/null /etc/slurm/slurmdbd.conf
cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=slurm
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=medaug-ci
StorageLoc=slurm_acct_db
EOF
install -d -o munge -g munge -m 0755 /run/munge
install -d -o mysql -g mysql -m 0755 /run/mysqld
install -d -o slurm -g slurm -m 0755 /run/slurm /var/log/slurm /var/spool/slurmctld
install -d -m 0755 /var/spool/slurmd

# --- daemons -----------------------------------------------------------------------------------
if ! alive /run/munge/munged.pid; then
    # It daemonizes; run as root it would refuse its own log file.
    timeout -s KILL 30 runuser -u munge -- /usr/sbin/munged
    started "$(cat /run/munge/munged.pid)"
fi
wait_for 20 munge bash -c "munge -n | unmunge"

if ! alive /run/mysqld/mysqld.pid; then
    # setsid -f with every stream closed: a child holding our stdout would hang a caller's pipe.
    setsid -f /usr/sbin/mariadbd --user=mysql --skip-networking \
        --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 \
        --pid-file=/run/mysqld/mysqld.pid --log-error=/var/log/mysql/error.log </dev/null >/dev/null 2>&1
    wait_for 60 MariaDB test -s /run/mysqld/mysqld.pid
    started "$(cat /run/mysqld/mysqld.pid)"
fi
wait_for 60 MariaDB mariadb -e "SELECT 1"
timeout -s KILL 30 mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'medaug-ci';
            ALTER USER 'slurm'@'localhost' IDENTIFIED BY 'medaug-ci';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

if ! alive /run/slurm/slurmdbd.pid; then
    timeout -s KILL 30 slurmdbd
    wait_for 30 slurmdbd test -s /run/slurm/slurmdbd.pid
    started "$(cat /run/slurm/slurmdbd.pid)"
fi
wait_for 60 slurmdbd sacctmgr -n list cluster
# "Nothing new added" exits non-zero; the association check below is what matters.
timeout -s KILL 30 sacctmgr -i add cluster "$CLUSTER" >/dev/null || true
timeout -s KILL 30 sacctmgr -i add account "$ACCOUNT" Description=medaug-ci Organization=medaug >/dev/null || true
timeout -s KILL 30 sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null || true
timeout -s KILL 30 sacctmgr -n -P list assoc user=root account="$ACCOUNT" format=account | grep -qx "$ACCOUNT" ||
    die "sacctmgr did not record user root in account $ACCOUNT"

if ! alive /run/slurm/slurmctld.pid; then
    timeout -s KILL 30 slurmctld
    wait_for 30 slurmctld test -s /run/slurm/slurmctld.pid
    started "$(cat /run/slurm/slurmctld.pid)"
fi
if ! alive /run/slurm/slurmd.pid; then
    timeout -s KILL 30 slurmd
    wait_for 30 slurmd test -s /run/slurm/slurmd.pid
    started "$(cat /run/slurm/slurmd.pid)"
fi

# The node must come up idle; a drained/invalid node would leave every job pending.
deadline=$((SECONDS + 60))
until [[ $(timeout -s KILL 5 sinfo -h -n "$host" -o %T 2>/dev/null) == idle* ]]; do
    alive /run/slurm/slurmctld.pid || die "slurmctld died; see /var/log/slurm/slurmctld.log"
    alive /run/slurm/slurmd.pid || die "slurmd died; see /var/log/slurm/slurmd.log"
    if [[ $(timeout -s KILL 5 sinfo -h -n "$host" -o %T 2>/dev/null) =~ ^(down|drain|inval) ]]; then
        timeout -s KILL 5 scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    fi
    ((SECONDS < deadline)) || die "node $host not idle: $(timeout -s KILL 5 sinfo -h -o '%T %E' 2>&1)"
    sleep 0.5
done
echo "start_slurm: cluster $CLUSTER up: partitions $PARTITION and $GPU_PARTITION, account $ACCOUNT, node $host ($cpus CPUs$([[ $FAKE_GPU == 1 ]] && echo ", $cpus fake GPUs"))"
