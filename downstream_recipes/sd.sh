#!/usr/bin/env bash
# SUPERB SD (Libri2Mix speaker diarization, DER) with s3prl's `diarization` downstream: ./sd.sh -h
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TASK=sd DOWNSTREAM=diarization CONFIG="$HERE/configs/sd.yaml"
METRIC=der HIGHER_IS_BETTER=false DEV_SPLIT=dev TEST_SPLIT=test
DATA_LAYOUT="Kaldi folders train/ dev/ test/ (wav.scp segments utt2spk reco2dur; test/rttm)"
DATA_PATHS=(
  "config.downstream_expert.loaderrc.train_dir=@DATA/train"
  "config.downstream_expert.loaderrc.dev_dir=@DATA/dev"
  "config.downstream_expert.loaderrc.test_dir=@DATA/test"
)
DATA_CHECK=()
for split in train dev test; do
  for f in wav.scp segments utt2spk reco2dur; do DATA_CHECK+=("$split/$f"); done
done
DATA_CHECK+=(test/rttm)
BATCH_KEYS=(config.downstream_expert.loaderrc.train_batchsize)
WORKER_KEYS=(config.downstream_expert.loaderrc.num_workers)
RUNNER_FLAGS=()
# DER from the test predictions' RTTMs (s3prl's make_rttm.py sweep, pyannote.metrics), in percent
task_result() {  # EXP DATA RUNNER_CKPT SCORES_JSON
  "$(recipe_python)" "$RECIPES/recipe_tool.py" sd-score --exp "$1" --reference "$2/test/rttm" --output "$4"
}
task_check() { "$(recipe_python)" "$RECIPES/recipe_tool.py" sd-check "$1"; }
task_usage() {
  cat <<'USAGE'
  SD: evaluate reports the DER (percent) of the best of s3prl's score.sh settings (threshold
      0.3-0.7 x median filter 1, 11) on the test RTTM, as SUPERB does; all ten in metrics
USAGE
}
source "$HERE/common.sh"
recipe_main "$@"
