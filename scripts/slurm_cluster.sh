#!/usr/bin/env bash
# A real single-node SLURM cluster (Debian 12, SLURM 22.05) for tests and local sweeps.
#
#   scripts/slurm_cluster.sh up       install what is missing, write the configs, start the daemons,
#                                      wait until the node is idle (idempotent)
#   scripts/slurm_cluster.sh down     cancel jobs, stop every daemon started here, by PID (safe twice)
#   scripts/slurm_cluster.sh status   exit 0 and print "up" if the cluster answers, else exit 1
#   scripts/slurm_cluster.sh env      print what a client needs: `eval "$(scripts/slurm_cluster.sh env)"`
#   scripts/slurm_cluster.sh reset    down, then delete the state directory
#
# Daemons: munged (as user munge), mariadbd (as user mysql) + slurmdbd for accounting, slurmctld,
# slurmd -N localhost. Everything lives in one state directory; nothing is written to /etc except a
# symlink /etc/slurm/slurm.conf -> <dir>/etc/slurm.conf when no slurm.conf is there yet (removed again
# by `down`), so that plain `sbatch`/`sinfo` work without SLURM_CONF.
#
# Environment (all optional):
#   SLURM_CLUSTER_DIR         state directory                  [/tmp/aunet-slurm]
#   SLURM_CLUSTER_PORT_BASE   slurmctld port; slurmd, slurmdbd, mariadb use the next three   [6817]
#   SLURM_CLUSTER_NAME        ClusterName                      [aunet]
#   SLURM_CLUSTER_ACCOUNTING  1: slurmdbd + mariadb (sacct works, submitit gets real job states); 0: none  [1]
#   SLURM_CLUSTER_TIMEOUT     seconds to wait for each daemon and for the node to become idle   [90]
#   SLURM_CLUSTER_APT_UPDATE  1: always run apt-get update before installing missing packages  [0]
# Partitions: `debug` (default, every job goes there unless told otherwise) and `urgent` (a higher
# PriorityTier: its jobs preempt `debug` jobs, which are sent their --signal first, then requeued).
# A requeued job starts again 11 to 16 s later (cred_expire=10, scheduler passes every 2 s).
set -euo pipefail

DIR=${SLURM_CLUSTER_DIR:-/tmp/aunet-slurm}
PORT_BASE=${SLURM_CLUSTER_PORT_BASE:-6817}
NAME=${SLURM_CLUSTER_NAME:-aunet}
ACCOUNTING=${SLURM_CLUSTER_ACCOUNTING:-1}
TIMEOUT=${SLURM_CLUSTER_TIMEOUT:-90}

case "$DIR" in /*) ;; *) DIR="$(pwd)/$DIR" ;; esac
DIR=${DIR%/}
if [[ ! "$DIR" =~ ^/[A-Za-z0-9_./-]+$ ]]; then
    echo "slurm_cluster: SLURM_CLUSTER_DIR must be a plain absolute path, got '$DIR'" >&2
    exit 2
fi

CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
MYSQL_PORT=$((PORT_BASE + 3))

CONF=$DIR/etc/slurm.conf
DBD_CONF=$DIR/etc/slurmdbd.conf
MUNGE_DIR=$DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
MYSQL_DATA=$DIR/mysql
MYSQL_RUN=$DIR/mysqld
MYSQL_SOCKET=$MYSQL_RUN/mysqld.sock
LOG=$DIR/log
RUN=$DIR/run
# Every daemon is started with this variable in its environment: `down` and `status` only ever touch a
# process whose /proc/PID/environ carries it (so a recycled PID is never killed).
MARK=AUNET_SLURM_CLUSTER_DAEMON_OF
DAEMONS_UP=(munged mariadbd slurmdbd slurmctld slurmd)
DAEMONS_DOWN=(slurmd slurmctld slurmdbd mariadbd munged)
SLURM_PKGS=(slurmctld slurmd slurm-client munge)
DBD_PKGS=(mariadb-server slurmdbd)

export SLURM_CONF=$CONF

log() { echo "slurm_cluster: $*" >&2; }

pidfile_of() {
    case "$1" in
        munged) echo "$MUNGE_DIR/munged.pid" ;;
        mariadbd) echo "$MYSQL_RUN/mariadbd.pid" ;;
        *) echo "$RUN/$1.pid" ;;
    esac
}

logfile_of() {
    case "$1" in
        munged) echo "$MUNGE_DIR/munged.log" ;;
        *) echo "$LOG/$1.log" ;;
    esac
}

# True if PID is alive and was started by this script for this state directory.
ours() {
    local pid=$1
    [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/environ" ] || return 1
    { tr '\0' '\n' <"/proc/$pid/environ"; } 2>/dev/null | grep -qxF "$MARK=$DIR"
}

daemon_pid() {
    local f pid
    f=$(pidfile_of "$1")
    [ -s "$f" ] || return 1
    pid=$(tr -dc '0-9' <"$f")
    ours "$pid" || return 1
    echo "$pid"
}

running() { daemon_pid "$1" >/dev/null; }

wanted() {
    case "$1" in mariadbd | slurmdbd) [ "$ACCOUNTING" = 1 ] ;; *) return 0 ;; esac
}

# Every process carrying the mark: daemons and anything they left (slurmstepd).
marked_pids() {
    local p pid
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [ "$pid" = "$$" ] && continue
        ours "$pid" && echo "$pid"
    done
    return 0
}

tails() {
    local d f
    for d in "${DAEMONS_UP[@]}"; do
        wanted "$d" || continue
        f=$(logfile_of "$d")
        echo "---- $f (last 25 lines) ----" >&2
        if [ -f "$f" ]; then tail -n 25 "$f" >&2; else echo "(missing)" >&2; fi
    done
}

die() {
    log "ERROR: $*"
    tails
    exit 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s.
wait_for() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            die "timed out after ${secs}s waiting for $what"
        fi
        sleep 0.2
    done
}

# ---------------------------------------------------------------- installation

missing_packages() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
    done
}

apt_lists_present() {
    compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null
}

ensure_packages() {
    local pkgs=("${SLURM_PKGS[@]}")
    [ "$ACCOUNTING" = 1 ] && pkgs+=("${DBD_PKGS[@]}")
    local missing
    mapfile -t missing < <(missing_packages "${pkgs[@]}")
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "apt-get not found; cannot install ${missing[*]}"
    log "installing ${missing[*]}"
    # Package scripts must not start the distribution's own daemons (this script starts its own).
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created_policy=1
    fi
    local apt=(apt-get -q -o DPkg::Lock::Timeout=300)
    local rc=0
    if [ "${SLURM_CLUSTER_APT_UPDATE:-0}" = 1 ] || ! apt_lists_present; then
        "${apt[@]}" update >&2 || rc=$?
    fi
    if [ "$rc" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >&2 || rc=$?
        if [ "$rc" != 0 ]; then
            log "install failed (rc=$rc); running apt-get update and trying again"
            rc=0
            "${apt[@]}" update >&2 &&
                DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >&2 ||
                rc=$?
        fi
    fi
    [ "$created_policy" = 1 ] && rm -f "$policy"
    [ "$rc" = 0 ] || die "apt-get failed to install ${missing[*]}"
}

# ---------------------------------------------------------------- configuration

real_memory_mb() {
    local kb
    kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
    echo $((kb * 9 / 10 / 1024))
}

write_configs() {
    local cpus mem acct=""
    cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc obeys them; the node has them all
    mem=$(real_memory_mb)
    if [ "$ACCOUNTING" = 1 ]; then
        acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# The munge socket for talking to slurmdbd (AuthInfo above only covers slurmctld/slurmd).
AccountingStoragePass=$MUNGE_SOCKET"
    else
        acct="AccountingStorageType=accounting_storage/none"
    fi
    cat >"$CONF.tmp" <<EOF
# Written by scripts/slurm_cluster.sh (state directory $DIR); rewritten on every \`up\`.
ClusterName=$NAME
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire (default 120 s, minimum 5) is also how long a requeued job waits before it may start again.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$DIR/state/slurmctld
SlurmdSpoolDir=$DIR/state/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$acct
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Schedule batch jobs at once (default: may wait up to 3 s), and look at pending jobs every 2 s (default
# 60 s, backfill 30 s) so that a requeued job starts soon after it becomes eligible.
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Without it a job that gives no --mem gets the whole node and jobs would run one at a time.
DefMemPerCPU=$((mem / cpus))
ReturnToService=2
# Finished jobs leave slurmctld's memory quickly (sacct keeps them); kills are quick.
MinJobAge=10
KillWait=5
InactiveLimit=0
Waittime=0
# Preemption: a job in partition urgent preempts jobs in debug. preempt_send_user_signal sends the
# job's --signal (submitit: USR2) at preemption, so submitit checkpoints and requeues; GraceTime gives it
# the time to do so before SIGTERM/SIGKILL. The time-limit signal (--signal=USR2@N) needs no setting.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
JobRequeue=1
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=10
PartitionName=urgent Nodes=ALL Default=NO MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
    mv "$CONF.tmp" "$CONF"
    chmod 644 "$CONF"
    if [ "$ACCOUNTING" = 1 ]; then
        (
            umask 077
            cat >"$DBD_CONF.tmp" <<EOF
# Written by scripts/slurm_cluster.sh; rewritten on every \`up\`.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
        )
        mv "$DBD_CONF.tmp" "$DBD_CONF"
        chmod 600 "$DBD_CONF"
    fi
}

make_dirs() {
    install -d -m 755 -o root -g root "$DIR" "$DIR/etc" "$LOG" "$RUN" "$DIR/state" \
        "$DIR/state/slurmctld" "$DIR/state/slurmd"
    # munged and mariadbd run as their own users and must reach their directories.
    local user
    for user in munge mysql; do
        [ "$user" = mysql ] && [ "$ACCOUNTING" != 1 ] && continue
        runuser -u "$user" -- test -x "$DIR" ||
            die "user $user cannot reach $DIR (a parent directory is not world-searchable); choose another SLURM_CLUSTER_DIR"
    done
    # munged refuses group/world-writable directories; clients need to reach the socket.
    install -d -m 755 -o munge -g munge "$MUNGE_DIR"
    if [ ! -s "$MUNGE_DIR/munge.key" ]; then
        log "creating munge key"
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$MUNGE_DIR/munge.key.tmp" --force
        else
            dd if=/dev/urandom of="$MUNGE_DIR/munge.key.tmp" bs=1024 count=1 status=none
        fi
        mv "$MUNGE_DIR/munge.key.tmp" "$MUNGE_DIR/munge.key"
    fi
    chown munge:munge "$MUNGE_DIR/munge.key"
    chmod 400 "$MUNGE_DIR/munge.key"
    if [ "$ACCOUNTING" = 1 ]; then
        install -d -m 755 -o mysql -g mysql "$MYSQL_RUN"
        install -d -m 700 -o mysql -g mysql "$MYSQL_DATA"
        touch "$LOG/mariadbd.log"
        chown mysql:mysql "$LOG/mariadbd.log"
    fi
}

link_etc_conf() {
    # Convenience for plain `sinfo`/`sbatch`; never replaces someone else's slurm.conf.
    local etc=/etc/slurm/slurm.conf
    [ -d /etc/slurm ] || return 0
    if [ ! -e "$etc" ] && [ ! -L "$etc" ]; then
        ln -s "$CONF" "$etc"
    fi
}

unlink_etc_conf() {
    local etc=/etc/slurm/slurm.conf
    if [ -L "$etc" ] && [ "$(readlink "$etc")" = "$CONF" ]; then
        rm -f "$etc"
    fi
}

# ---------------------------------------------------------------- daemons

# spawn NAME COMMAND...: run a daemon with the mark, detached from our terminal and pipes.
spawn() {
    local name=$1
    shift
    setsid env "$MARK=$DIR" SLURM_CONF="$CONF" "$@" </dev/null >>"$LOG/$name.stdout" 2>&1 &
}

mysql_root() {
    mariadb --no-defaults --socket="$MYSQL_SOCKET" -uroot "$@"
}

# node_ready [resume]: the node answers; with "resume", undrain a node left down by an earlier run.
node_ready() {
    local state
    state=$(sinfo -h -N -n localhost -o '%T' 2>/dev/null | head -n1)
    case "$state" in
        idle | mixed | allocated | completing) return 0 ;;
        down | drained | draining | fail | failing)
            # Left over from an earlier run (e.g. "Node unexpectedly rebooted"): slurmd is ours and up.
            [ "${1:-}" = resume ] && scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
            return 1
            ;;
        *) return 1 ;;
    esac
}

start_munged() {
    running munged && return 0
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$(pidfile_of munged)"
    spawn munged runuser -u munge -- /usr/sbin/munged \
        --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" --pid-file="$MUNGE_DIR/munged.pid" \
        --log-file="$MUNGE_DIR/munged.log" --seed-file="$MUNGE_DIR/munged.seed"
    wait_for "$TIMEOUT" munged bash -c "munge -S '$MUNGE_SOCKET' -n | unmunge -S '$MUNGE_SOCKET'"
}

start_mariadbd() {
    running mariadbd && return 0
    if [ ! -d "$MYSQL_DATA/mysql" ]; then
        log "initialising the accounting database"
        mariadb-install-db --no-defaults --user=mysql --datadir="$MYSQL_DATA" \
            --auth-root-authentication-method=socket --auth-root-socket-user=root --skip-test-db \
            >>"$LOG/mariadbd.stdout" 2>&1 || die "mariadb-install-db failed (see $LOG/mariadbd.stdout)"
    fi
    rm -f "$MYSQL_SOCKET" "$(pidfile_of mariadbd)"
    spawn mariadbd /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$MYSQL_DATA" \
        --socket="$MYSQL_SOCKET" --pid-file="$(pidfile_of mariadbd)" --log-error="$LOG/mariadbd.log" \
        --port="$MYSQL_PORT" --bind-address=127.0.0.1 --skip-name-resolve --skip-log-bin \
        --performance-schema=OFF --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
        --max-connections=64
    wait_for "$TIMEOUT" mariadbd mariadb-admin --no-defaults --socket="$MYSQL_SOCKET" -uroot ping
    wait_for "$TIMEOUT" "mariadbd's pid file" running mariadbd
    mysql_root -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" ||
        die "could not create the database user for slurmdbd"
}

start_slurmdbd() {
    running slurmdbd && return 0
    spawn slurmdbd /usr/sbin/slurmdbd
    wait_for "$TIMEOUT" slurmdbd sacctmgr -n -P list cluster format=cluster
    if ! sacctmgr -n -P list cluster format=cluster | grep -qxF "$NAME"; then
        sacctmgr -i add cluster "$NAME" >/dev/null || die "sacctmgr could not add cluster $NAME"
    fi
}

start_slurmctld() {
    running slurmctld && return 0
    spawn slurmctld /usr/sbin/slurmctld -f "$CONF"
    wait_for "$TIMEOUT" slurmctld scontrol ping
}

start_slurmd() {
    running slurmd && return 0
    spawn slurmd /usr/sbin/slurmd -f "$CONF" -N localhost
    wait_for "$TIMEOUT" "slurmd's pid file" running slurmd
}

cmd_up() {
    local t0=$SECONDS
    if [ "$(id -u)" != 0 ]; then
        echo "slurm_cluster: must run as root (daemons run as root, munge and mysql)" >&2
        exit 2
    fi
    ensure_packages
    local d all=1
    for d in "${DAEMONS_UP[@]}"; do
        wanted "$d" || continue
        running "$d" || all=0
    done
    if [ "$all" = 1 ] && node_ready; then
        log "already up ($DIR)"
        link_etc_conf
        return 0
    fi
    make_dirs
    write_configs
    for d in "${DAEMONS_UP[@]}"; do
        wanted "$d" || continue
        "start_$d"
    done
    wait_for "$TIMEOUT" "node localhost to be idle (sinfo)" node_ready resume
    link_etc_conf
    log "up in $((SECONDS - t0))s: cluster $NAME, partition debug (default) and urgent; SLURM_CONF=$CONF"
}

# stop_pid NAME PID: TERM, wait, KILL.
stop_pid() {
    local name=$1 pid=$2 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do
        [ -d "/proc/$pid" ] || return 0
        # A zombie we cannot reap (not our child) counts as gone.
        grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && return 0
        sleep 0.1
    done
    log "$name ($pid) did not stop on SIGTERM in 10s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        [ -d "/proc/$pid" ] || return 0
        sleep 0.1
    done
    log "WARNING: $name ($pid) still exists"
}

cancel_jobs() {
    running slurmctld || return 0
    local jobs i
    jobs=$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ')
    [ -n "${jobs// /}" ] || return 0
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    for i in $(seq 1 100); do
        [ -z "$(squeue -h -o '%A' 2>/dev/null)" ] && return 0
        sleep 0.2
    done
}

cmd_down() {
    local d pid
    cancel_jobs
    for d in "${DAEMONS_DOWN[@]}"; do
        if pid=$(daemon_pid "$d"); then
            log "stopping $d ($pid)"
            stop_pid "$d" "$pid"
        fi
        rm -f "$(pidfile_of "$d")"
    done
    # Anything else with the mark (slurmstepd of a job that did not die, a daemon whose pid file was lost).
    for pid in $(marked_pids); do
        log "stopping leftover process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)"
        stop_pid leftover "$pid"
    done
    unlink_etc_conf
    log "down ($DIR)"
}

cmd_status() {
    local d pid up=1
    for d in "${DAEMONS_UP[@]}"; do
        wanted "$d" || continue
        if pid=$(daemon_pid "$d"); then
            echo "$d: running (pid $pid)"
        else
            echo "$d: stopped"
            up=0
        fi
    done
    if [ "$up" = 1 ] && node_ready; then
        echo "up: $(sinfo -h -o '%P %a %D %T' | tr '\n' ';') SLURM_CONF=$CONF"
        return 0
    fi
    echo "down"
    return 1
}

cmd_env() {
    echo "export SLURM_CONF=$CONF"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    reset)
        cmd_down
        rm -rf "$DIR"
        ;;
    *)
        echo "usage: $0 up|down|status|env|reset" >&2
        exit 2
        ;;
esac
