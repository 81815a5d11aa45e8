#!/usr/bin/env bash
# Pretrain on one host with all its GPUs: one process, the mesh spans every local GPU.
#
#   launch/gpu_workstation.sh [--dry-run] [--install] [--gpus 0,1,2,3]
#                             -- --config configs/electra_base.py --workdir runs/base ...
#
# --install installs the project with CUDA jax first. Use --config.mesh.fsdp=-1 --config.mesh.data=1
# for FSDP instead of data parallelism, and --config.model.dtype=bfloat16 for bf16 compute.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh

INSTALL=0
GPUS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --install) INSTALL=1 ;;
    --gpus) GPUS=$2; shift ;;
    --) shift; break ;;
    *) die "unknown flag $1 (pretrain arguments go after --)" ;;
  esac
  shift
done
[[ $# -gt 0 ]] || die "give the pretrain arguments after --, e.g. -- --config configs/electra_base.py --workdir runs/base"

[[ "$INSTALL" == 1 ]] && run python3 -m pip install -e ".[cuda]"
env_vars=(XLA_PYTHON_CLIENT_MEM_FRACTION=0.92)
[[ -n "$GPUS" ]] && env_vars+=("CUDA_VISIBLE_DEVICES=$GPUS")
run env "${env_vars[@]}" electra-jax pretrain "$@"
