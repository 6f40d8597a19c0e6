#!/usr/bin/env bash
# Run one mirage-jax command on every worker of a Cloud TPU VM pod (multi-controller SPMD: the same command
# everywhere; jax.distributed.initialize() auto-detects the pod).
#
#   launch/tpu_pod.sh [--dry-run] [--create] --name NAME --zone ZONE [--accelerator v5p-64] \
#       [--version tpu-ubuntu2204-base] -- mirage-jax train --config configs/wan22_ti2v_5b.py --workdir gs://bucket/run
set -euo pipefail
dry_run=0; create=0; name=""; zone=""; accelerator="v5p-64"; version="tpu-ubuntu2204-base"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --create) create=1; shift ;;
    --name) name=$2; shift 2 ;;
    --zone) zone=$2; shift 2 ;;
    --accelerator) accelerator=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "tpu_pod.sh: unknown option $1 (put the command after --)" >&2; exit 2 ;;
  esac
done
[[ -n "$name" && -n "$zone" ]] || { echo "tpu_pod.sh: --name and --zone are required" >&2; exit 2; }
[[ $# -gt 0 ]] || { echo "tpu_pod.sh: no command given after --" >&2; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
run() { if (( dry_run )); then echo "+ $*"; else "$@"; fi; }
if (( create )); then
  run gcloud compute tpus tpu-vm create "$name" --zone "$zone" --accelerator-type "$accelerator" --version "$version"
fi
run gcloud compute tpus tpu-vm scp --recurse "$repo" "$name:~/mirage_jax" --zone "$zone" --worker=all
remote="cd ~/mirage_jax && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]' && .venv/bin/$*"
run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$remote"
