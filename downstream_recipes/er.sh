#!/usr/bin/env bash
# SUPERB ER (IEMOCAP emotion, accuracy) with s3prl's `emotion` downstream: ./er.sh -h
# evaluate runs SUPERB's five folds (leave one session out) and reports their mean; with
# --seeds, every fold for every seed, the mean over seeds of each seed's fold mean;
# --fold foldN runs one. finetune uses one fold (fold1 unless --fold), as the authors do.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TASK=er DOWNSTREAM=emotion CONFIG="$HERE/configs/er.yaml"
METRIC=acc HIGHER_IS_BETTER=true DEV_SPLIT=dev TEST_SPLIT=test
DATA_LAYOUT="IEMOCAP root with meta_data/Session<N>/{train,test}_meta_data.json (prepare/iemocap.py)"
DATA_PATHS=(
  "config.downstream_expert.datarc.root=@DATA"
  "config.downstream_expert.datarc.meta_data=@DATA/meta_data"
)
BATCH_KEYS=(config.downstream_expert.datarc.train_batch_size)
WORKER_KEYS=(config.downstream_expert.datarc.num_workers)
RUNNER_FLAGS=()
FOLDS=(fold1 fold2 fold3 fold4 fold5)

fold_files() { echo "meta_data/Session${1#fold}/train_meta_data.json meta_data/Session${1#fold}/test_meta_data.json"; }
FOLD=fold1
read -r -a DATA_CHECK <<<"$(fold_files "$FOLD")"
TASK_OVERRIDES=("config.downstream_expert.datarc.test_fold='$FOLD'")
task_usage() {
  echo "  --fold F           ER: all (evaluate's default: the five folds, one run each in EXP/foldN,"
  echo "                     EXP/results.json holds their mean and each fold's value) or fold1..fold5"
  echo "                     (one run; finetune's default is fold1). All folds with --seeds: EXP/foldN/seed<S>/"
  echo "                     per run, EXP/seed<S>/results.json the seed's fold mean, EXP/results.json"
  echo "                     the mean over seeds (with each seed's and each fold's values)"
}
task_option() {
  [[ "$1" == --fold ]] || return 1
  [[ "$2" != all ]] || { echo "speechft: error: finetune takes one fold (--fold fold1..fold5)" >&2; exit 1; }
  [[ "$2" =~ ^fold[1-5]$ ]] || { echo "speechft: error: --fold must be all or fold1..fold5, got '$2'" >&2; exit 1; }
  FOLD="$2"
  read -r -a DATA_CHECK <<<"$(fold_files "$FOLD")"
  TASK_OVERRIDES=("config.downstream_expert.datarc.test_fold='$FOLD'")
}
task_extra_results() { echo "fold=$FOLD"; }
source "$HERE/common.sh"

# evaluate without --fold (or --fold all): each fold is a run of this script with --fold foldN
five_folds() {
  local args=() exp="" data="" fold=all seeds=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h|--help) return 1 ;;
      --exp|--data|--fold)
        [[ $# -ge 2 ]] || recipe_die "$1 needs a value"
        case "$1" in --exp) exp="$2" ;; --data) data="$2" ;; --fold) fold="$2" ;; esac
        shift 2 ;;
      --seeds)  # passed on to every fold's run; read here to find each seed's results
        [[ $# -ge 2 ]] || recipe_die "$1 needs a value"
        seeds="$2"; args+=("$1" "$2"); shift 2 ;;
      *) args+=("$1"); shift ;;
    esac
  done
  [[ "$fold" == all ]] || return 1
  [[ -n "$data" && -n "$exp" ]] || return 1  # recipe_main names what is missing
  [[ -d "$data" ]] || recipe_die "$data: no such data folder"
  local f need
  for f in "${FOLDS[@]}"; do
    for need in $(fold_files "$f"); do
      [[ -e "$data/$need" ]] || recipe_die "$data: missing $need (ER data layout: downstream_recipes/README.md; prepare/iemocap.py writes it)"
    done
  done
  [[ ! -e "$exp/results.json" ]] || recipe_die "$exp: already holds results.json; use a new --exp folder"
  # --seeds: each fold's run trains every seed in one process (EXP/foldN/seed<S>/, common.sh);
  # a seed's score is its mean over the folds (EXP/seed<S>/results.json), the score the mean over seeds
  local runs=("") s
  if [[ "$seeds" =~ ^[0-9]+(,[0-9]+)*$ ]]; then  # anything else: the first fold's run says what is wrong
    IFS=, read -ra runs <<< "$seeds"
    for s in "${!runs[@]}"; do runs[$s]="/seed${runs[$s]}"; done
  fi
  for f in "${FOLDS[@]}"; do
    local done_before=yes
    for s in "${runs[@]}"; do [[ -f "$exp/$f$s/results.json" ]] || done_before=""; done
    if [[ -n "$done_before" ]]; then  # a rerun after a failure keeps the finished folds
      echo "[er.sh] evaluate: $f done before, keeping $exp/$f/${runs[0]:+seed*/}results.json" >&2
    else
      if compgen -G "$exp/$f/*.ckpt" >/dev/null || compgen -G "$exp/$f/seed*/*.ckpt" >/dev/null; then
        recipe_die "$exp/$f: an unfinished fold (runner checkpoints, no results.json); remove that folder to rerun it"
      fi
      echo "[er.sh] evaluate: $f of ${#FOLDS[@]} -> $exp/$f" >&2
      bash "$HERE/er.sh" evaluate ${args[@]+"${args[@]}"} --data "$data" --exp "$exp/$f" --fold "$f" || exit 1
    fi
  done
  local py tool; py="$(recipe_python)"; tool=("$py" "$RECIPES/recipe_tool.py")
  local per_seed=()
  for s in "${runs[@]}"; do
    local results=()
    for f in "${FOLDS[@]}"; do results+=("$exp/$f$s/results.json"); done
    mkdir -p "$exp$s"
    "${tool[@]}" folds --output "$exp$s/results.json" "${results[@]}" >/dev/null || exit 1
    per_seed+=("$exp$s/results.json")
    echo "[er.sh] ${s:+${s#/}: }mean test acc of ${#FOLDS[@]} folds = $(value_of "$exp$s/results.json") -> $exp$s/results.json" >&2
  done
  if [[ -n "${runs[0]}" ]]; then
    "${tool[@]}" fold-seeds --output "$exp/results.json" "${per_seed[@]}" >/dev/null || exit 1
    echo "[er.sh] mean over ${#runs[@]} seed(s) of the mean test acc of ${#FOLDS[@]} folds = $(value_of "$exp/results.json") -> $exp/results.json" >&2
  fi
}
value_of() { "$(recipe_python)" -c 'import json,sys; print(json.load(open(sys.argv[1]))["value"])' "$1"; }
if [[ "${1:-}" == evaluate ]]; then
  shift
  if five_folds "$@"; then exit 0; fi
  set -- evaluate "$@"
fi
recipe_main "$@"
