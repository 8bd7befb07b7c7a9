"""The benchmark's cached stages: corpus, θ0, θ′, merges, analysis (see pipeline.py); the
evaluations are stage_evaluations.py."""

import json
import os
import shutil
from pathlib import Path

from speechft_upstream.benchmark.sizes import ALPHAS, FINETUNE_TASKS, PAPER_ALPHA, SIZES, TASKS
from speechft_upstream.benchmark.stage import Stage, run_cmd, say, speechft_cmd, stage_key
from speechft_upstream.benchmark.task_runs import dev_values as _dev_values
from speechft_upstream.benchmark.task_runs import recipe_cmd
from speechft_upstream.errors import SpeechFTError


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
        corpus_module.generate(data, seed=seed, size="tiny", progress=lambda m: say(f"[corpus] {m}"))
    else:
        cmd = speechft_cmd("corpus", "--out", data, "--seed", seed)
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


def stage_theta0(work, size, seed, corpus_info, pretrain=False):
    """The shipped θ0 (sha256 checked); ``pretrain``: its recipe run on this corpus instead."""
    from speechft_upstream.pretrain import shipped

    mode = "pretrain" if pretrain else SIZES[size]["theta0"]
    if mode == "shipped":
        path = shipped.verified()
        params = {"mode": mode, "path": str(path), "sha256": shipped.SHA256}
    else:
        params = {"mode": mode, "size": size, "seed": seed, "corpus": corpus_info["dir"],
                  "corpus_key": stage_key(corpus_info)}
    stage = Stage(work / "theta0", params)
    done = stage.cached()
    if done:
        say(f"reusing {done['path']} ({done['source']})")
        return done
    stage.start()
    if mode == "shipped":
        say(f"θ0: {path} (sha256 {shipped.SHA256[:16]}…, checked; rebuilt by `{shipped.REBUILD}`)")
        return stage.finish({"path": str(path), "sha256": shipped.SHA256, "source": f"shipped {path.name} "
                             f"(speechft pretrain --recipe mini-superb on the default corpus)"}, [str(path)])
    out = stage.folder / "theta0.pt"
    if mode == "pretrain":
        cmd = speechft_cmd("pretrain", "--recipe", "mini-superb", "--corpus", corpus_info["dir"], "-o", out,
                           "--seed", seed)
        if size == "smoke":  # the tests' size: the recipe's code paths, a few steps
            cmd += ["--steps", 3, "--iter2-steps", 2, "--clusters", 8]
        source = "speechft pretrain --recipe mini-superb" + (" (smoke size)" if size == "smoke" else "")
    else:
        cmd = speechft_cmd("make-tiny", "--arch", "hubert", "--seed", seed, "-o", out)
        source = "speechft make-tiny --arch hubert (random weights, the smoke test's size)"
    say("$ speechft " + " ".join(map(str, cmd[3:])))
    run_cmd(cmd)
    if not out.is_file():
        raise SpeechFTError(f"{cmd[3]} wrote no {out}")
    from speechft_upstream.pretrain.data import sha256_of

    return stage.finish({"path": str(out.resolve()), "sha256": sha256_of(out), "source": source}, ["theta0.pt"])


def stage_finetune(work, size, corpus_info, theta0, device, task="PR"):
    """θ′: stable fine-tuning of θ0 on ``task`` (FINETUNE_TASKS) with the size's budget."""
    ft = SIZES[size]["finetune"]
    recipe, folder, metric = FINETUNE_TASKS[task]
    params = {"theta0": theta0["path"], "theta0_key": stage_key(theta0), **ft, "device": device}
    if task != "PR":  # PR's key and folder as before, so existing caches stay valid
        params["task"] = task
    stage = Stage(work / f"finetune_{task.lower()}", params)
    done = stage.cached()
    if done:
        say(f"reusing {done['path']}")
        return done
    stage.start()
    exp = stage.folder / "exp"
    cmd = recipe_cmd(task, "finetune", Path(corpus_info["dir"]) / folder, exp, ft["steps"], ft["batch"], ft["lr"],
                     ckpt=theta0["path"], beta=ft["beta"], device=device, eval_every=ft.get("eval_every"),
                     workers=0 if "workers" not in SIZES[size] else SIZES[size]["workers"])
    if ft.get("train_hours"):
        cmd += ["--train-hours", ft["train_hours"]]
    say(f"$ downstream_recipes/{recipe} finetune --steps {ft['steps']} --batch-size {ft['batch']} --lr {ft['lr']} "
        f"--beta {ft['beta']} ...  (log {exp / 'train.log'})")
    run_cmd(cmd, log=stage.folder / "run.log", stream=True)
    path = exp / "theta_prime.pt"
    if not path.is_file():
        raise SpeechFTError(f"{recipe} finetune wrote no {path}")
    dev = _dev_values(exp / "train.log", metric)
    return stage.finish({"path": str(path.resolve()), f"dev_{metric}": dev}, ["exp/theta_prime.pt"])


def stage_merge(work, theta0, theta_prime, folder="merge"):
    """θ̂_α = θ0 + α·τ for α in ALPHAS; ``theta_prime`` a list: the multi-task merge, τ the mean of
    their task vectors (speechft merge's linear method with several --finetuned)."""
    primes = theta_prime if isinstance(theta_prime, list) else [theta_prime]
    params = {"theta0_key": stage_key(theta0), "alphas": ALPHAS}
    if isinstance(theta_prime, list):
        params["theta_prime_keys"] = [stage_key(p) for p in primes]
    else:  # the key of the runs before multi-task merges, so their merges are reused
        params["theta_prime_key"] = stage_key(theta_prime)
    stage = Stage(work / folder, params)
    done = stage.cached()
    if done:
        say(f"reusing {stage.folder} ({len(done['paths'])} merged files)")
        return done
    stage.start()
    cmd = speechft_cmd("merge", "--base", theta0["path"], "--finetuned", *[p["path"] for p in primes],
                    "--alpha", ",".join(f"{a:g}" for a in ALPHAS), "-o", stage.folder / "theta_hat_alpha{alpha}.pt",
                    "--force")
    say("$ speechft " + " ".join(map(str, cmd[3:])))
    run_cmd(cmd)
    paths = {f"{a:g}": str((stage.folder / f"theta_hat_alpha{a:g}.pt").resolve()) for a in ALPHAS}
    for p in paths.values():
        if not Path(p).is_file():
            raise SpeechFTError(f"speechft merge wrote no {p}")
    return stage.finish({"paths": paths}, [Path(p).name for p in paths.values()])


def stage_analyze(work, size, corpus_info, theta0, theta_prime, theta_hat, merged_paths):
    """θ′, the chosen θ̂ (when it is not θ′) and θ̂ at the paper's α 0.25 (when merged and not chosen)."""
    audio = analyze_audio(corpus_info)
    files = SIZES[size]["analyze_files"]
    picks = [("theta_prime", theta_prime["path"])]
    if theta_hat["alpha"] != 1.0:
        picks.append((f"theta_hat_alpha{theta_hat['alpha']:g}", theta_hat["path"]))
    if PAPER_ALPHA != theta_hat["alpha"] and f"{PAPER_ALPHA:g}" in merged_paths:
        picks.append((f"merged_alpha{PAPER_ALPHA:g}", merged_paths[f"{PAPER_ALPHA:g}"]))
    stage = Stage(work / "analyze", {"theta0_key": stage_key(theta0), "theta_prime_key": stage_key(theta_prime),
                                     "theta_hat": theta_hat, "models": [name for name, _ in picks],
                                     "files": files, "audio": str(audio)})
    done = stage.cached()
    if done:
        say(f"reusing {stage.folder}")
        return done
    return run_analyze(stage, theta0, picks, audio, files)


def analyze_audio(corpus_info):
    """Held-out audio the analysis reads: the ASR layout's LibriSpeech test split."""
    return Path(corpus_info.get("analyze_audio") or Path(corpus_info["dir"]) / "asr" / "LibriSpeech" / "test")


def run_analyze(stage, theta0, picks, audio, files):
    """`speechft analyze` of ``picks`` ([(name, path)]) against θ0 into the stage's out/."""
    from speechft_upstream.evaluate.analyze import OUTPUT_NAMES

    stage.start()
    # readable model names in the table: files named after what they are
    models = []
    for name, path in picks:
        link = stage.folder / f"{name}.pt"
        try:
            os.symlink(path, link)
        except OSError:
            shutil.copyfile(path, link)
        models.append(link)
    say(f"$ speechft analyze --base θ0 --models {' '.join(n for n, _ in picks)} --audio {audio} --max-files {files}")
    run_cmd(speechft_cmd("analyze", "--base", theta0["path"], "--models", *models, "--audio", audio,
                         "-o", stage.folder / "out", "--max-files", files))
    return stage.finish({"dir": str((stage.folder / "out").resolve())}, [f"out/{n}" for n in OUTPUT_NAMES])
