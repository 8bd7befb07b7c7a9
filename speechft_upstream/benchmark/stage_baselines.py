"""The paper's fine-tuning baselines as a benchmark stage: θ′ by L2 toward θ0, by LoRA, or early.

Each one is the same fine-tuning as stages.stage_finetune (the size's budget, the same recipe,
seed, β warm-up and learning-rate schedule); only the baseline's own setting differs:

- ``l2``: ``<task>.sh finetune --baseline l2 --l2-lambda λ`` (λ 0.01, baselines.py's value).
- ``lora``: ``--baseline lora --lora-r 8`` (the other LoRA options: baselines.LORA_DEFAULTS).
- ``early``: the fine-tuning run itself, stopped early. stable_finetuning_schedule's warm-up,
  hold and decay are fractions of the total steps T, and so is β's head-only phase, so a run of
  N < T steps is *not* the first N steps of the T-step run (the tests check both). The stage
  therefore runs the full T-step fine-tuning with ``save_step=N`` and takes θ′ from the runner's
  ``states-N.ckpt`` (``speechft extract``). Saving more often does not change training: that
  run's own θ′ equals stage_finetune's (tested), and is kept as ``final_path``.

N = round(EARLY_FRACTION·T), at least one step past the head-only phase (⌊β·T⌋ + 1), at most
T. EARLY_FRACTION 0.25: with β 0.1 and the schedule's 10% warm-up, step T/4 lies in the
constant-LR hold, after 0.15·T encoder steps, well before the decay, so the encoder has moved
but far less than at T: the trade-off an early checkpoint stands for. The smoke size (T 4, β
0.25) gets N 2, the first step the encoder learns.
"""

import math
from pathlib import Path

from speechft_upstream.benchmark.sizes import FINETUNE_TASKS, SIZES
from speechft_upstream.benchmark.stage import Stage, run_cmd, say, speechft_cmd, stage_key
from speechft_upstream.benchmark.task_runs import recipe_cmd
from speechft_upstream.benchmark.task_runs import dev_values
from speechft_upstream.errors import SpeechFTError

BASELINES = ("l2", "lora", "early")
ENCODER_NAMES = {"l2": "theta_prime_l2", "lora": "theta_prime_lora", "early": "theta_prime_early"}
LABELS = {"l2": "L2 toward θ0", "lora": "LoRA", "early": "early checkpoint"}
# The recipes' defaults (downstream_recipes/common.sh), stated here so they enter the stage key
SETTINGS = {"l2": {"lambda": 0.01}, "lora": {"r": 8}}
EARLY_FRACTION = 0.25


def early_step(steps, beta, fraction=None):
    """The step of the early checkpoint of a ``steps``-step run with head-only fraction ``beta``."""
    fraction = EARLY_FRACTION if fraction is None else fraction
    return min(steps, max(math.floor(fraction * steps + 0.5), math.floor(beta * steps) + 1))


def _settings(kind, ft):
    base = {"baseline": kind, "steps": ft["steps"], "batch": ft["batch"], "lr": ft["lr"], "beta": ft["beta"]}
    if kind == "l2":
        return base | {"l2_lambda": float(SETTINGS["l2"]["lambda"])}
    if kind == "lora":
        from speechft_upstream.finetune.baselines import LORA_DEFAULTS

        return base | {"lora": {**LORA_DEFAULTS, "r": int(SETTINGS["lora"]["r"])}}
    step = early_step(ft["steps"], ft["beta"])
    return base | {"early_fraction": EARLY_FRACTION, "early_step": step,
                   "head_only_steps": math.floor(ft["beta"] * ft["steps"])}


def _options(kind, settings):
    """The recipe options that make ``kind`` out of stage_finetune's command."""
    if kind == "l2":
        return ["--baseline", "l2", "--l2-lambda", repr(settings["l2_lambda"])]
    if kind == "lora":
        return ["--baseline", "lora", "--lora-r", settings["lora"]["r"]]
    step, total = settings["early_step"], settings["steps"]
    # max_keep: the runner keeps only the newest states-*.ckpt otherwise, so states-N would go
    return ["-o", f"config.runner.save_step={step},,config.runner.max_keep={total // step + 1}"]


def stage_baseline(work, size, corpus_info, theta0, device, kind, task="PR"):
    """θ′ of baseline ``kind`` (BASELINES) on ``task`` with the size's fine-tuning budget.

    Returns {"path": θ′ (absolute), "kind", "task", "settings", "dev_<metric>": the dev values of
    the run's evaluations[, "final_path": early only, the run's θ′ at its end]}.
    """
    if kind not in BASELINES:
        raise SpeechFTError(f"baseline: unknown kind {kind!r}; known: {', '.join(BASELINES)}")
    if task not in FINETUNE_TASKS:
        raise SpeechFTError(f"baseline: unknown fine-tuning task {task!r}; known: {', '.join(FINETUNE_TASKS)}")
    ft = SIZES[size]["finetune"]
    recipe, folder, metric = FINETUNE_TASKS[task]
    settings = _settings(kind, ft)
    workers = 0 if "workers" not in SIZES[size] else SIZES[size]["workers"]
    params = {"kind": kind, "task": task, "theta0": theta0["path"], "theta0_key": stage_key(theta0), **ft,
              "workers": workers, "device": device, "settings": settings}
    stage = Stage(Path(work) / f"baseline_{kind}_{task.lower()}", params)
    done = stage.cached()
    if done:
        say(f"reusing {done['path']} ({LABELS[kind]})")
        return done
    stage.start()
    exp = stage.folder / "exp"
    # stage_finetune's command, word for word, then the baseline's options
    cmd = recipe_cmd(task, "finetune", Path(corpus_info["dir"]) / folder, exp, ft["steps"], ft["batch"], ft["lr"],
                     ckpt=theta0["path"], beta=ft["beta"], device=device, eval_every=ft.get("eval_every"),
                     workers=workers)
    if ft.get("train_hours"):
        cmd += ["--train-hours", ft["train_hours"]]
    cmd += _options(kind, settings)
    say(f"$ downstream_recipes/{recipe} finetune --steps {ft['steps']} --batch-size {ft['batch']} --lr {ft['lr']} "
        f"--beta {ft['beta']} {' '.join(map(str, _options(kind, settings)))} ...  ({LABELS[kind]}; "
        f"log {exp / 'train.log'})")
    run_cmd(cmd, log=stage.folder / "run.log", stream=True)
    final = exp / "theta_prime.pt"
    if not final.is_file():
        raise SpeechFTError(f"{recipe} finetune wrote no {final}")
    out = {"kind": kind, "task": task, "settings": settings, f"dev_{metric}": dev_values(exp / "train.log", metric)}
    if kind != "early":
        return stage.finish(out | {"path": str(final.resolve())}, ["exp/theta_prime.pt"])

    step = settings["early_step"]
    source = exp / f"states-{step}.ckpt"
    if not source.is_file():
        raise SpeechFTError(f"{recipe} finetune wrote no {source} (save_step {step})")
    path = exp / "theta_prime_early.pt"
    cmd = speechft_cmd("extract", source, "--base", theta0["path"], "-o", path, "--force")
    say(f"$ speechft extract {source} --base θ0 -o {path}  (early checkpoint: step {step} of {ft['steps']})")
    run_cmd(cmd, log=stage.folder / "extract.log", stream=False)
    for other in exp.glob("states-*.ckpt"):  # runner states (with optimizer) of the other save steps
        if other != source:
            other.unlink()
    out |= {"path": str(path.resolve()), "final_path": str(final.resolve()), "runner_ckpt": str(source.resolve())}
    return stage.finish(out, ["exp/theta_prime_early.pt", "exp/theta_prime.pt"])
