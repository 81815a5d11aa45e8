#!/usr/bin/env bash
# Pretrain on a Cloud TPU VM slice: create it, copy this checkout to every worker, install, run the
# same `electra-jax pretrain` on all workers (jax.distributed finds the others by itself), tear down.
#
#   launch/tpu_vm.sh [--dry-run] [--name N] [--zone Z] [--project P] [--accelerator v4-32]
#                    [--version V] [--spot] [--data-uri gs://...] [--steps create,setup,run,delete]
#                    -- --config configs/electra_base.py --workdir gs://bucket/runs/base ...
#
# Flags fall back to TPU_NAME, TPU_ZONE, TPU_PROJECT, TPU_ACCELERATOR, TPU_VERSION. --data-uri copies
# a prepared dataset to ~/data on every worker; point --config.data.dir=/home/$USER/data at it.
# Use a gs:// workdir so every worker writes its part of the checkpoints to the same place.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh

NAME=${TPU_NAME:-electra-jax}
ZONE=${TPU_ZONE:-us-central2-b}
PROJECT=${TPU_PROJECT:-}
ACCELERATOR=${TPU_ACCELERATOR:-v4-32}
VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
SPOT=0
DATA_URI=""
STEPS="create,setup,run,delete"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --name) NAME=$2; shift ;;
    --zone) ZONE=$2; shift ;;
    --project) PROJECT=$2; shift ;;
    --accelerator) ACCELERATOR=$2; shift ;;
    --version) VERSION=$2; shift ;;
    --spot) SPOT=1 ;;
    --data-uri) DATA_URI=$2; shift ;;
    --steps) STEPS=$2; shift ;;
    --) shift; break ;;
    *) die "unknown flag $1 (pretrain arguments go after --)" ;;
  esac
  shift
done
[[ -n "$PROJECT" ]] || die "set --project or TPU_PROJECT"
[[ $# -gt 0 || "$STEPS" != *run* ]] || die "give the pretrain arguments after --, e.g. -- --config configs/electra_base.py --workdir gs://b/run"

GCLOUD=(gcloud compute tpus tpu-vm)
WHERE=(--zone "$ZONE" --project "$PROJECT")
on_all_workers() { run "${GCLOUD[@]}" ssh "$NAME" "${WHERE[@]}" --worker=all --command "$1"; }

if [[ "$STEPS" == *create* ]]; then
  create=("${GCLOUD[@]}" create "$NAME" "${WHERE[@]}" --accelerator-type "$ACCELERATOR" --version "$VERSION")
  [[ "$SPOT" == 1 ]] && create+=(--spot)
  run "${create[@]}"
fi
if [[ "$STEPS" == *setup* ]]; then
  run "${GCLOUD[@]}" scp --recurse --worker=all "${WHERE[@]}" "$PWD" "$NAME:~/electra-jax"
  on_all_workers "cd ~/electra-jax && python3 -m pip install -e '.[tpu]'"
  [[ -z "$DATA_URI" ]] || on_all_workers "gcloud storage cp -r $(printf '%q' "$DATA_URI") ~/data"
fi
if [[ "$STEPS" == *run* ]]; then
  on_all_workers "cd ~/electra-jax && python3 -m electra_jax.cli pretrain --distributed $(quote_args "$@")"
fi
if [[ "$STEPS" == *delete* ]]; then
  run "${GCLOUD[@]}" delete "$NAME" "${WHERE[@]}" --quiet
fi
