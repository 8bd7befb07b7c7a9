#!/usr/bin/env bash
# speechft's two entry points for a new user:
#   ./run.sh          the main job (set-up if needed, then the mini-SUPERB benchmark)
#   ./run.sh test     the test suite
# Both create or reuse the project's virtual environment in .venv on first use.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
TORCH_VERSION="2.13.0"

usage() {
  cat <<'EOF'
usage: ./run.sh [COMMAND] [ARGS...]

commands:
  (none)        set up .venv if needed, then the main job, the offline mini-SUPERB benchmark
                (speechft benchmark; 27 minutes on a quiet 2-core machine from a fresh clone, set-up included):
                eSpeak NG corpus, the shipped θ0, stable fine-tuning on PR -> θ′ and the L2 baseline, merges θ̂_α, α chosen on dev,
                SUPERB protocol for FBANK, θ0, θ′, θ̂, the baseline on PR, SID, KS, IC, ER (--tasks all: the ten SUPERB tasks);
                report in results/ (results.md,
                .csv, .json, scores.json, plots), stages cached in exp/mini_superb/ and reused
  --paper       the paper's experiments: θ′ on PR, SID and ER (each with its α), the multi-task merge,
                the L2 / LoRA / early-checkpoint baselines, unsupervised pre-training on a second
                language; the paper's table and its claims (README.md "The main job"); with --quick too
  --quick       the same, smaller and shorter (about 7 minutes; report in results/quick/); other options go to
                speechft benchmark (--out DIR, --work DIR, --jobs N, --tasks T,T; see
                .venv/bin/speechft benchmark -h)
  --data-root DIR --theta0 CKPT [--gpus N | --slurm ...]
                the paper's table on real SUPERB data (DIR/<task>/ as each recipe documents;
                θ0 e.g. fairseq hubert_base_ls960.pt; SUPERB's budgets, --size superb): README.md "Full scale"
  demo          the short demo (about 40 s): a tiny HuBERT θ0 is built, stable-fine-tuned a few
                steps through s3prl's runner (-u speechft_hubert -f), resumed, extracted as θ′,
                merged at α = 0.25 into θ̂, and θ̂ evaluated with the frozen-upstream protocol;
                results under exp/demo/
  test [ARGS]   set up .venv if needed, then run the tests (ARGS go to pytest,
                e.g. ./run.sh test -m slow, ./run.sh test -k registry)
  setup         only create or update .venv
  setup --fairseq
                also build .venv-fairseq: .venv plus fairseq 0.12.2 (--no-deps, patched with
                patches/fairseq/ to import on Python 3.11), hydra-core 1.3, omegaconf 2.3;
                only needed to run fairseq itself (speechft convert does not need it)
  -h, --help    this help

environment:
  PYTHON                   the interpreter to build .venv with (default: python3.11, python3)
  SPEECHFT_TORCH_INDEX_URL a pip index for torch (e.g. a CPU-only wheel index); by default
                           pip's own choice of torch==2.13.0 is used
EOF
}

say() { printf '[run.sh] %s\n' "$*" >&2; }

setup_hash() {
  cat "$ROOT/setup.py" "$ROOT/requirements/venv.txt" "$ROOT/requirements/constraints.txt" \
    | sha256sum | cut -d' ' -f1
}

setup_venv() {
  local stamp="$VENV/.speechft-setup" want
  want="$(setup_hash)"
  if [[ -x "$PY" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  local base="${PYTHON:-}"
  if [[ -z "$base" ]]; then
    base="$(command -v python3.11 || command -v python3 || true)"
  fi
  [[ -n "$base" ]] || { say "error: no python3 found; set PYTHON=/path/to/python3.11"; exit 1; }
  if [[ ! -x "$PY" ]]; then
    say "creating $VENV with $("$base" --version 2>&1)"
    "$base" -m venv "$VENV"
  fi
  say "installing pinned dependencies into .venv (first time: about 2 minutes)"
  "$PY" -m pip install --quiet --upgrade "pip>=24" setuptools wheel
  # torch first and alone: a torch that already satisfies the pin is kept (a CPU build stays a
  # CPU build); asking for it together with other packages can make pip pick a CUDA build.
  local torch_args=("torch==$TORCH_VERSION")
  if [[ -n "${SPEECHFT_TORCH_INDEX_URL:-}" ]]; then
    torch_args+=(--index-url "$SPEECHFT_TORCH_INDEX_URL")
  fi
  "$PY" -m pip install --quiet "${torch_args[@]}"
  "$PY" -m pip install --quiet -c "$ROOT/requirements/constraints.txt" \
    -r "$ROOT/requirements/venv.txt"
  # Editable, so the checkout is what runs; the install also places the startup hook (.pth).
  "$PY" -m pip install --quiet --no-deps -e "$ROOT"
  "$PY" - <<'EOF'
import s3prl.hub as hub, torch
assert hasattr(hub, "speechft_hubert"), "speechft upstreams not registered: startup hook missing"
print(f"[run.sh] ready: torch {torch.__version__}, s3prl {__import__('s3prl').__version__}")
EOF
  echo "$want" > "$stamp"
}

# .venv-fairseq: its own site-packages (fairseq, hydra-core 1.3, omegaconf 2.3) first, then
# .venv's through a .pth (site.addsitedir, so .venv's own .pth files, the speechft hook
# included, still run). .venv keeps omegaconf 2.4; nothing in it changes.
FAIRSEQ_VENV="$ROOT/.venv-fairseq"
FAIRSEQ_VERSION="0.12.2"
FAIRSEQ_DEPS=("hydra-core>=1.3,<1.4" "omegaconf>=2.3,<2.4" "bitarray" "sacrebleu>=1.4.12"
              "regex" "cffi" "cython")

setup_fairseq() {
  local fpy="$FAIRSEQ_VENV/bin/python" stamp="$FAIRSEQ_VENV/.speechft-setup" want
  want="$( (setup_hash; cat "$ROOT"/patches/fairseq/*.patch) | sha256sum | cut -d' ' -f1)"
  if [[ -x "$fpy" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    say "fairseq ready in $FAIRSEQ_VENV"; return 0
  fi
  if [[ ! -x "$fpy" ]]; then
    say "creating $FAIRSEQ_VENV on top of .venv"
    "$("$PY" -c 'import sys; print(sys._base_executable)')" -m venv "$FAIRSEQ_VENV"
  fi
  "$fpy" -c 'import sys, sysconfig, pathlib; pathlib.Path(sysconfig.get_paths()["purelib"],
    "_speechft_base_venv.pth").write_text(f"import site; site.addsitedir({sys.argv[1]!r})\n")' \
    "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  say "installing fairseq $FAIRSEQ_VERSION into .venv-fairseq (first time: several minutes, it compiles)"
  "$fpy" -m pip install --quiet --upgrade "pip>=24" setuptools wheel
  "$fpy" -m pip install --quiet "${FAIRSEQ_DEPS[@]}"
  # fairseq's own pins (hydra-core<1.1, omegaconf<2.1) do not install on Python 3.11: --no-deps.
  # No fairseq wheel for Python 3.11 exists: build the sdist with patches/fairseq/ applied.
  local sdist="$ROOT/.cache/sdist" src
  mkdir -p "$sdist"
  [[ -f "$sdist/fairseq-$FAIRSEQ_VERSION.tar.gz" ]] || "$fpy" -m pip download --quiet --no-deps \
    --no-binary :all: --no-build-isolation "fairseq==$FAIRSEQ_VERSION" -d "$sdist"
  src="$(mktemp -d)"
  tar xzf "$sdist/fairseq-$FAIRSEQ_VERSION.tar.gz" -C "$src"
  "$ROOT/patches/apply.sh" "$src/fairseq-$FAIRSEQ_VERSION"
  "$fpy" -m pip install --quiet --no-deps --no-build-isolation "$src/fairseq-$FAIRSEQ_VERSION"
  rm -rf "$src"
  "$fpy" -c 'import fairseq, fairseq.checkpoint_utils, omegaconf, s3prl.hub
print(f"[run.sh] fairseq {fairseq.__version__} ready (omegaconf {omegaconf.__version__}): .venv-fairseq/bin/python")'
  echo "$want" > "$stamp"
}

demo() {
  local out="$ROOT/exp/demo"
  local cfg="$ROOT/downstream_recipes/configs/example.yaml"
  local sft="$VENV/bin/speechft"
  mkdir -p "$out"
  printf 'beta: 0.5\n' > "$out/speechft.yaml"  # 6 steps: head only for steps 1-3
  say "1/6 tiny HuBERT θ0 -> $out/theta0.pt"
  "$sft" make-tiny --arch hubert --seed 0 -o "$out/theta0.pt"
  rm -rf "$out/finetune" "$out/evaluate"
  say "2/6 stable fine-tuning, 6 steps through s3prl's runner: -u speechft_hubert -f -d example"
  "$PY" -m s3prl.run_downstream -m train -u speechft_hubert -k "$out/theta0.pt" -d example \
    -c "$cfg" -f -g "$out/speechft.yaml" --device cpu -p "$out/finetune"
  say "3/6 resuming to step 9 (-e)"
  "$PY" -m s3prl.run_downstream -m train -e "$out/finetune/states-6.ckpt" \
    -o config.runner.total_steps=9 --device cpu
  say "4/6 θ′ = the encoder of the last checkpoint -> $out/theta_prime.pt"
  "$sft" extract "$out/finetune/states-9.ckpt" --base "$out/theta0.pt" -o "$out/theta_prime.pt" --force
  say "5/6 θ̂ = 0.75·θ0 + 0.25·θ′ -> $out/merged.pt"
  "$sft" merge --base "$out/theta0.pt" --finetuned "$out/theta_prime.pt" --alpha 0.25 \
    -o "$out/merged.pt" --force
  "$sft" info "$out/merged.pt"
  say "6/6 SUPERB protocol on θ̂: frozen -u speechft_hubert -k merged.pt, weighted sum, train + test"
  "$PY" -m s3prl.run_downstream -m train -u speechft_hubert -k "$out/merged.pt" -d example \
    -c "$cfg" --device cpu -p "$out/evaluate"
  "$PY" -m s3prl.run_downstream -m evaluate -e "$out/evaluate/dev-best.ckpt" --device cpu
  say "done: θ0, θ′, θ̂ and the runs in $out"
}

cmd="${1:-}"
case "$cmd" in
  -h|--help|help) usage ;;
  setup)
    setup_venv
    if [[ "${2:-}" == "--fairseq" ]]; then setup_fairseq; fi
    ;;
  test)
    shift
    setup_venv
    cd "$ROOT"
    exec "$PY" -m pytest "$@"
    ;;
  ""|--*) setup_venv; cd "$ROOT"; exec "$VENV/bin/speechft" benchmark "$@" ;;
  demo) setup_venv; demo ;;
  *) say "error: unknown command '$cmd'"; usage >&2; exit 2 ;;
esac
