"""RegMean benchmark: time and memory of gathering the Gram matrices on a HuBERT-Base-shaped model.

Builds a HuBERT-Base-shaped θ0 and θ′ (95M parameters, s3prl's converted format; random weights,
as merge_bench.py builds them) and SECONDS of synthetic audio (tones and noise, 10 s files),
then, each in its own child process with its peak RSS from os.wait4:

  grams     merge.regmean_stats.collect over the two models (θ0 and θ′ as the models merged):
            the forward passes plus the float64 Gram and cross-term accumulation
  speechft  python -m speechft_upstream.cli merge --method regmean --audio DIR (the Grams, the
            solves and the streamed write)

Wall time on a shared machine is noisy: CPU time (user + sys) is printed beside it.

    nice -n 5 python benchmarks/regmean_bench.py              # 60 s of audio
    nice -n 5 python benchmarks/regmean_bench.py --seconds 120
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import merge_bench  # noqa: E402  (same folder: its checkpoint builder and child runner)

REPO = merge_bench.REPO

GRAMS = """
import json, sys, time, torch
from speechft_upstream.checkpoints.stream import Source
from speechft_upstream.merge import regmean_stats
torch.set_num_threads(int(sys.argv[4]))
base = Source(sys.argv[1], allow_runner=False)
models = [Source(p, allow_runner=True) for p in (sys.argv[1], sys.argv[2])]
t = time.perf_counter()
stats = regmean_stats.collect(base, models, sys.argv[3], 0.9, progress=False)
seconds = time.perf_counter() - t
grams = {id(g): g for g, _ in stats.values()}
nbytes = sum(g.numel() * 8 for g in grams.values()) + sum(c.numel() * 8 for _, c in stats.values())
print(json.dumps({"grams_s": seconds, "stats_bytes": nbytes, "weights": len(stats), "grams": len(grams)}))
"""


def write_audio(folder, seconds):
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    left, i = seconds, 0
    while left > 0:
        n = int(min(10.0, left) * 16000)
        t = np.arange(n) / 16000
        f0 = 110 * 2 ** (rng.integers(0, 24) / 12)
        wav = sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6)) + 0.02 * rng.standard_normal(n)
        soundfile.write(folder / f"{i:03d}.wav", wav.astype(np.float32), 16000)
        left, i = left - 10.0, i + 1


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="audio length (default 60)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the children (default 2)")
    parser.add_argument("--skip-merge", action="store_true", help="time the Grams only")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=REPO) as tmp:
        folder = Path(tmp)
        paths = _build(folder)
        theta0, theta1 = paths["theta0"], paths["theta1"]
        write_audio(folder / "audio", args.seconds)
        ckpt = os.path.getsize(theta0)
        print(f"HuBERT-Base-shaped checkpoint {ckpt / 1e6:.0f} MB; {args.seconds:g} s of audio; "
              f"{args.threads} torch threads", flush=True)
        wall, rss, cpu, out = merge_bench.measure(
            [sys.executable, "-c", GRAMS, theta0, theta1, str(folder / "audio"), str(args.threads)], [], cold=False)
        info = json.loads(out.strip().splitlines()[-1])
        per_model_min = info["grams_s"] / 2 / (args.seconds / 60)
        print(f"grams     {info['grams_s']:7.1f} s inside ({per_model_min:.1f} s per model per minute of audio), "
              f"process {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {rss / 1e9:.2f} GB = {rss / ckpt:.1f}× "
              f"checkpoint; statistics {info['stats_bytes'] / 1e9:.2f} GB float64 "
              f"({info['grams']} Grams for {info['weights']} weights)", flush=True)
        if not args.skip_merge:
            out_path = folder / "merged.pt"
            cmd = [sys.executable, "-m", "speechft_upstream.cli", "merge", "--base", theta0, "--finetuned", theta0,
                   theta1, "--method", "regmean", "--audio", str(folder / "audio"), "--alpha", "1", "-o", str(out_path)]
            wall, rss, cpu, _ = merge_bench.measure(cmd, [theta0, theta1], cold=False)
            print(f"speechft  merge --method regmean: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS "
                  f"{rss / 1e9:.2f} GB = {rss / ckpt:.1f}× checkpoint", flush=True)


def _build(folder):
    """θ0 and θ′ written by a child (this process never imports torch: see merge_bench)."""
    code = ("import sys, json; sys.path.insert(0, sys.argv[2]); import merge_bench; from pathlib import Path; "
            "p, n = merge_bench.build('base', Path(sys.argv[1])); print(json.dumps({k: str(v) for k, v in p.items()}))")
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code, str(folder), str(Path(__file__).resolve().parent)],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
