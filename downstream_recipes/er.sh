#!/usr/bin/env bash
# SUPERB ER (IEMOCAP emotion, accuracy, one fold) with s3prl's `emotion` downstream: ./er.sh -h
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TASK=er DOWNSTREAM=emotion CONFIG="$HERE/configs/er.yaml"
METRIC=acc HIGHER_IS_BETTER=true DEV_SPLIT=dev TEST_SPLIT=test
DATA_LAYOUT="IEMOCAP root with meta_data/Session<N>/{train,test}_meta_data.json"
DATA_PATHS=(
  "config.downstream_expert.datarc.root=@DATA"
  "config.downstream_expert.datarc.meta_data=@DATA/meta_data"
)
fold_files() { DATA_CHECK=("meta_data/Session${1#fold}/train_meta_data.json" "meta_data/Session${1#fold}/test_meta_data.json"); }
fold_files fold1
BATCH_KEYS=(config.downstream_expert.datarc.train_batch_size)
WORKER_KEYS=(config.downstream_expert.datarc.num_workers)
RUNNER_FLAGS=()
FOLD=fold1
task_usage() { echo "  --fold foldN        ER: the IEMOCAP session held out for testing (fold1..fold5; default fold1)"; }
task_option() {
  [[ "$1" == --fold ]] || return 1
  [[ "$2" =~ ^fold[1-9]$ ]] || { echo "speechft: error: --fold must be fold1..fold5, got '$2'" >&2; exit 1; }
  FOLD="$2"
  fold_files "$FOLD"
  TASK_OVERRIDES=("config.downstream_expert.datarc.test_fold='$FOLD'")
}
task_extra_results() { echo "fold=$FOLD"; }
source "$HERE/common.sh"
recipe_main "$@"
