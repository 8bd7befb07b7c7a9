"""Interpreter start-up cost of speechft's startup hook.

The hook (speechft_upstream.pth) runs at every Python start, so it must cost next to nothing
until torchaudio or s3prl is imported. Prints the median wall time of `python -c pass` with the
hook, with it disabled (SPEECHFT_NO_AUTOLOAD=1) and without site processing (`python -S`, no
.pth at all), from the same run, and the ratios.

    .venv/bin/python benchmarks/startup_bench.py [--runs 30]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time


def median_start(args, env, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args, "-c", "pass"], env=env, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="starts per variant (default 30)")
    args = parser.parse_args()

    base = {k: v for k, v in os.environ.items() if k != "SPEECHFT_NO_AUTOLOAD"}
    variants = {
        "hook on": ([], base),
        "hook off (SPEECHFT_NO_AUTOLOAD=1)": ([], {**base, "SPEECHFT_NO_AUTOLOAD": "1"}),
        "no site (python -S)": (["-S"], base),
    }
    median_start([], base, 3)  # warm the page cache before measuring
    results = {name: median_start(a, env, args.runs) for name, (a, env) in variants.items()}
    width = max(map(len, results))
    for name, seconds in results.items():
        print(f"{name:<{width}}  {seconds * 1000:7.2f} ms")
    on, off = results["hook on"], results["hook off (SPEECHFT_NO_AUTOLOAD=1)"]
    print(f"hook on / hook off: {on / off:.3f}x  (+{(on - off) * 1000:.2f} ms per start)")


if __name__ == "__main__":
    main()
