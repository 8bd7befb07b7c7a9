#!/usr/bin/env bash
# SUPERB PR (phoneme recognition, PER) with s3prl's `ctc` downstream: ./pr.sh -h
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TASK=pr DOWNSTREAM=ctc CONFIG="$HERE/configs/pr.yaml"
METRIC=per HIGHER_IS_BETTER=false DEV_SPLIT=dev TEST_SPLIT=test
DATA_LAYOUT="train.csv dev.csv test.csv (wav_path + phonemes, or transcription + lexicon.txt)"
DATA_PATHS=(
  "config.downstream_expert.corpus.csv_dir=@DATA"
  "config.downstream_expert.corpus.lexicon=@DATA/lexicon.txt"
  "config.downstream_expert.text.vocab_file=@DATA/phoneme.txt|@DATA/phones.txt|@RECIPES/configs/phoneme.txt"
)
DATA_CHECK=(train.csv dev.csv test.csv)
BATCH_KEYS=(config.downstream_expert.corpus.batch_size)
WORKER_KEYS=(config.downstream_expert.corpus.num_workers)
RUNNER_FLAGS=()
source "$HERE/common.sh"
recipe_main "$@"
