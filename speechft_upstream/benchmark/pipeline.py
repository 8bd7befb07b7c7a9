"""The mini-SUPERB pipeline behind `speechft benchmark` (./run.sh).

1. corpus      `speechft corpus` (eSpeak NG, offline) in each task's s3prl layout
2. θ0          `speechft pretrain` (tiny HuBERT, MFCC k-means targets); `speechft make-tiny` only
               when this speechft has no `pretrain` command (said loudly, and in the report)
3. θ′          stable fine-tuning on PR: `downstream_recipes/pr.sh finetune`
4. merges      `speechft merge` θ̂_α = (1−α)·θ0 + α·θ′ for α in ALPHAS, one pass
5. evaluate    the SUPERB protocol (`<task>.sh evaluate`: frozen encoder, weighted sum of layers,
               the task's head trained, dev-best checkpoint tested) for FBANK (`-u fbank`), θ0,
               every θ̂_α and θ′ (= α 1.0) on PR, SID, KS, IC, ER (prosody)
6. select α    the α whose *dev* SUPERB-style score (1000 × mean over tasks of
               (dev − FBANK dev)/(perfect − FBANK dev)) is highest; its *test* rows are θ̂
7. analyze     `speechft analyze --base θ0 --models θ′ θ̂` on held-out test audio
8. report      results.{md,csv,json}, scores.json, plots (report.py)

Every stage keeps a ``stage.json`` (its parameters' key, outputs, time) in its folder under
--work; a second run reuses a stage when the key matches and the outputs are there, and redoes
it (and what depends on it) otherwise.
"""

import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from speechft_upstream import checkpoint
from speechft_upstream.errors import SpeechFTError

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "downstream_recipes"
ALPHAS = (0.1, 0.25, 0.5, 0.75, 1.0)

# task: (recipe, corpus subfolder, metric the runner prints, name in the table, higher is better)
TASKS = {
    "PR": ("pr.sh", "pr", "per", "PER", False),
    "SID": ("sid.sh", "sid", "acc", "ACC", True),
    "KS": ("ks.sh", "ks", "acc", "ACC", True),
    "IC": ("ic.sh", "ic", "acc", "ACC", True),
    "ER": ("er.sh", "er", "acc", "ACC", True),
}

# Sizes. Evaluation: steps, batch size, learning rate of the head per task; every run uses one
# gradient accumulation step and no data-loader workers (2 cores). "smoke" is for the tests.
SIZES = {
    "full": {
        "corpus": "default", "theta0": "pretrain", "alphas": ALPHAS,
        "finetune": {"steps": 800, "batch": 8, "lr": 1e-3, "beta": 0.1},
        "eval": {"PR": (400, 8, 1e-2), "SID": (400, 8, 5e-3), "KS": (300, 16, 5e-3),
                 "IC": (300, 16, 5e-3), "ER": (300, 8, 5e-3)},
        "analyze_files": 60,
    },
    "quick": {
        "corpus": "quick", "theta0": "pretrain", "alphas": (0.25, 0.5, 1.0),
        "finetune": {"steps": 200, "batch": 8, "lr": 1e-3, "beta": 0.1},
        "eval": {"PR": (120, 8, 1e-2), "SID": (100, 8, 1e-2), "KS": (100, 16, 1e-2),
                 "IC": (100, 16, 1e-2), "ER": (100, 8, 1e-2)},
        "analyze_files": 30,
    },
    # the tests' size: a tiny corpus (whose IC split lacks some train labels), random θ0, PR and KS
    "smoke": {
        "corpus": "tiny", "theta0": "make-tiny", "alphas": (0.25, 1.0), "tasks": ("PR", "KS"),
        "finetune": {"steps": 4, "batch": 2, "lr": 1e-3, "beta": 0.25},
        "eval": {t: (3, 2, 1e-3) for t in TASKS},
        "analyze_files": 6,
    },
}

BASELINE = "fbank"
ENCODER_LABELS = {"fbank": "FBANK", "theta0": "θ0", "theta_prime": "θ′", "theta_hat": "θ̂"}


def say(message=""):
    print(message, file=sys.stderr, flush=True)


def header(index, total, title):
    say("")
    say(f"==== [{index}/{total}] {title} " + "=" * max(4, 70 - len(title)))


def _strip(value):
    """``value`` without the run-time entries (``_seconds``, ``_reused``) stages add to their outputs."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, (list, tuple)):
        return [_strip(v) for v in value]
    return value


def _key(params):
    return hashlib.sha256(json.dumps(_strip(params), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _env():
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    env["PYTHON"] = sys.executable  # the recipes' interpreter
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::UserWarning")
    return env


def _speechft(*args):
    return [sys.executable, "-m", "speechft_upstream.cli", *map(str, args)]


def run_cmd(cmd, log=None, stream=True, cwd=None):
    """Run ``cmd``; the output goes to the terminal (stream) and/or ``log``. Raises on failure."""
    cmd = [str(c) for c in cmd]
    if log is None and stream:
        proc = subprocess.run(cmd, env=_env(), cwd=cwd)
        if proc.returncode:
            raise SpeechFTError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}")
        return
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8", errors="replace") as handle:
        proc = subprocess.Popen(cmd, env=_env(), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1)
        for line in proc.stdout:
            handle.write(line)
            if stream:
                sys.stderr.write(line)
        proc.wait()
    if proc.returncode:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-15:])
        raise SpeechFTError(f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                            f"--- last lines of {log} ---\n{tail}")


class Stage:
    """A cached stage: ``folder/stage.json`` holds the key of its parameters and its outputs."""

    def __init__(self, folder, params):
        self.folder = Path(folder)
        self.params = params
        self.key = _key(params)
        self.marker = self.folder / "stage.json"

    def cached(self):
        """The stored outputs when the stage is done with these parameters and its files exist."""
        if not self.marker.is_file():
            return None
        try:
            data = json.loads(self.marker.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if data.get("key") != self.key:
            return None
        outputs = data.get("outputs", {})
        for path in data.get("files", []):
            if not (self.folder / path).exists():
                return None
        outputs["_seconds"] = data.get("seconds", 0.0)
        outputs["_reused"] = True
        return outputs

    def start(self):
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self._started = time.time()

    def finish(self, outputs, files):
        seconds = time.time() - self._started
        data = {"key": self.key, "params": self.params, "outputs": outputs, "files": list(files),
                "seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        checkpoint.write_json_atomic(data, self.marker, indent=2, default=str)
        return dict(outputs, _seconds=seconds, _reused=False)


def pretrain_available():
    """Whether this speechft has the `pretrain` command."""
    from speechft_upstream import cli

    parser = cli.build_parser()
    for action in parser._subparsers._group_actions:
        if "pretrain" in getattr(action, "choices", {}) or {}:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# stages


def stage_corpus(work, size, seed):
    from speechft_upstream.data import corpus as corpus_module

    stage = Stage(work / "corpus", {"size": SIZES[size]["corpus"], "seed": seed,
                                    "format": corpus_module.FORMAT_VERSION})
    done = stage.cached()
    if done:
        say(f"reusing {stage.folder} (eSpeak NG corpus, {SIZES[size]['corpus']} size, seed {seed})")
        return done
    stage.start()
    data = stage.folder / "data"
    if SIZES[size]["corpus"] == "tiny":  # the tests' size: not offered by the CLI
        from speechft_upstream.data import corpus

        corpus.generate(data, seed=seed, size="tiny", progress=lambda m: say(f"[corpus] {m}"))
    else:
        cmd = _speechft("corpus", "--out", data, "--seed", seed)
        if SIZES[size]["corpus"] == "quick":
            cmd.append("--quick")
        say("$ speechft " + " ".join(map(str, cmd[3:])))
        run_cmd(cmd)
    manifest = json.loads((data / "corpus.json").read_text())
    for task, (_, folder, *_rest) in TASKS.items():
        if not (data / folder).is_dir():
            raise SpeechFTError(f"{data}: the corpus has no {folder}/ folder for {task}")
    counts = {}
    for u in manifest["utterances"]:
        counts[u["task"]] = counts.get(u["task"], 0) + 1
    info = {"dir": str(data.resolve()), "speakers": len(manifest["speakers"]), "minutes": round(manifest["hours"] * 60, 1),
            "utterances": counts, "espeak_ng": manifest.get("espeak_ng"), "size": manifest.get("size")}
    return stage.finish(info, ["data/corpus.json"])


def stage_theta0(work, size, seed, corpus_info):
    mode = SIZES[size]["theta0"]
    fallback = None
    if mode == "pretrain" and not pretrain_available():
        mode = "make-tiny"
        fallback = ("`speechft pretrain` is not available in this speechft: θ0 is a RANDOMLY INITIALISED tiny "
                    "HuBERT (`speechft make-tiny --arch hubert`), not a pre-trained one")
        say("!" * 78)
        say(f"!! WARNING: {fallback}.")
        say("!! The benchmark still runs end to end, but its θ0 has learnt nothing.")
        say("!" * 78)
    stage = Stage(work / "theta0", {"mode": mode, "size": size, "seed": seed, "corpus": corpus_info["dir"],
                                    "corpus_key": _key(corpus_info)})
    done = stage.cached()
    if done:
        say(f"reusing {stage.folder / 'theta0.pt'} ({done['source']})")
        return done
    stage.start()
    out = stage.folder / "theta0.pt"
    if mode == "pretrain":
        cmd = _speechft("pretrain", "--corpus", corpus_info["dir"], "-o", out)
        if size != "full":
            cmd.append("--quick")
        source = "speechft pretrain" + (" --quick" if size != "full" else "")
    else:
        cmd = _speechft("make-tiny", "--arch", "hubert", "--seed", seed, "-o", out)
        source = "speechft make-tiny --arch hubert (random weights" + (
            ", the smoke test's size)" if size == "smoke" else ")")
    say("$ speechft " + " ".join(map(str, cmd[3:])))
    run_cmd(cmd)
    if not out.is_file():
        raise SpeechFTError(f"{cmd[3]} wrote no {out}")
    return stage.finish({"path": str(out.resolve()), "source": source, "fallback": fallback}, ["theta0.pt"])


def recipe_cmd(task, mode, data, exp, steps, batch, lr, upstream="speechft_hubert", ckpt=None, beta=None,
               device="cpu"):
    recipe, _, _, _, _ = TASKS[task]
    cmd = ["bash", RECIPES / recipe, mode, "--upstream", upstream, "--data", data, "--exp", exp,
           "--steps", steps, "--batch-size", batch, "--lr", lr, "--workers", 0, "--device", device,
           "-o", "config.runner.gradient_accumulate_steps=1"]
    eval_step = steps if steps < 40 else steps // 2  # two dev passes: each costs a pass over dev
    cmd += ["-o", f"config.runner.eval_step={eval_step},,config.runner.log_step={max(1, steps // 10)}"
                  f",,config.runner.save_step={eval_step}"]
    if ckpt is not None:
        cmd += ["--ckpt", ckpt]
    if beta is not None:
        cmd += ["--beta", beta]
    return cmd


def stage_finetune(work, size, corpus_info, theta0, device):
    ft = SIZES[size]["finetune"]
    stage = Stage(work / "finetune_pr", {"theta0": theta0["path"], "theta0_key": _key(theta0), **ft,
                                         "device": device})
    done = stage.cached()
    if done:
        say(f"reusing {done['path']}")
        return done
    stage.start()
    exp = stage.folder / "exp"
    cmd = recipe_cmd("PR", "finetune", Path(corpus_info["dir"]) / "pr", exp, ft["steps"], ft["batch"], ft["lr"],
                     ckpt=theta0["path"], beta=ft["beta"], device=device)
    say(f"$ downstream_recipes/pr.sh finetune --steps {ft['steps']} --batch-size {ft['batch']} --lr {ft['lr']} "
        f"--beta {ft['beta']} ...  (log {exp / 'train.log'})")
    run_cmd(cmd, log=stage.folder / "run.log", stream=True)
    path = exp / "theta_prime.pt"
    if not path.is_file():
        raise SpeechFTError(f"pr.sh finetune wrote no {path}")
    dev = _dev_values(exp / "train.log", "per")
    return stage.finish({"path": str(path.resolve()), "dev_per": dev}, ["exp/theta_prime.pt"])


def stage_merge(work, theta0, theta_prime):
    stage = Stage(work / "merge", {"theta0_key": _key(theta0), "theta_prime_key": _key(theta_prime),
                                   "alphas": ALPHAS})
    done = stage.cached()
    if done:
        say(f"reusing {stage.folder} ({len(done['paths'])} merged files)")
        return done
    stage.start()
    cmd = _speechft("merge", "--base", theta0["path"], "--finetuned", theta_prime["path"],
                    "--alpha", ",".join(f"{a:g}" for a in ALPHAS), "-o", stage.folder / "theta_hat_alpha{alpha}.pt",
                    "--force")
    say("$ speechft " + " ".join(map(str, cmd[3:])))
    run_cmd(cmd)
    paths = {f"{a:g}": str((stage.folder / f"theta_hat_alpha{a:g}.pt").resolve()) for a in ALPHAS}
    for p in paths.values():
        if not Path(p).is_file():
            raise SpeechFTError(f"speechft merge wrote no {p}")
    return stage.finish({"paths": paths}, [Path(p).name for p in paths.values()])


def _dev_values(log, metric, split="dev"):
    text = Path(log).read_text(errors="replace") if Path(log).is_file() else ""
    return [float(v) for v in re.findall(rf"(?:^|[^\w]){split} {metric}: ([-+0-9.eE]+|nan)", text)]


def _eval_one(stage, task, data, encoder, steps, batch, lr, device, slots=None):
    if slots is not None:  # a limit on runs at a time shared with the background runs
        with slots:
            return _eval_one(stage, task, data, encoder, steps, batch, lr, device)
    recipe, _, metric, _, higher = TASKS[task]
    stage.start()
    exp = stage.folder / "exp"
    upstream, ckpt = ("fbank", None) if encoder["name"] == BASELINE else ("speechft_hubert", encoder["path"])
    cmd = recipe_cmd(task, "evaluate", data, exp, steps, batch, lr, upstream=upstream, ckpt=ckpt, device=device)
    run_cmd(cmd, log=stage.folder / "run.log", stream=False)
    result = json.loads((exp / "results.json").read_text())
    devs = _dev_values(exp / "train.log", metric)
    if not devs:
        raise SpeechFTError(f"{exp / 'train.log'}: no 'dev {metric}' line from the runner")
    dev = max(devs) if higher else min(devs)  # the dev-best checkpoint's dev value
    out = {"test": result["value"], "dev": dev, "checkpoint_step": result.get("checkpoint_step"),
           "runner_ckpt": os.path.basename(result.get("runner_ckpt") or "")}
    for name in exp.glob("*.ckpt"):  # runner checkpoints (head + optimizer) are not needed afterwards
        name.unlink()
    return stage.finish(out, ["exp/results.json"])


def stage_evaluate(work, size, corpus_info, encoders, device, jobs, tasks, background=False, slots=None):
    """SUPERB protocol for every encoder × task; runs ``jobs`` recipes at a time.

    ``background``: started early on the core another stage leaves free (one line per finished
    run, no progress bar); its results are collected when stage 5 starts.
    """
    from tqdm import tqdm

    todo, results = [], {}
    for encoder in encoders:
        for task in tasks:
            steps, batch, lr = SIZES[size]["eval"][task]
            params = {"encoder": encoder["name"], "encoder_key": encoder.get("key"), "task": task,
                      "steps": steps, "batch": batch, "lr": lr, "device": device,
                      "corpus_key": _key(corpus_info)}
            stage = Stage(work / "evaluate" / encoder["name"] / task.lower(), params)
            done = stage.cached()
            if done:
                results[(encoder["name"], task)] = done
            else:
                data = Path(corpus_info["dir"]) / TASKS[task][1]
                todo.append((stage, task, data, encoder, steps, batch, lr))
    if background:
        failures = []
        for stage, task, data, enc, steps, batch, lr in todo:
            try:
                out = _eval_one(stage, task, data, enc, steps, batch, lr, device, slots)
                results[(enc["name"], task)] = out
                say(f"\n  [evaluate, in the background] {ENCODER_LABELS.get(enc['name'], enc['name'])} {task}: "
                    f"dev {out['dev']:.4f}, test {out['test']:.4f} ({out['_seconds']:.0f} s)")
            except Exception as err:
                failures.append(f"{enc['name']}/{task}: {err}")
        return results, failures
    if results:
        say(f"reusing {len(results)} finished evaluation(s)")
    if not todo:
        return results
    say(f"{len(todo)} evaluation run(s), {jobs} at a time; each run's log: {work / 'evaluate'}/<encoder>/<task>/run.log")
    failures = []
    bar = tqdm(total=len(todo), desc="evaluate", unit="run", file=sys.stderr, dynamic_ncols=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(_eval_one, stage, task, data, enc, steps, batch, lr, device, slots): (enc["name"], task)
                   for stage, task, data, enc, steps, batch, lr in todo}
        for future in concurrent.futures.as_completed(futures):
            name, task = futures[future]
            try:
                out = future.result()
                results[(name, task)] = out
                bar.write(f"  {ENCODER_LABELS.get(name, name):>14} {task:<4} dev {out['dev']:.4f}  "
                          f"test {out['test']:.4f}  ({out['_seconds']:.0f} s)", file=sys.stderr)
            except Exception as err:  # report all failures at the end
                failures.append(f"{name}/{task}: {err}")
                bar.write(f"  {name} {task}: FAILED", file=sys.stderr)
            bar.update(1)
    bar.close()
    if failures:
        raise SpeechFTError("evaluation run(s) failed:\n" + "\n".join(failures))
    return results


def stage_analyze(work, size, corpus_info, theta0, theta_prime, theta_hat):
    audio = Path(corpus_info["dir"]) / "asr" / "LibriSpeech" / "test"
    files = SIZES[size]["analyze_files"]
    stage = Stage(work / "analyze", {"theta0_key": _key(theta0), "theta_prime_key": _key(theta_prime),
                                     "theta_hat": theta_hat, "files": files, "audio": str(audio)})
    done = stage.cached()
    if done:
        say(f"reusing {stage.folder}")
        return done
    stage.start()
    # readable model names in the table: θ′ and θ̂ as files named after what they are
    models = []
    for name, path in (("theta_prime", theta_prime["path"]), (f"theta_hat_alpha{theta_hat['alpha']:g}", theta_hat["path"])):
        link = stage.folder / f"{name}.pt"
        try:
            os.symlink(path, link)
        except OSError:
            shutil.copyfile(path, link)
        models.append(link)
    cmd = _speechft("analyze", "--base", theta0["path"], "--models", *models, "--audio", audio,
                    "-o", stage.folder / "out", "--max-files", files)
    say("$ speechft analyze --base θ0 --models θ′ θ̂ --audio " + str(audio) + f" --max-files {files}")
    run_cmd(cmd)
    from speechft_upstream.evaluate.analyze import OUTPUT_NAMES

    return stage.finish({"dir": str((stage.folder / "out").resolve())}, [f"out/{n}" for n in OUTPUT_NAMES])


# ---------------------------------------------------------------------------------------------


def select_alpha(evals, alphas):
    """The α with the highest dev score; returns (alpha, {alpha: dev score}, per-task detail)."""
    from speechft_upstream.evaluate import score

    refs = score.load_references(score.MINI_REFERENCES)
    rows = []
    for (name, task), out in evals.items():
        rows.append({"encoder": name, "task": task, "metric": TASKS[task][3], "value": 100.0 * out["dev"],
                     "split": "dev"})
    scores = score.compute(rows, refs, split="dev", baseline_encoder=BASELINE, source="dev results")
    by_alpha = {}
    for a in alphas:
        name = _alpha_encoder(a)
        if name in scores:
            by_alpha[a] = scores[name]["score"]
    best = max(by_alpha, key=lambda a: (by_alpha[a], -a))  # ties: the smaller α
    return best, by_alpha, scores


def _sweep_encoders(alphas, theta_prime, merged):
    out = []
    for a in alphas:
        if a == 1.0:  # θ̂ at α = 1 is θ′ itself
            out.append({"name": "theta_prime", "path": theta_prime["path"], "key": _key(theta_prime)})
        else:
            out.append({"name": _alpha_encoder(a), "path": merged["paths"][f"{a:g}"],
                        "key": _key(theta_prime) + f"{a:g}"})
    return out


def _alpha_encoder(alpha):
    return "theta_prime" if alpha == 1.0 else f"alpha{alpha:g}"


def run(out="results", work="exp/mini_superb", size="full", seed=0, jobs=None, device=None, tasks=None):
    from speechft_upstream.benchmark import report

    started = time.time()
    work, out = Path(work).resolve(), Path(out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    jobs = jobs or max(1, min(2, os.cpu_count() or 1))
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    total = 8
    tasks = list(tasks or SIZES[size].get("tasks") or TASKS)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or "PR" not in tasks:
        raise SpeechFTError(f"tasks must include PR and come from {', '.join(TASKS)}; got {', '.join(tasks)}")
    alphas = tuple(SIZES[size]["alphas"])
    times = {}
    say(f"speechft benchmark: mini-SUPERB, size {size}, work {work}, results {out}, {jobs} job(s), device {device}")

    header(1, total, "corpus: eSpeak NG speech in the SUPERB layouts (speechft corpus)")
    corpus_info = stage_corpus(work, size, seed)
    times["corpus"] = corpus_info
    say(f"corpus: {corpus_info['speakers']} speakers, {corpus_info['minutes']} min of audio, "
        + ", ".join(f"{t} {n}" for t, n in corpus_info["utterances"].items()))

    # Pre-training and fine-tuning run on one core: with two or more jobs, the FBANK and θ0
    # evaluations (which need only the corpus and θ0) run meanwhile on the other one.
    fbank = {"name": BASELINE, "key": "s3prl fbank"}
    background = concurrent.futures.ThreadPoolExecutor(max_workers=1) if jobs >= 2 else None
    slots = threading.Semaphore(jobs)
    early = []
    if background:
        say("FBANK evaluations start in the background (one at a time)")
        early.append(background.submit(stage_evaluate, work, size, corpus_info, [fbank], device, 1, tasks, True, slots))

    try:
        header(2, total, "θ0: tiny HuBERT pre-trained on the corpus (speechft pretrain)")
        theta0 = stage_theta0(work, size, seed, corpus_info)
        times["theta0"] = theta0
        if theta0.get("fallback"):
            say(f"WARNING: {theta0['fallback']}")
        theta0_encoder = {"name": "theta0", "path": theta0["path"], "key": _key(theta0)}
        if background:
            say("θ0 evaluations queued in the background")
            early.append(background.submit(stage_evaluate, work, size, corpus_info, [theta0_encoder], device, 1, tasks,
                                           True, slots))

        header(3, total, "θ′: stable fine-tuning on PR (downstream_recipes/pr.sh finetune)")
        theta_prime = stage_finetune(work, size, corpus_info, theta0, device)
        times["finetune"] = theta_prime

        header(4, total, "θ̂_α = (1−α)·θ0 + α·θ′ for α = " + ", ".join(f"{a:g}" for a in ALPHAS) + " (speechft merge)")
        merged = stage_merge(work, theta0, theta_prime)
        times["merge"] = merged

        header(5, total, "SUPERB protocol: frozen encoder, weighted sum, task heads (<task>.sh evaluate)")
        t5 = time.time()
        rest = [e for e in _sweep_encoders(alphas, theta_prime, merged)]
        if background:
            failures = []
            if not all(f.done() for f in early):  # θ′ and θ̂_α now, sharing the cores with them
                say("the FBANK / θ0 evaluations are still running in the background")
                stage_evaluate(work, size, corpus_info, rest, device, jobs, tasks, slots=slots)
            for future in early:
                failures += future.result()[1]
            background.shutdown()
            if failures:
                raise SpeechFTError("evaluation run(s) failed:\n" + "\n".join(failures))
    except BaseException:
        if background:  # no new runs; the one running finishes
            background.shutdown(wait=False, cancel_futures=True)
        raise
    encoders = [fbank, theta0_encoder, *rest]
    say("encoders: FBANK, θ0, " + ", ".join("θ′ (α = 1)" if a == 1.0 else f"θ̂ α = {a:g}" for a in alphas)
        + f"; tasks: {', '.join(tasks)}")
    evals = stage_evaluate(work, size, corpus_info, encoders, device, jobs, tasks, slots=slots)
    times["evaluate"] = {"_seconds": time.time() - t5, "_reused": False}

    header(6, total, f"α chosen on the dev splits (dev SUPERB-style score over {', '.join(tasks)})")
    alpha, by_alpha, dev_scores = select_alpha(evals, alphas)
    for a, s in by_alpha.items():
        say(f"  α = {a:<5g} dev score {s:8.2f}" + ("   <- chosen" if a == alpha else ""))
    theta_hat = {"alpha": alpha, "encoder": _alpha_encoder(alpha),
                 "path": theta_prime["path"] if alpha == 1.0 else merged["paths"][f"{alpha:g}"]}

    header(7, total, "analyze: per-layer similarity to θ0 and weight change (speechft analyze)")
    analysis = stage_analyze(work, size, corpus_info, theta0, theta_prime, theta_hat)
    times["analyze"] = analysis

    header(8, total, f"report -> {out}")
    context = {"tasks": tasks, "alphas": alphas, "size": size, "seed": seed, "corpus": corpus_info, "theta0": theta0, "theta_prime": theta_prime,
               "theta_hat": theta_hat, "by_alpha": by_alpha, "dev_scores": dev_scores, "evals": evals,
               "analysis": analysis, "sizes": SIZES[size], "jobs": jobs, "device": device,
               "times": {k: (round(v.get("_seconds", 0.0), 1), v.get("_reused", False)) for k, v in times.items()},
               "wall_seconds": time.time() - started, "work": str(work)}
    written = report.write(out, context)
    for line in report.summary_lines(out):
        print(line)
    say(f"done in {time.time() - started:.0f} s: " + ", ".join(str(Path(p).relative_to(out)) for p in written))
    return out


def add_parser(sub):
    import argparse

    p = sub.add_parser("benchmark", help="the offline mini-SUPERB benchmark of Speech-FT (./run.sh's main job)",
                       description="corpus → θ0 → stable fine-tuning on PR → merges → SUPERB protocol for FBANK, "
                                   "θ0, θ′, θ̂ on PR, SID, KS, IC, ER → α chosen on dev → analyze → report. "
                                   "Finished stages under --work are reused.")
    p.add_argument("--quick", action="store_true", help="smaller corpus, fewer steps (under 10 minutes on 2 cores)")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tests: tiny everything
    p.add_argument("--out", default="results", metavar="DIR", help="report folder (default: results)")
    p.add_argument("--work", default="exp/mini_superb", metavar="DIR",
                   help="stage outputs, reused by the next run (default: exp/mini_superb; --quick uses "
                        "its subfolder quick/)")
    p.add_argument("--seed", type=int, default=0, help="corpus and θ0 seed (default 0)")
    p.add_argument("--jobs", type=int, metavar="N", help="evaluation runs at a time (default: min(2, CPUs))")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--tasks", metavar="T,T,...", help="evaluation tasks, PR included (default: PR,SID,KS,IC,ER)")
    p.set_defaults(func=_cli)


def _cli(args):
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.quick and args.smoke:
        raise SpeechFTError("--quick and --smoke exclude each other")
    if args.jobs is not None and args.jobs < 1:
        raise SpeechFTError(f"--jobs must be at least 1, got {args.jobs}")
    run(out=args.out, work=Path(args.work) / size if size != "full" else args.work, size=size, seed=args.seed,
        jobs=args.jobs, device=args.device,
        tasks=[t.strip().upper() for t in args.tasks.split(",") if t.strip()] if args.tasks else None)
