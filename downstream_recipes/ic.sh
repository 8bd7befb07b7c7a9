#!/usr/bin/env bash
# SUPERB IC (Fluent Speech Commands intent, accuracy) with s3prl's `fluent_commands` downstream: ./ic.sh -h
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TASK=ic DOWNSTREAM=fluent_commands CONFIG="$HERE/configs/ic.yaml"
METRIC=acc HIGHER_IS_BETTER=true DEV_SPLIT=dev TEST_SPLIT=test
DATA_LAYOUT="Fluent Speech Commands root with data/{train,valid,test}_data.csv and wavs/"
DATA_PATHS=("config.downstream_expert.datarc.file_path=@DATA")
DATA_CHECK=(data/train_data.csv data/valid_data.csv data/test_data.csv)
BATCH_KEYS=(config.downstream_expert.datarc.train_batch_size)
WORKER_KEYS=(config.downstream_expert.datarc.num_workers)
RUNNER_FLAGS=()
source "$HERE/common.sh"
recipe_main "$@"
