#!/usr/bin/env bash
# SUPERB ASR (LibriSpeech, WER) with s3prl's `asr` downstream: ./asr.sh -h
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TASK=asr DOWNSTREAM=asr CONFIG="$HERE/configs/asr.yaml"
METRIC=wer HIGHER_IS_BETTER=false DEV_SPLIT=dev-clean TEST_SPLIT=test-clean
DATA_LAYOUT="LibriSpeech root with train-clean-100/ dev-clean/ test-clean/ (len_for_bucket/<split>.csv made when missing)"
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
task_prepare() {  # a fresh download has no bucket files: write those missing (prepare/librispeech.py)
  local split missing=()
  for split in train-clean-100 dev-clean test-clean; do
    [[ -e "$1/len_for_bucket/$split.csv" || ! -d "$1/$split" ]] || missing+=("$split")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "[asr.sh] writing $1/len_for_bucket for ${missing[*]} (prepare/librispeech.py)" >&2
  "$(recipe_python)" "$HERE/prepare/librispeech.py" "$1" --splits "${missing[@]}" >&2
}
source "$HERE/common.sh"
recipe_main "$@"
