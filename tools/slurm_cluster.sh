#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying `gptlab study --launcher slurm` and for the
# cluster tier of the tests: munged, slurmctld and slurmd started by hand (no systemd) on a minimal
# slurm.conf in a directory of its own, never /etc/slurm.
#
#   eval "$(bash tools/slurm_cluster.sh up)"    # start; prints the export of SLURM_CONF to eval
#   bash tools/slurm_cluster.sh status
#   bash tools/slurm_cluster.sh down
#
# Needs root and Debian's packages: apt-get install munge slurmctld slurmd slurm-client.
# GPTLAB_SLURM_DIR (default /tmp/gptlab-slurm) holds the config, the state and the daemons' logs.
set -euo pipefail

DIR="${GPTLAB_SLURM_DIR:-/tmp/gptlab-slurm}"
CONF="$DIR/slurm.conf"

refuse() { echo "error: $*" >&2; exit 2; }

check() {
  [ "$(id -u)" = 0 ] || refuse "starting SLURM's daemons by hand needs root (this is uid $(id -u)); on a real cluster, submit to it instead"
  local missing=()
  for cmd in munged slurmctld slurmd sbatch squeue scontrol sinfo; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
  done
  [ ${#missing[@]} = 0 ] || refuse "missing ${missing[*]}: apt-get update && apt-get install -y munge slurmctld slurmd slurm-client"
}

up() {
  check
  mkdir -p "$DIR/state" "$DIR/spool" /run/munge /var/log/munge /var/lib/munge
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown -R munge:munge /etc/munge 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
  fi
  chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  if ! pgrep -x munged >/dev/null; then
    if id munge >/dev/null 2>&1; then su -s /bin/sh munge -c munged 2>/dev/null || munged --force; else munged --force; fi
  fi
  local host cpus mem
  host="$(hostname -s)"
  cpus="$(nproc)"
  mem="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
  cat > "$CONF" <<CONF
ClusterName=gptlab
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=60
MinJobAge=3600
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  pgrep -x slurmctld >/dev/null || slurmctld -f "$CONF"
  pgrep -x slurmd >/dev/null || slurmd -f "$CONF"
  for _ in $(seq 1 60); do
    if SLURM_CONF="$CONF" sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "export SLURM_CONF=$CONF"
      echo "# a one-node SLURM cluster ($host, $cpus CPUs) is up; its config, state and logs are in $DIR" >&2
      return 0
    fi
    SLURM_CONF="$CONF" scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  refuse "the cluster did not come up within a minute; see $DIR/slurmctld.log and $DIR/slurmd.log"
}

down() {
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  for _ in $(seq 1 20); do { pgrep -x slurmd || pgrep -x slurmctld; } >/dev/null || break; sleep 0.5; done
  rm -rf "$DIR/state" "$DIR/spool"
  echo "# the local SLURM cluster is down (munged left running)" >&2
}

status() {
  [ -f "$CONF" ] || refuse "no cluster configured in $DIR: bash tools/slurm_cluster.sh up"
  SLURM_CONF="$CONF" sinfo
  SLURM_CONF="$CONF" squeue
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: bash tools/slurm_cluster.sh up|down|status" >&2; exit 2 ;;
esac
