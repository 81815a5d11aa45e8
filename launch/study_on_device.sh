#!/usr/bin/env bash
# The zero-shot study at one GPU's scale (configs/study/blimp_gpu.py), end to end on a host with no
# network: pretraining both objectives, BLiMP, few-label SST-2; the summary goes to OUT_DIR.
#
#   launch/study_on_device.sh [--dry-run] OUT_DIR [--config.a.b=v ...]
#
# Reads device_data/ beside the checkout (DEVICE_DATA to move it), packed on a CPU machine by
# `python tools/pack_device_study.py --out device_data`; installs the wheels packed there when the
# host lacks those packages. STUDY_VARIANT picks the config's variant (h100; cpu_smoke for the
# suite), STUDY_WORKDIR the study's workdir (runs/device_study).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh

if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
[[ $# -ge 1 ]] || die "usage: launch/study_on_device.sh [--dry-run] OUT_DIR [--config.a.b=v ...]"
OUT=$1
shift
DATA=${DEVICE_DATA:-device_data}
WORK=${STUDY_WORKDIR:-runs/device_study}
VARIANT=${STUDY_VARIANT:-h100}
[[ -f "$DATA/corpus/metadata.json" ]] || \
  die "$DATA/corpus is missing: run 'python tools/pack_device_study.py --out $DATA' on a CPU machine first"

if ! python3 -c "import electra_jax, grain, ml_collections, tensorboardX" 2>/dev/null; then
  run python3 -m pip install --no-index --find-links "$DATA/wheels" grain array-record ml-collections tensorboardX \
    portpicker
  run python3 -m pip install --no-index --no-deps --no-build-isolation -e .
fi
run mkdir -p "$OUT"
run python3 -c "import jax; print(jax.devices())"
run python3 -m electra_jax.cli study --config "configs/study/blimp_gpu.py:$VARIANT" --workdir "$WORK" \
  "--config.prepared_data=$DATA/corpus" "--config.minimal_pairs.data=$DATA/blimp" "--config.glue_dir=$DATA/glue" "$@"
run cp "$WORK/study_summary.json" "$WORK/zero_shot.md" "$WORK/blimp.png" "$OUT/"
