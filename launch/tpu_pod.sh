#!/usr/bin/env bash
# Run one mirage-jax command on every worker of a Cloud TPU VM pod (multi-controller SPMD: the same command
# everywhere). `mirage-jax train` needs --multihost there: jax.distributed.initialize() then finds the pod's
# workers itself (without it each worker would train alone, so a train command without it is refused).
#
#   launch/tpu_pod.sh [--dry-run] [--create] --name NAME --zone ZONE [--accelerator v5p-64] \
#       [--version tpu-ubuntu2204-base] -- mirage-jax train --multihost --config configs/wan22_ti2v_5b.py \
#       --workdir gs://bucket/run
#
# Copies the source only: the files git tracks, as they are in the working tree (uncommitted edits included;
# `git add` a new file first), not .venv, outputs or downloaded weights, in one archive to ~/mirage_jax on
# every worker, which installs '.[tpu]' into its own .venv. Exit status: gcloud's, non-zero when a worker's
# command fails; a worker's `mirage-jax train` exiting 143 was stopped by SIGTERM after saving (preempted:
# run the same command again to resume).
set -euo pipefail
usage() { awk 'NR == 1 { next } /^#( |$)/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }
dry_run=0; create=0; name=""; zone=""; accelerator="v5p-64"; version="tpu-ubuntu2204-base"
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
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
if [[ " $* " == *" train "* && " $* " != *" --multihost "* ]]; then
  echo "tpu_pod.sh: add --multihost to the train command (without it each worker trains alone)" >&2; exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1 \
  || { echo "tpu_pod.sh: $repo is not a git checkout (the copy is what git ls-files lists)" >&2; exit 2; }
files=()  # the tracked files (a tracked file deleted in the working tree is left out)
while IFS= read -r -d '' file; do
  [[ -e "$repo/$file" ]] && files+=("$file")
done < <(git -C "$repo" ls-files -z --cached | sort -zu)
archive="${TMPDIR:-/tmp}/mirage_jax-$$.tar.gz"
(( dry_run )) || trap 'rm -f "$archive"' EXIT
run() { if (( dry_run )); then echo "+ $*"; else "$@"; fi; }
if (( create )); then
  run gcloud compute tpus tpu-vm create "$name" --zone "$zone" --accelerator-type "$accelerator" --version "$version"
fi
run tar -czf "$archive" -C "$repo" -- "${files[@]}"
run gcloud compute tpus tpu-vm scp "$archive" "$name:~/mirage_jax.tar.gz" --zone "$zone" --worker=all
printf -v command '%q ' "$@"
remote="mkdir -p ~/mirage_jax && tar -xzf ~/mirage_jax.tar.gz -C ~/mirage_jax && cd ~/mirage_jax"
remote+=" && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]' && .venv/bin/${command% }"
run gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command "$remote"
