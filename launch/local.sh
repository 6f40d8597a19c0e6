#!/usr/bin/env bash
# Run one mirage-jax command as N cooperating JAX processes on this machine (multi-host simulation on CPU,
# or one process per local GPU). Each process gets --coordinator/--num-processes/--process-id.
#
#   launch/local.sh [--dry-run] [--num-processes N] [--port PORT] -- mirage-jax train --config configs/tiny.py --workdir runs/x
#
# The command must be on PATH (source .venv/bin/activate) or a path (.venv/bin/mirage-jax). SIGTERM/SIGINT
# are passed on to every process. Exit status: 0 when every process exits 0, else a failing process's status;
# 143 from `mirage-jax train` means it was stopped by SIGTERM after saving (preempted: run it again to resume).
set -euo pipefail
usage() { awk 'NR == 1 { next } /^#( |$)/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
dry_run=0; num_processes=2; port=${JAX_COORDINATOR_PORT:-23456}
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --dry-run) dry_run=1; shift ;;
    --num-processes) num_processes=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "local.sh: unknown option $1 (put the command after --)" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "local.sh: no command given after --" >&2; exit 2; }
if (( ! dry_run )) && ! command -v "$1" >/dev/null; then
  program=$(basename "$1")
  echo "local.sh: $1 not found: activate the venv (source .venv/bin/activate) or pass .venv/bin/$program" >&2
  exit 2
fi
pids=()
forward() { kill -"$1" "${pids[@]}" 2>/dev/null || true; }
trap 'forward TERM' TERM
trap 'forward INT' INT
# `wait` returns early when a trapped signal arrives: wait again until the process has really exited.
wait_for() { local rc; while :; do rc=0; wait "$1" || rc=$?; kill -0 "$1" 2>/dev/null || return "$rc"; done; }
for ((i = 0; i < num_processes; i++)); do
  cmd=("$@" --coordinator "127.0.0.1:${port}" --num-processes "${num_processes}" --process-id "${i}")
  if (( dry_run )); then
    echo "+ ${cmd[*]}"
  else
    "${cmd[@]}" &
    pids+=($!)
  fi
done
status=0
for pid in "${pids[@]}"; do wait_for "$pid" || status=$?; done
exit $status
