#!/usr/bin/env bash
# SUPERB ASR (LibriSpeech, WER) with s3prl's `asr` downstream: ./asr.sh -h
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TASK=asr DOWNSTREAM=asr CONFIG="$HERE/configs/asr.yaml"
METRIC=wer HIGHER_IS_BETTER=false DEV_SPLIT=dev-clean TEST_SPLIT=test-clean
DATA_LAYOUT="LibriSpeech root with train-clean-100/ dev-clean/ test-clean/ and len_for_bucket/<split>.csv"
DATA_PATHS=(
  "config.downstream_expert.datarc.libri_root=@DATA"
  "config.downstream_expert.datarc.bucket_file=@DATA/len_for_bucket"
  "config.downstream_expert.datarc.dict_path=@DATA/char.dict|@RECIPES/configs/char.dict"
)
DATA_CHECK=(train-clean-100 dev-clean test-clean
            len_for_bucket/train-clean-100.csv len_for_bucket/dev-clean.csv len_for_bucket/test-clean.csv)
BATCH_KEYS=(config.downstream_expert.datarc.batch_size config.downstream_expert.datarc.train_batch_size)
WORKER_KEYS=(config.downstream_expert.datarc.num_workers)
RUNNER_FLAGS=()
source "$HERE/common.sh"
recipe_main "$@"
