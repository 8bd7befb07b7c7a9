#!/usr/bin/env bash
# TED-LIUM 3 ASR (WER), the Speech-FT authors' fine-tuning task, with speechft's `asr_ted`
# downstream (character CTC, 3x256 BLSTM): ./asr_ted.sh -h
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TASK=asr_ted DOWNSTREAM=asr_ted CONFIG="$HERE/configs/asr_ted.yaml"
METRIC=wer HIGHER_IS_BETTER=false DEV_SPLIT=dev TEST_SPLIT=test
DATA_LAYOUT="TEDLIUM_release-3 root: data/{sph,stm}/ (train), legacy/dev/ and legacy/test/ (same)"
DATA_PATHS=("config.downstream_expert.datarc.ted_root=@DATA")
DATA_CHECK=(data/sph data/stm legacy/dev/sph legacy/dev/stm legacy/test/sph legacy/test/stm)
BATCH_KEYS=(config.downstream_expert.datarc.batch_size config.downstream_expert.datarc.train_batch_size)
WORKER_KEYS=(config.downstream_expert.datarc.num_workers)
RUNNER_FLAGS=()
task_usage() {
  echo "  --train-hours H    ASR_TED: train on the first H hours of segments (the authors' subset: 10;"
  echo "                     default 0, all of data/)"
}
task_option() {
  [[ "$1" == --train-hours ]] || return 1
  [[ "$2" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "speechft: error: --train-hours must be a number of hours, got '$2'" >&2; exit 1; }
  TASK_OVERRIDES=("config.downstream_expert.datarc.train_hours=$2")
}
source "$HERE/common.sh"
recipe_main "$@"
