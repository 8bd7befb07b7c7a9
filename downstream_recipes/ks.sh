#!/usr/bin/env bash
# SUPERB KS (Speech Commands v1.0, accuracy) with s3prl's `speech_commands` downstream: ./ks.sh -h
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TASK=ks DOWNSTREAM=speech_commands CONFIG="$HERE/configs/ks.yaml"
METRIC=acc HIGHER_IS_BETTER=true DEV_SPLIT=dev TEST_SPLIT=test
DATA_LAYOUT="train/<word>/*.wav (+ train/_background_noise_/) and test/<word>/*.wav"
DATA_PATHS=(
  "config.downstream_expert.datarc.speech_commands_root=@DATA/train"
  "config.downstream_expert.datarc.speech_commands_test_root=@DATA/test"
)
DATA_CHECK=(train test)
BATCH_KEYS=(config.downstream_expert.datarc.batch_size)
WORKER_KEYS=(config.downstream_expert.datarc.num_workers)
RUNNER_FLAGS=()
source "$HERE/common.sh"
recipe_main "$@"
