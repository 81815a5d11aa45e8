#!/usr/bin/env bash
# A short accelerator check (4 compiles and 48 timed steps on one GPU or TPU host, no network): the train step of
# ELECTRA-Small and -Base in float32 and bfloat16 with the fused attention; prints tokens/s, MFU
# against the chip's datasheet peak and peak memory per case, and writes OUT_JSON.
#
#   launch/device_check.sh [--dry-run] OUT_JSON [--sizes small,base] [--steps 10] [--batch B --seq L]
#
# Needs python3 with jax (CUDA or TPU), flax, optax, orbax-checkpoint, sentencepiece and numpy; the
# checkout is used in place (nothing of ours is installed). ml-collections, the one other package
# the step imports, comes from WHEELS (default: wheels/ beside the checkout) when the host lacks it.
# Fill that folder on any machine with network access (ml_collections 1.1.0: a 77 KB wheel):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d wheels ml-collections
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh

if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
[[ $# -ge 1 ]] || die "usage: launch/device_check.sh [--dry-run] OUT_JSON [--sizes small,base] [--steps N]"
OUT=$1
shift
WHEELS=${WHEELS:-wheels}
PYTHON=${PYTHON:-python3}
SITE=${DEVICE_CHECK_SITE:-${TMPDIR:-/tmp}/electra_jax_device_check_site}

if ! "$PYTHON" -c "import ml_collections" 2>/dev/null; then
  compgen -G "$WHEELS/ml_collections-*.whl" >/dev/null || \
    die "ml-collections is not installed and $WHEELS/ holds no wheel of it; see the header of $0"
  run "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$SITE" "$WHEELS"/ml_collections-*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
run "$PYTHON" -m electra_jax.device_check --out "$OUT" "$@"
