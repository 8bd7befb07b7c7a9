#!/usr/bin/env bash
# SUPERB SID (VoxCeleb1 speaker identification, accuracy) with s3prl's `voxceleb1` downstream: ./sid.sh -h
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TASK=sid DOWNSTREAM=voxceleb1 CONFIG="$HERE/configs/sid.yaml"
METRIC=acc HIGHER_IS_BETTER=true DEV_SPLIT=dev TEST_SPLIT=test
DATA_LAYOUT="VoxCeleb1 root (*/wav/idXXXXX/<video>/<utt>.wav) with iden_split.txt"
DATA_PATHS=(
  "config.downstream_expert.datarc.file_path=@DATA"
  "config.downstream_expert.datarc.meta_data=@DATA/iden_split.txt"
)
DATA_CHECK=(iden_split.txt)
BATCH_KEYS=(config.downstream_expert.datarc.train_batch_size)
WORKER_KEYS=(config.downstream_expert.datarc.num_workers)
RUNNER_FLAGS=()  # the runner wrapper keeps s3prl's voxceleb1 file-list cache in EXP/cache
source "$HERE/common.sh"
recipe_main "$@"
