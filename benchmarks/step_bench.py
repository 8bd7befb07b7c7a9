"""Training step time of `-u speechft_hubert -f` against stock `-u hubert_local -f`.

Both run through s3prl's unmodified runner (`-d example`) on the same randomly initialised
HuBERT-shaped checkpoint. A run's start-up (imports, model build, data) is cancelled out by
running each variant with a short and a long step budget: step time = (t_long − t_short) /
(steps_long − steps_short). Variants alternate within every repeat so drifting machine load
hits them alike; the medians over repeats and their ratio to stock are printed.

speechft is measured with beta 0 (the encoder trains at every step, like stock) and with the
default beta 0.1 (the first 10% of steps skip the encoder's backward pass).

    .venv/bin/python benchmarks/step_bench.py [--layers 2] [--dim 128] [--repeats 3]
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "downstream_recipes" / "configs" / "example.yaml"


def write_model(path, layers, dim):
    """A HuBERT of the given depth and width (Base-like CNN) in s3prl's converted format."""
    import torch
    from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
    from s3prl.upstream.utils import merge_with_parent

    from speechft_upstream.checkpoints import files

    torch.manual_seed(0)
    task_cfg = {"label_rate": 50.0, "sample_rate": 16000, "normalize": False}
    model_cfg = {"encoder_layers": layers, "encoder_embed_dim": dim, "encoder_ffn_embed_dim": 4 * dim,
                 "encoder_attention_heads": max(1, dim // 64), "final_dim": 64, "label_rate": 50.0,
                 "conv_feature_layers": "[(128,10,5)] + [(128,3,2)] * 4 + [(128,2,2)] * 2"}
    symbols = [["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(100)]]
    model = HubertModel(merge_with_parent(HubertConfig, model_cfg),
                        merge_with_parent(HubertPretrainingConfig, task_cfg), symbols)
    n = sum(p.numel() for p in model.parameters())
    files.save_atomic({"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": model.state_dict(),
                            "dictionaries_symbols": symbols}, path)
    return n


def run(upstream, ckpt, steps, expdir, settings=None):
    override = (f"config.runner.total_steps={steps},,config.runner.eval_step={10 * steps},,"
                f"config.runner.save_step={10 * steps},,config.runner.log_step={10 * steps}")
    cmd = [sys.executable, "-m", "s3prl.run_downstream", "-m", "train", "-u", upstream, "-k", str(ckpt),
           "-d", "example", "-c", str(CONFIG), "-f", "--device", "cpu", "-p", str(expdir), "-o", override]
    if settings:
        cmd += ["-g", str(settings)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"step_bench: {upstream} run failed:\n{proc.stderr[-3000:]}")
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2, help="transformer layers (default 2)")
    parser.add_argument("--dim", type=int, default=128, help="model width (default 128)")
    parser.add_argument("--short", type=int, default=4, help="steps of the short run (default 4)")
    parser.add_argument("--long", type=int, default=24, help="steps of the long run (default 24)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats per variant (default 3)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "model.pt"
        n = write_model(ckpt, args.layers, args.dim)
        beta0, beta_default = tmp / "beta0.yaml", tmp / "beta01.yaml"
        beta0.write_text("beta: 0\n")
        beta_default.write_text("beta: 0.1\n")
        variants = {"hubert_local (stock)": ("hubert_local", None),
                    "speechft_hubert beta 0": ("speechft_hubert", beta0),
                    "speechft_hubert beta 0.1": ("speechft_hubert", beta_default)}
        print(f"model: HuBERT, {args.layers} layers x {args.dim} dims, {n / 1e6:.1f}M parameters; "
              f"runner -d example, batch 2, steps {args.short} vs {args.long}, {args.repeats} repeats")
        per_step = {name: [] for name in variants}
        for repeat in range(args.repeats):
            for name, (upstream, settings) in variants.items():
                short = run(upstream, ckpt, args.short, tmp / f"{repeat}-{upstream}-s", settings)
                long = run(upstream, ckpt, args.long, tmp / f"{repeat}-{upstream}-l", settings)
                per_step[name].append((long - short) / (args.long - args.short))
                print(f"  repeat {repeat + 1}: {name:26s} {1000 * per_step[name][-1]:7.1f} ms/step", flush=True)
    stock = statistics.median(per_step["hubert_local (stock)"])
    print(f"\n{'variant':28s} {'median ms/step':>15s} {'ratio to stock':>15s}")
    for name, times in per_step.items():
        median = statistics.median(times)
        print(f"{name:28s} {1000 * median:15.1f} {median / stock:15.3f}")


if __name__ == "__main__":
    main()
