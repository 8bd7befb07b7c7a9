#!/usr/bin/env bash
# speechft's two entry points for a new user:
#   ./run.sh          the main job (set-up if needed, then the demo)
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
  (none)        set up .venv if needed, then run the demo: a tiny HuBERT is built,
                fine-tuned a few steps through s3prl's runner (-u speechft_hubert -f),
                resumed, and evaluated; results under exp/demo/
  test [ARGS]   set up .venv if needed, then run the tests (ARGS go to pytest,
                e.g. ./run.sh test -m slow, ./run.sh test -k registry)
  setup         only create or update .venv
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

demo() {
  local out="$ROOT/exp/demo"
  local cfg="$ROOT/downstream_recipes/configs/example.yaml"
  mkdir -p "$out"
  say "1/4 tiny HuBERT θ0 -> $out/theta0.pt"
  "$VENV/bin/speechft" make-tiny --arch hubert --seed 0 -o "$out/theta0.pt"
  rm -rf "$out/finetune"
  say "2/4 fine-tuning 6 steps through s3prl's runner: -u speechft_hubert -f -d example"
  "$PY" -m s3prl.run_downstream -m train -u speechft_hubert -k "$out/theta0.pt" -d example \
    -c "$cfg" -f --device cpu -p "$out/finetune"
  say "3/4 resuming to step 9 (-e)"
  "$PY" -m s3prl.run_downstream -m train -e "$out/finetune/states-6.ckpt" \
    -o config.runner.total_steps=9 --device cpu
  say "4/4 evaluating the best checkpoint on the test split"
  "$PY" -m s3prl.run_downstream -m evaluate -e "$out/finetune/dev-best.ckpt" --device cpu
  say "done: checkpoints and logs in $out/finetune"
}

cmd="${1:-}"
case "$cmd" in
  -h|--help|help) usage ;;
  setup) setup_venv ;;
  test)
    shift
    setup_venv
    cd "$ROOT"
    exec "$PY" -m pytest "$@"
    ;;
  "") setup_venv; demo ;;
  *) say "error: unknown command '$cmd'"; usage >&2; exit 2 ;;
esac
