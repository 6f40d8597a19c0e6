#!/usr/bin/env bash
# Run one mirage-jax command as N cooperating JAX processes on this machine (multi-host simulation on CPU,
# or one process per local GPU). Each process gets --coordinator/--num-processes/--process-id.
#
#   launch/local.sh [--dry-run] [--num-processes N] [--port PORT] -- mirage-jax train --config configs/tiny.py --workdir runs/x
set -euo pipefail
dry_run=0; num_processes=2; port=${JAX_COORDINATOR_PORT:-23456}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --num-processes) num_processes=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "local.sh: unknown option $1 (put the command after --)" >&2; exit 2 ;;
  esac
done
[[ $# -gt 0 ]] || { echo "local.sh: no command given after --" >&2; exit 2; }
pids=()
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
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
