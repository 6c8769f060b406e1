#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests/test_slurm.py (and for trying slurm/*.sbatch).
#
#   sudo bash tests/slurm_cluster.sh          # install (CI only) + configure + start; idempotent
#   sudo bash tests/slurm_cluster.sh status   # print sinfo and exit 0 when the node is up
#   sudo bash tests/slurm_cluster.sh stop     # stop the daemons this script started
#
# Debian's slurmctld/slurmd/munge, run as root: ProctrackType=proctrack/linuxproc and TaskPlugin=task/none
# (no cgroups needed, so it works in containers), one node with this machine's CPUs, no accounting
# database (finished jobs stay visible to `scontrol show job` for MinJobAge seconds).
# The packages are installed only when CI=true (elsewhere a missing binary is an error that says so).
# A slurm.conf that this script did not write is never overwritten.
set -euo pipefail

CONF_DIR=${SLURM_CONF_DIR:-/etc/slurm}
CONF=$CONF_DIR/slurm.conf
STATE=${SLURM_STATE_DIR:-/var/spool/slurm-sacglam}
LOGS=${SLURM_LOG_DIR:-/var/log/slurm-sacglam}
MARKER="# written by sac-glam tests/slurm_cluster.sh"
NODE=$(hostname -s)

node_up() {
  # The node answers and is idle/mixed/allocated (not down, drained or unknown).
  scontrol ping >/dev/null 2>&1 || return 1
  local state
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1)
  [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]]
}

if [[ "${1:-start}" == "status" ]]; then
  sinfo 2>&1 || true
  node_up
  exit $?
fi

if [[ "${1:-start}" == "stop" ]]; then
  for pidfile in /run/slurmd-sacglam.pid /run/slurmctld-sacglam.pid /run/munge/munged.pid; do
    if [[ -f "$pidfile" ]]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
  done
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "slurm_cluster.sh: must run as root (the daemons run as root)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
  || ! command -v sbatch >/dev/null; then
  if [[ "${CI:-}" == "true" ]]; then
    echo "== installing slurmctld slurmd slurm-client munge (CI=true)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  else
    echo "slurm_cluster.sh: slurmctld/slurmd/munge are not installed; run with CI=true to install them" \
      "(apt-get install slurmctld slurmd slurm-client munge)" >&2
    exit 1
  fi
fi

if node_up; then
  echo "== SLURM already running"; sinfo; exit 0
fi

# --- munge ----------------------------------------------------------------------------------------
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  if command -v mungekey >/dev/null; then mungekey --create --force; else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null

# --- slurm.conf -----------------------------------------------------------------------------------
mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" "$LOGS"
if [[ -f "$CONF" ]] && ! grep -qF "$MARKER" "$CONF"; then
  echo "slurm_cluster.sh: $CONF exists and was not written by this script; not touching it" >&2
else
  cat >"$CONF" <<EOF
$MARKER
ClusterName=sacglam
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=/run/slurmctld-sacglam.pid
SlurmdPidFile=/run/slurmd-sacglam.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MinJobAge=600
KillWait=30
SlurmdTimeout=60
JobRequeue=1
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
fi
# Debian's slurmd refuses to start without a cgroup.conf only with cgroup plugins; none are used here.

# --- daemons --------------------------------------------------------------------------------------
if ! scontrol ping >/dev/null 2>&1; then
  slurmctld -c   # -c: clean start (no stale jobs from an earlier cluster)
fi
for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
if ! pgrep -x slurmd >/dev/null; then
  slurmd -N "$NODE"
fi
for _ in $(seq 150); do
  node_up && break
  scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
  sleep 0.2
done
if ! node_up; then
  echo "slurm_cluster.sh: the node did not come up; see $LOGS/slurmctld.log and $LOGS/slurmd.log" >&2
  sinfo -N -l >&2 || true
  tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
  exit 1
fi
echo "== SLURM up"
sinfo
