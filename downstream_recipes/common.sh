# Shared body of the SUPERB task recipes (pr.sh, asr.sh, ks.sh, sid.sh, er.sh, ic.sh).
# A task script sets these, then sources this file and calls `recipe_main "$@"`:
#   TASK         short name (pr, asr, ...), also results.json's "task"
#   DOWNSTREAM   s3prl's -d name
#   CONFIG       the task's YAML (SUPERB defaults)
#   METRIC       the name the runner prints ("<split> <metric>: <value>")
#   HIGHER_IS_BETTER  true / false
#   DEV_SPLIT    the split s3prl names its best checkpoint after (<dev>-best.ckpt)
#   TEST_SPLIT   the split evaluate reports
#   DATA_PATHS   array of "config.key=@DATA/..." (alternatives with |; @RECIPES = this folder)
#   DATA_CHECK   array of paths under --data that must exist
#   BATCH_KEYS   array of config keys --batch-size sets
#   WORKER_KEYS  array of config keys --workers sets
#   RUNNER_FLAGS array of extra flags for recipe_tool.py runner (none needed today)
#   DATA_LAYOUT  one line describing the data folder, for -h and the missing-file error
# Optional: PER_ITEM (default yes; empty: the task's prediction files are not per-item outcomes of
# its metric, e.g. ASV's trials, so no items.json), EXTRA_METRICS (array: more metrics of the same log, results.json "metrics"),
# METRIC_LINE (what the runner prints before ": VALUE"; default "{split} {metric}").
# Optional: task_prepare DATA (writes derivable files the data folder lacks, before DATA_CHECK),
# task_option NAME VALUE (returns 0 when it took the option; may add to the array
# TASK_OVERRIDES), task_usage (more -h lines), task_extra_results (KEY=VALUE lines for results.json),
# task_result EXP DATA RUNNER_CKPT SCORES_JSON (writes {"value", "metrics"} from the runner's
# output when the runner prints no metric line, e.g. SD's DER), task_check DATA (more checks of
# the data folder before the runner starts; prints its own one-line error).

RECIPES="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$RECIPES")"

recipe_usage() {
  cat <<EOF
usage: $(basename "$0") finetune --ckpt THETA0 --data DIR --exp DIR [options]
       $(basename "$0") evaluate --ckpt ENCODER --data DIR --exp DIR [options]

SUPERB ${TASK^^} through s3prl's runner (-d $DOWNSTREAM, config $(basename "$CONFIG")).

modes:
  finetune   stable fine-tuning of THETA0 on this task (-f; head only for the first beta of
             the steps, then encoder and head; stable_finetuning_schedule); at the end the
             encoder theta' is written to EXP/theta_prime.pt (speechft extract)
  evaluate   SUPERB protocol: frozen upstream, weighted sum of all layers, the task's standard
             head; trains the head, evaluates the dev-best checkpoint (else the last one) on
             '$TEST_SPLIT' and writes EXP/results.json

options:
  --upstream NAME    s3prl upstream (default speechft_hubert; any -u name, e.g. hubert_local)
  --ckpt PATH        encoder checkpoint (-k); required for finetune
  --data DIR         task data: $DATA_LAYOUT
                     (full layout: downstream_recipes/README.md)
  --exp DIR          experiment folder (the runner's -p)
  --beta B           finetune: head-only fraction of the steps (default 0.1); applies to the
                     baselines too (the paper trains them with the same recipe)
  --baseline B       finetune: one of the paper's baselines instead of plain stable fine-tuning
                     (speechft_* upstreams): l2 (penalty toward THETA0) or lora (adapters only);
                     written to EXP/speechft.yaml. An early checkpoint needs no option: the
                     runner's states-N.ckpt (-o config.runner.save_step=N,,config.runner.max_keep=K)
  --l2-lambda X      --baseline l2: the penalty weight lambda, >= 0 (default 0.01)
  --lora-r N         --baseline lora: the adapters' rank (default 8; alpha 16, every attention
                     projection and both feed-forward layers, speechft_upstream/finetune/baselines.py)
  --features F       finetune: what the head reads (the runner's -s): last_hidden_state (the
                     last layer, as the authors fine-tune; default) or hidden_states (the
                     weighted sum of all layers, the SUPERB evaluation head's input)
  --steps N          total optimizer steps (default: the config's, SUPERB's)
  --max-steps N      the same as --steps; with --patience, the cap
  --patience N       evaluate: stop once N evaluations in a row (every eval_step) did not improve
                     the dev metric (EXP/early_stopping.json); default: train all --steps
  --feature-cache MB evaluate: keep the frozen upstream's features per utterance in memory (up
                     to MB), computed once per process; each utterance goes through the upstream
                     alone (not padded into its batch): see speechft_upstream/compat/feature_cache.py
  --batch-size N     training batch size (default: the config's)
  --lr LR            learning rate (default: evaluate the config's, finetune 1.0e-4)
  --workers N        data loader workers (default: the config's)
  --device DEV       cpu or cuda (default: cuda when available)
  --nproc N          processes (torchrun, DDP; gloo on cpu) for training (default 1)
  --seed N           runner seed: head initialisation and data order (default 1337)
  --seeds N,N,...    evaluate: one run per seed, all in one process, in EXP/seed<N>/ (each with
                     its results.json, items.json, train.log)
  -o, --override S   more s3prl overrides, joined with ',,' (e.g. config.runner.log_step=10)
EOF
  if declare -F task_usage >/dev/null; then task_usage; fi
  echo "  -h, --help         this help"
}

recipe_die() { echo "speechft: error: $*" >&2; exit 1; }

# --baseline and its values, checked before anything runs (one line on a bad one)
recipe_check_baseline() {
  local mode="$1" upstream="$2" baseline="$3" lam="$4" r="$5"
  if [[ -z "$baseline" ]]; then
    [[ -z "$lam" ]] || recipe_die "--l2-lambda needs --baseline l2"
    [[ -z "$r" ]] || recipe_die "--lora-r needs --baseline lora"
    return 0
  fi
  [[ "$baseline" == l2 || "$baseline" == lora ]] \
    || recipe_die "--baseline must be l2 or lora, got '$baseline' (an early checkpoint is a runner states-N.ckpt; see -h)"
  [[ "$mode" == finetune ]] || recipe_die "--baseline is for finetune (evaluate keeps the encoder frozen)"
  [[ "$upstream" == speechft_* ]] \
    || recipe_die "--baseline needs a speechft_* upstream (the baselines live in it), got --upstream '$upstream'"
  if [[ "$baseline" == l2 ]]; then
    [[ -z "$r" ]] || recipe_die "--lora-r is for --baseline lora, not l2"
    [[ -z "$lam" || "$lam" =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]] \
      || recipe_die "--l2-lambda must be a number >= 0, got '$lam'"
  else
    [[ -z "$lam" ]] || recipe_die "--l2-lambda is for --baseline l2, not lora"
    [[ -z "$r" || "$r" =~ ^[1-9][0-9]*$ ]] || recipe_die "--lora-r must be a positive integer, got '$r'"
  fi
}

recipe_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON";
  elif [[ -x "$REPO/.venv/bin/python" ]]; then echo "$REPO/.venv/bin/python";
  else command -v python3 || command -v python; fi
}

recipe_main() {
  local mode="${1:-}"
  case "$mode" in
    -h|--help|help) recipe_usage; return 0 ;;
    finetune|evaluate) shift ;;
    "") recipe_usage >&2; return 2 ;;
    *) recipe_die "unknown mode '$mode' (finetune or evaluate; -h for help)" ;;
  esac
  local upstream=speechft_hubert ckpt="" data="" exp="" beta=0.1 steps="" batch="" lr="" workers=""
  local device="" nproc=1 seed=1337 seeds="" extra="" patience="" fcache="" features=""
  local baseline="" l2_lambda="" lora_r=""
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h|--help) recipe_usage; return 0 ;;
      --upstream|--ckpt|--data|--exp|--beta|--features|--steps|--max-steps|--batch-size|--lr|--workers|--device|--nproc|--seed|--seeds|--patience|--feature-cache|--baseline|--l2-lambda|--lora-r|-o|--override)
        [[ $# -ge 2 ]] || recipe_die "$1 needs a value"
        case "$1" in
          --upstream) upstream="$2" ;; --ckpt) ckpt="$2" ;; --data) data="$2" ;; --exp) exp="$2" ;;
          --beta) beta="$2" ;; --features) features="$2" ;; --steps|--max-steps) steps="$2" ;; --batch-size) batch="$2" ;; --lr) lr="$2" ;;
          --patience) patience="$2" ;; --seeds) seeds="$2" ;; --feature-cache) fcache="$2" ;;
          --workers) workers="$2" ;; --device) device="$2" ;; --nproc) nproc="$2" ;; --seed) seed="$2" ;;
          --baseline) baseline="$2" ;; --l2-lambda) l2_lambda="$2" ;; --lora-r) lora_r="$2" ;;
          -o|--override) extra="${extra:+$extra,,}$2" ;;
        esac
        shift 2 ;;
      *)
        if declare -F task_option >/dev/null && [[ $# -ge 2 ]] && task_option "$1" "$2"; then shift 2;
        else recipe_die "unknown option '$1' (-h for help)"; fi ;;
    esac
  done
  recipe_check_baseline "$mode" "$upstream" "$baseline" "$l2_lambda" "$lora_r"
  [[ -n "$data" ]] || recipe_die "--data DIR is required"
  [[ -n "$exp" ]] || recipe_die "--exp DIR is required"
  [[ -d "$data" ]] || recipe_die "$data: no such data folder"
  if declare -F task_prepare >/dev/null; then task_prepare "$data" || exit 1; fi
  local need
  for need in "${DATA_CHECK[@]}"; do
    [[ -e "$data/$need" ]] || recipe_die "$data: missing $need (${TASK^^} data layout: $DATA_LAYOUT; see downstream_recipes/README.md)"
  done
  if declare -F task_check >/dev/null; then task_check "$data" || exit 1; fi
  if [[ "$mode" == finetune ]]; then
    [[ -n "$ckpt" ]] || recipe_die "finetune needs --ckpt THETA0 (the encoder to fine-tune)"
    features="${features:-last_hidden_state}"
    [[ "$features" == last_hidden_state || "$features" == hidden_states ]] \
      || recipe_die "--features must be last_hidden_state or hidden_states, got '$features'"
  elif [[ -n "$features" ]]; then
    recipe_die "--features applies to finetune; evaluate always reads the weighted sum of all layers (SUPERB)"
  fi
  [[ -z "$ckpt" || -f "$ckpt" ]] || recipe_die "$ckpt: no such checkpoint file"
  [[ "$nproc" =~ ^[1-9][0-9]*$ ]] || recipe_die "--nproc must be a positive integer, got '$nproc'"
  if [[ -n "$patience" ]]; then
    [[ "$patience" =~ ^[1-9][0-9]*$ ]] || recipe_die "--patience must be a positive integer, got '$patience'"
    [[ "$mode" == evaluate ]] || recipe_die "--patience is for evaluate (finetune's schedule needs its fixed step budget)"
  fi
  local seed_list=("$seed")
  if [[ -n "$seeds" ]]; then
    [[ "$seeds" =~ ^[0-9]+(,[0-9]+)*$ ]] || recipe_die "--seeds must be comma-separated integers, got '$seeds'"
    [[ "$mode" == evaluate ]] || recipe_die "--seeds is for evaluate"
    [[ "$nproc" == 1 ]] || recipe_die "--seeds runs in one process; leave out --nproc"
    IFS=, read -ra seed_list <<< "$seeds"
  fi
  for v in "$steps" "$batch" "$workers" "$seed"; do
    [[ -z "$v" || "$v" =~ ^[0-9]+$ ]] || recipe_die "'$v' is not a non-negative integer"
  done

  local py; py="$(recipe_python)"
  if [[ -z "$device" ]]; then
    device="$("$py" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')"
  fi
  mkdir -p "$exp"
  exp="$(cd "$exp" && pwd)"
  data="$(cd "$data" && pwd)"
  [[ -z "$ckpt" ]] || ckpt="$(cd "$(dirname "$ckpt")" && pwd)/$(basename "$ckpt")"
  local exps=("$exp") e
  if [[ -n "$seeds" ]]; then
    exps=()
    for e in "${seed_list[@]}"; do exps+=("$exp/seed$e"); mkdir -p "$exp/seed$e"; done
  fi
  for e in "${exps[@]}"; do
    if compgen -G "$e/states-*.ckpt" >/dev/null || compgen -G "$e/*-best.ckpt" >/dev/null \
       || compgen -G "$e/best-states-*.ckpt" >/dev/null; then
      recipe_die "$e: already holds runner checkpoints; use a new --exp folder"
    fi
  done

  local tool=("$py" "$RECIPES/recipe_tool.py")
  local ov_args=(--config "$CONFIG" --data "$data")
  local item
  for item in "${DATA_PATHS[@]}"; do ov_args+=(--data-path "$item"); done
  for item in "${BATCH_KEYS[@]}"; do ov_args+=(--batch-key "$item"); done
  for item in "${WORKER_KEYS[@]}"; do ov_args+=(--workers-key "$item"); done
  [[ -z "$steps" ]] || ov_args+=(--steps "$steps")
  [[ -z "$batch" ]] || ov_args+=(--batch-size "$batch")
  [[ -z "$workers" ]] || ov_args+=(--workers "$workers")
  if [[ "$mode" == finetune ]]; then
    ov_args+=(--lr "${lr:-1.0e-4}" --scheduler stable_finetuning_schedule)
  elif [[ -n "$lr" ]]; then
    ov_args+=(--lr "$lr")
  fi
  for item in ${TASK_OVERRIDES[@]+"${TASK_OVERRIDES[@]}"}; do ov_args+=(--extra "$item"); done
  [[ -z "$patience" ]] || ov_args+=(--extra "config.runner.speechft_patience=$patience")
  if [[ -n "$fcache" ]]; then
    [[ "$fcache" =~ ^[0-9]+$ ]] || recipe_die "--feature-cache must be a size in MB, got '$fcache'"
    [[ "$mode" == evaluate ]] || recipe_die "--feature-cache is for evaluate (a frozen upstream)"
    ov_args+=(--extra "config.runner.speechft_feature_cache=$fcache")
  fi
  [[ -z "$extra" ]] || ov_args+=(--extra "$extra")
  local overrides; overrides="$("${tool[@]}" overrides "${ov_args[@]}")" || exit 1

  local train=(-m train -u "$upstream" -d "$DOWNSTREAM" -c "$CONFIG" --device "$device" -o "$overrides")
  [[ -z "$ckpt" ]] || train+=(-k "$ckpt")
  if [[ "$mode" == finetune ]]; then
    "$py" - "$beta" "$exp/speechft.yaml" "$baseline" "${l2_lambda:-0.01}" "${lora_r:-8}" <<'EOF' || exit 1
import sys
try:
    beta = float(sys.argv[1])
except ValueError:
    beta = -1
if not 0 <= beta < 1:
    sys.exit(f"speechft: error: --beta must be a number in [0, 1), got {sys.argv[1]!r}")
baseline, lam, r = sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
text = f"# speechft settings for -u speechft_*: stable fine-tuning\nbeta: {beta}\n"
if baseline:
    import yaml  # its own dump: a bare 1e-05 would read back as a string, not a number
    section = {"l2": {"lambda": lam}} if baseline == "l2" else {"lora": {"r": r}}
    text += f"# baseline (--baseline {baseline}; unset options: baselines.py)\n"
    text += yaml.safe_dump(section, default_flow_style=None)
open(sys.argv[2], "w").write(text)
EOF
    train+=(-f -g "$exp/speechft.yaml" -s "$features")
  fi

  # recipe_tool.py runner: s3prl's unmodified runner (torchrun-aware) plus the recipes' fixes
  local run=("$RECIPES/recipe_tool.py" runner "${RUNNER_FLAGS[@]}" --cache-dir "$exp/cache" --)
  set -o pipefail
  if [[ "$nproc" -gt 1 ]]; then
    echo "[${TASK}.sh] $mode: training (-d $DOWNSTREAM, $nproc process(es), log $exp/train.log)" >&2
    "$py" -m torch.distributed.run --standalone --nproc_per_node "$nproc" "${run[@]}" "${train[@]}" -p "$exp" \
      --seed "$seed" 2>&1 | tee "$exp/train.log" || recipe_die "training failed (exit ${PIPESTATUS[0]}); see $exp/train.log"
    if [[ "$mode" == evaluate ]]; then
      "$py" "${run[@]}" --log "$exp/evaluate.log" -m evaluate -e "@pick:$exp:$DEV_SPLIT" -t "$TEST_SPLIT" \
        --device "$device" || recipe_die "evaluation failed; see $exp/evaluate.log"
    fi
  elif [[ "$mode" == finetune ]]; then
    echo "[${TASK}.sh] $mode: training (-d $DOWNSTREAM, log $exp/train.log)" >&2
    "$py" "${run[@]}" --log "$exp/train.log" "${train[@]}" -p "$exp" --seed "$seed" \
      || recipe_die "training failed; see $exp/train.log"
  else
    # one process trains every seed, then tests each one's dev-best (else last) checkpoint: the
    # runner's imports are paid once; each run logs to its own train.log / evaluate.log
    local segments=() i
    for i in "${!seed_list[@]}"; do
      [[ "$i" == 0 ]] || segments+=(--next)
      segments+=(--log "${exps[$i]}/train.log" "${train[@]}" -p "${exps[$i]}" --seed "${seed_list[$i]}")
    done
    for i in "${!seed_list[@]}"; do
      segments+=(--next --log "${exps[$i]}/evaluate.log" -m evaluate -e "@pick:${exps[$i]}:$DEV_SPLIT"
                 -t "$TEST_SPLIT" --device "$device")
    done
    echo "[${TASK}.sh] evaluate: training seed(s) ${seed_list[*]} (-d $DOWNSTREAM), then each dev-best (else last) checkpoint on $TEST_SPLIT; logs: ${exps[*]/%//train.log} and evaluate.log" >&2
    "$py" "${run[@]}" "${segments[@]}" || recipe_die "training or evaluation failed; see ${exps[*]/%//train.log} and evaluate.log"
  fi

  if [[ "$mode" == finetune ]]; then
    local picked; picked="$("${tool[@]}" pick "$exp" --dev-split "$DEV_SPLIT")" || exit 1
    "$py" -m speechft_upstream.cli extract "$picked" --base "$ckpt" -o "$exp/theta_prime.pt" --force \
      || recipe_die "could not extract theta' from $picked"
    echo "[${TASK}.sh] theta' (from $(basename "$picked")): $exp/theta_prime.pt" >&2
    return 0
  fi

  local picks=() e
  for e in "${exps[@]}"; do
    local picked; picked="$("${tool[@]}" pick "$e" --dev-split "$DEV_SPLIT")" || exit 1
    picks+=("$picked")
  done
  local res_extra=()
  if declare -F task_extra_results >/dev/null; then
    while IFS= read -r item; do res_extra+=(--extra "$item"); done < <(task_extra_results)
  fi
  local res_runs=()
  for i in "${!exps[@]}"; do
    res_runs+=(--log "${exps[$i]}/evaluate.log" --runner-ckpt "${picks[$i]}" --output "${exps[$i]}/results.json"
               --seed "${seed_list[$i]}")
    if declare -F task_result >/dev/null; then  # the task scores the runner's output itself (SD)
      task_result "${exps[$i]}" "$data" "${picks[$i]}" "${exps[$i]}/${TASK}_scores.json" || exit 1
      res_runs+=(--scores "${exps[$i]}/${TASK}_scores.json")
    fi
  done
  for item in ${EXTRA_METRICS[@]+"${EXTRA_METRICS[@]}"}; do res_extra+=(--also-metric "$item"); done
  [[ -z "${METRIC_LINE:-}" ]] || res_extra+=(--line "$METRIC_LINE")
  # one call for every seed; per-item outcomes for the paired tests: the test split (the picked
  # checkpoint, checked against the printed value) and the last dev pass
  local items=(--items --dev-items "$DEV_SPLIT")
  [[ -n "${PER_ITEM-yes}" ]] || items=()
  "${tool[@]}" result --task "$TASK" --metric "$METRIC" --split "$TEST_SPLIT" --upstream "$upstream" \
    --higher-is-better "$HIGHER_IS_BETTER" ${ckpt:+--encoder-ckpt "$ckpt"} "${res_runs[@]}" \
    ${items[@]+"${items[@]}"} "${res_extra[@]}" >/dev/null || exit 1
  for i in "${!exps[@]}"; do
    echo "[${TASK}.sh] seed ${seed_list[$i]}: $TEST_SPLIT $METRIC = $("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["value"])' "${exps[$i]}/results.json") -> ${exps[$i]}/results.json" >&2
  done
}
