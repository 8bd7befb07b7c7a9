#!/usr/bin/env bash
# SUPERB ASV (VoxCeleb1 speaker verification, EER) with s3prl's `sv_voxceleb1` downstream: ./asv.sh -h
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TASK=asv DOWNSTREAM=sv_voxceleb1 CONFIG="$HERE/configs/asv.yaml"
METRIC=eer HIGHER_IS_BETTER=false DEV_SPLIT=dev TEST_SPLIT=test
PER_ITEM=""  # its prediction files hold trials, not per-item outcomes of EER
METRIC_LINE="sv-voxceleb1/{split}-EER"
DATA_LAYOUT="VoxCeleb1 root with dev/wav/idXXXXX/<video>/<utt>.wav (training speakers), test/wav/... and veri_test2.txt (trials)"
DATA_PATHS=(
  "config.downstream_expert.datarc.file_path=@DATA"
  "config.downstream_expert.datarc.train_meta_data=@DATA/veri_test2.txt"
  "config.downstream_expert.datarc.dev_meta_data=@DATA/veri_test2.txt"
  "config.downstream_expert.datarc.test_meta_data=@DATA/veri_test2.txt"
)
DATA_CHECK=(dev/wav test/wav veri_test2.txt)
BATCH_KEYS=(config.downstream_expert.datarc.train_batch_size)
WORKER_KEYS=(config.downstream_expert.datarc.num_workers)
RUNNER_FLAGS=()  # the runner wrapper keeps s3prl's wav-length cache in EXP/cache
source "$HERE/common.sh"
recipe_main "$@"
