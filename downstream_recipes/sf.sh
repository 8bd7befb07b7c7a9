#!/usr/bin/env bash
# SUPERB SF (Audio SNIPS slot filling: slot-type F1, slot-value CER) with s3prl's `ctc` downstream: ./sf.sh -h
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TASK=sf DOWNSTREAM=ctc CONFIG="$HERE/configs/sf.yaml"
METRIC=slot_type_f1 HIGHER_IS_BETTER=true DEV_SPLIT=dev TEST_SPLIT=test
EXTRA_METRICS=(slot_value_cer)
DATA_LAYOUT="Audio SNIPS root with all.iob.snips.txt, slots.txt and train/ valid/ test/ (<Speaker>-snips-<split>-<n>.wav)"
DATA_PATHS=(
  "config.downstream_expert.corpus.path=@DATA"
  "config.downstream_expert.text.slots_file=@DATA/slots.txt"
  "config.downstream_expert.text.vocab_file=@DATA/character.txt|@RECIPES/configs/sf_chars.txt"
)
DATA_CHECK=(all.iob.snips.txt slots.txt train valid test)
BATCH_KEYS=(config.downstream_expert.corpus.batch_size)
WORKER_KEYS=(config.downstream_expert.corpus.num_workers)
RUNNER_FLAGS=()
SPEAKERS=all
task_usage() {
  echo "  --speakers S       SF: 'all' (every speaker in each split's folder; default) or 'superb'"
  echo "                     (SUPERB's subsets of the 16 Audio SNIPS voices: 8 train, 4 valid, 4 test)"
}
task_option() {
  [[ "$1" == --speakers ]] || return 1
  case "$2" in
    all) TASK_OVERRIDES=() ;;
    superb) TASK_OVERRIDES=(
      "config.downstream_expert.corpus.train_speakers=['Ivy','Joanna','Joey','Justin','Kendra','Kimberly','Matthew','Salli']"
      "config.downstream_expert.corpus.valid_speakers=['Aditi','Amy','Geraint','Nicole']"
      "config.downstream_expert.corpus.test_speakers=['Brian','Emma','Raveena','Russell']") ;;
    *) echo "speechft: error: --speakers must be 'all' or 'superb', got '$2'" >&2; exit 1 ;;
  esac
  SPEAKERS="$2"
}
task_extra_results() { echo "speakers=$SPEAKERS"; }
source "$HERE/common.sh"
recipe_main "$@"
