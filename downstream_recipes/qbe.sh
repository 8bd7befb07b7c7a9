#!/usr/bin/env bash
# SUPERB QbE (QUESST 2014 query-by-example, MTWV) with s3prl's `quesst14_dtw` downstream: ./qbe.sh -h
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/common.sh"  # recipe_python, recipe_die
tool=("$(recipe_python)" "$HERE/recipe_tool.py" qbe --config "$HERE/configs/qbe.yaml")
case "${1:-}" in
  -h|--help|help)
    echo "usage: $(basename "$0") evaluate --ckpt ENCODER --data DIR --exp DIR [options]"
    echo "       ($(basename "$0") finetune is refused: DTW on frozen features has no head to train)"
    echo
    "${tool[@]}" --help | sed -n '/^options:/,$p' ;;
  evaluate) shift; exec "${tool[@]}" "$@" ;;
  finetune) recipe_die "qbe.sh finetune: QbE has nothing to fine-tune (s3prl's quesst14_dtw scores DTW on frozen features, no head); fine-tune on another task and run qbe.sh evaluate on its theta'" ;;
  "") "$0" --help >&2; exit 2 ;;
  *) recipe_die "unknown mode '$1' (evaluate; -h for help)" ;;
esac
