#!/usr/bin/env bash
# Unsupervised fine-tuning (the Speech-FT paper's continued pre-training) of a HuBERT θ0 on a
# folder of unlabelled 16 kHz mono audio: θ0 → θ′ in s3prl's converted format.
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: downstream_recipes/unsupervised.sh --ckpt THETA0 --audio DIR -o THETA_PRIME.pt [OPTIONS]

Trains θ0 with the simplified HuBERT loss (cross-entropy on masked frames against the argmax of
the model's own codeword logits; CNN, final_proj and codebook frozen) and writes θ′ plus
THETA_PRIME-stem.loss.json (loss per step). All options go to `speechft unsupervised`:

  --steps N          optimizer steps (default 1000)
  --lr LR            peak learning rate (default 5e-5; 10% warm-up, 40% hold, 50% decay)
  --batch-size B     random crops per step (default 8)
  --max-seconds S    longest crop (default 15)
  --mask-prob P      HuBERT mask_prob (default: the checkpoint's config)
  --targets current|theta0   model giving the targets (default current)
  --seed N  --device cpu|cuda  --force

Then, e.g.:  speechft merge --base THETA0 --finetuned THETA_PRIME.pt --alpha 0.25 -o merged.pt
             downstream_recipes/<task>.sh evaluate --ckpt merged.pt ...
Environment: PYTHON (default: the project's .venv, else python3).
USAGE
}

case "${1:-}" in
  -h|--help|"") usage; [ -n "${1:-}" ]; exit $? ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m speechft_upstream.cli unsupervised "$@"
