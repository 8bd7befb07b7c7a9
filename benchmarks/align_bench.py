"""Alignment benchmark: `speechft align` on HuBERT-Base-shaped models and 2 minutes of audio.

Builds two independently initialised HuBERT Base (95M parameters) checkpoints in s3prl's
converted format with s3prl's own HubertModel, and 2 minutes of synthetic 16 kHz audio (12 files
of 10 s: gliding tones and noise). Then runs, in its own subprocess as a user would,

    python -m speechft_upstream.cli align --reference A.pt --model B.pt --audio DIR -o B_ALIGNED.pt

with the default points (cnn, ffn, attn), and prints its wall time, CPU time (user + sys) and
peak RSS (os.wait4, exact whatever else runs), against the targets: at most 5 minutes on 2
cores, peak RSS at most 3x one checkpoint. Wall time on a shared machine is pessimistic; CPU time
is printed beside it. This script never imports torch itself (a child's peak RSS starts from its
parent's size at fork).

    python benchmarks/align_bench.py                 # ~5 minutes on 2 free cores
    python benchmarks/align_bench.py --seconds 30    # less audio, for a quick look
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S, TARGET_RSS = 300.0, 3.0

BUILD = """
import sys, torch, warnings
warnings.filterwarnings("ignore")
from s3prl.upstream.hubert.hubert_model import HubertConfig, HubertModel, HubertPretrainingConfig
from s3prl.upstream.utils import merge_with_parent
from speechft_upstream.checkpoints import files
task_cfg = {"label_rate": 50.0, "sample_rate": 16000, "normalize": False}
model_cfg = {"label_rate": 50.0}  # every other field: HuBERT Base's defaults
symbols = [["<s>", "<pad>", "</s>", "<unk>"] + [str(i) for i in range(504)]]
for seed, path in enumerate(sys.argv[1:]):
    torch.manual_seed(seed)
    model = HubertModel(merge_with_parent(HubertConfig, model_cfg), merge_with_parent(HubertPretrainingConfig, task_cfg), symbols)
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    files.save_atomic({"task_cfg": task_cfg, "model_cfg": model_cfg, "model_weight": weights,
                       "dictionaries_symbols": symbols}, path)
"""


def write_audio(folder, seconds):
    import numpy as np
    import soundfile

    rng = np.random.default_rng(0)
    n_files = max(1, round(seconds / 10))
    t = np.arange(int(seconds / n_files * 16000)) / 16000
    for i in range(n_files):
        f0 = 100 + 40 * i
        wav = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.3 * np.sin(0.7 * t + i))) + 0.05 * rng.standard_normal(t.size)
        soundfile.write(folder / f"{i:02d}.wav", wav.astype(np.float32), 16000)


def timed(args, env):
    start = time.perf_counter()
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        sys.exit(f"failed (status {status}):\n{output[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, output


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="audio to align on (default 120)")
    parser.add_argument("--points", default="cnn,ffn,attn")
    parser.add_argument("--workdir", help="keep the checkpoints and audio here (default: a temporary folder)")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        a, b, out, audio = tmp / "a.pt", tmp / "b.pt", tmp / "b_aligned.pt", tmp / "audio"
        audio.mkdir()
        write_audio(audio, args.seconds)
        print(f"building two HuBERT Base checkpoints and {args.seconds:g} s of audio in {tmp} ...", flush=True)
        subprocess.run([sys.executable, "-c", BUILD, a, b], env=env, check=True)
        size = a.stat().st_size
        wall, cpu, rss, output = timed([sys.executable, "-m", "speechft_upstream.cli", "align", "--reference", a,
                                        "--model", b, "--audio", audio, "-o", out, "--points", args.points], env)
        moved = [line.strip() for line in output.splitlines() if "units moved" in line]
    print(f"speechft align, HuBERT Base ({size / 2**20:.0f} MiB checkpoint), {args.seconds:g} s of audio, "
          f"points {args.points}, {os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f}):")
    print(f"  wall time  {wall:7.1f} s   (target <= {TARGET_S:.0f} s: {'ok' if wall <= TARGET_S else 'OVER'})")
    print(f"  CPU time   {cpu:7.1f} s   (user + sys)")
    print(f"  peak RSS   {rss / 2**20:7.0f} MiB = {rss / size:.2f}x the checkpoint "
          f"(target <= {TARGET_RSS:g}x: {'ok' if rss <= TARGET_RSS * size else 'OVER'})")
    if moved:
        print(f"  e.g. {moved[0]} | {moved[-1]}")


if __name__ == "__main__":
    main()
