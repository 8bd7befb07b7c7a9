"""What the benchmark does differently per task: the data folder a recipe reads, where each
task's recipe command and dev value (where it is printed, in which unit), one run's record, and
QbE's one DTW run (see stage_evaluations._eval_one)."""

import json
import os
import re
from pathlib import Path

from speechft_upstream.benchmark.sizes import EXTRA_METRICS, FINETUNE_TASKS, NO_DEV, RECIPES, TASKS, base_task
from speechft_upstream.benchmark.stage import run_cmd
from speechft_upstream.errors import SpeechFTError


def dev_values(log, metric, split="dev"):
    text = Path(log).read_text(errors="replace") if Path(log).is_file() else ""
    return [float(v) for v in re.findall(rf"(?:^|[^\w]){split} {metric}: ([-+0-9.eE]+|nan)", text)]


def task_dev_values(task, log, metric):
    """Every dev pass's value of the task's main metric, in the unit of its results.json value."""
    if task == "ASR":  # the asr expert names its dev split dev-clean
        return dev_values(log, metric, "dev-clean")
    if task == "SD":
        # the diarization expert prints the frame-level DER of dev as a fraction ('mode dev acc A der D');
        # its test DER (sd.sh, pyannote.metrics over the RTTMs) is in percent
        text = Path(log).read_text(errors="replace") if Path(log).is_file() else ""
        return [100.0 * float(v) for v in re.findall(r"^mode dev acc \S+ der ([-+0-9.eE]+|nan)", text, re.M)]
    return dev_values(log, metric)


def _read_json(path):
    return json.loads(Path(path).read_text()) if Path(path).is_file() else None


def read_run(task, folder):
    """One runner run's record from its folder: the test value (results.json), the dev value of
    the dev-best pass (train.log), the task's other metrics, steps and timing. Its runner
    checkpoints (head + optimizer) are deleted: nothing needs them afterwards."""
    _, _, metric, _, higher = TASKS[base_task(task)]
    folder = Path(folder)
    result = json.loads((folder / "results.json").read_text())
    run = {"test": result["value"], "dev": None, "checkpoint_step": result.get("checkpoint_step"),
           "steps_run": (result.get("early_stopping") or {}).get("last_step", result.get("steps")),
           "timing": {m: _read_json(folder / f"timing_{m}.json") for m in ("train", "evaluate")}}
    best = None
    if task not in NO_DEV:
        devs = task_dev_values(task, folder / "train.log", metric)
        if not devs:
            raise SpeechFTError(f"{folder / 'train.log'}: no dev {metric} line from the runner")
        best = max(range(len(devs)), key=lambda i: devs[i] if higher else -devs[i])  # the dev-best pass
        run["dev"] = devs[best]
    extra = {}
    for key, (name, _) in EXTRA_METRICS.get(task, {}).items():
        if key not in (result.get("metrics") or {}):
            raise SpeechFTError(f"{folder / 'results.json'}: no metrics.{key}")
        others = dev_values(folder / "train.log", key)
        # the other metric of the same dev pass as the main metric's best (it does not choose)
        extra[name] = {"test": result["metrics"][key],
                       "dev": others[best] if best is not None and best < len(others) else None}
    if extra:
        run["metrics"] = extra
    for name in folder.glob("*.ckpt"):
        name.unlink()
    return run


def recipe_cmd(task, mode, data, exp, steps, batch, lr, upstream="speechft_hubert", ckpt=None, beta=None,
               device="cpu", eval_every=None, patience=None, seeds=None, feature_cache=None, accumulate=1, workers=0,
               fold="fold1"):
    """A recipe's command line; ER: ``fold`` None runs er.sh's five folds (er_folds.py)."""
    recipe = (TASKS[task] if task in TASKS else FINETUNE_TASKS.get(task) or TASKS[base_task(task)])[0]
    cmd = ["bash", RECIPES / recipe, mode, "--upstream", upstream, "--data", data, "--exp", exp,
           "--steps", steps, "--batch-size", batch, "--lr", lr, "--device", device,
           "-o", f"config.runner.gradient_accumulate_steps={accumulate}"]
    if workers is not None:  # None: the config's (the superb size, on a GPU machine's cores)
        cmd += ["--workers", workers]
    if eval_every is None:
        eval_every = steps if steps < 40 else steps // 2  # two dev passes: each costs a pass over dev
    cmd += ["-o", f"config.runner.eval_step={eval_every},,config.runner.log_step={max(1, min(eval_every, steps // 10))}"
                  f",,config.runner.save_step={eval_every}"]
    if ckpt is not None:
        cmd += ["--ckpt", ckpt]
    if beta is not None:
        cmd += ["--beta", beta]
    if patience:
        cmd += ["--patience", patience]
    if seeds:
        cmd += ["--seeds", ",".join(map(str, seeds))]
    if feature_cache:
        cmd += ["--feature-cache", feature_cache]
    if task == "ER" and fold:  # the mini corpus's ER layout holds one IEMOCAP-style session
        cmd += ["--fold", fold]
    return cmd


def qbe_cmd(data, exp, upstream="speechft_hubert", ckpt=None, device="cpu", layer="all", seed=1337):
    """qbe.sh evaluate: DTW on each layer for the dev queries, the best one's MTWV on eval; one
    DTW process (the benchmark runs two evaluations at a time on two cores)."""
    cmd = ["bash", RECIPES / TASKS["QBE"][0], "evaluate", "--upstream", upstream, "--data", data, "--exp", exp,
           "--layer", layer, "--workers", 1, "--device", device, "--seed", seed]
    if ckpt is not None:
        cmd += ["--ckpt", ckpt]
    return cmd


def task_data(task, corpus_dir, work):
    """The folder a task's recipe reads. ASR: `speechft corpus` writes asr/LibriSpeech/{train,dev,test}
    with asr/bucket/*.csv (s3prl's own split names), asr.sh reads a LibriSpeech root with
    train-clean-100/ dev-clean/ test-clean/ and len_for_bucket/: a folder of links under --work
    (outside the corpus, whose sha256 run.json records) and bucket files with the paths renamed."""
    corpus_dir = Path(corpus_dir)
    if task != "ASR":
        return corpus_dir / TASKS[task][1]
    src = corpus_dir / "asr"
    out = Path(work) / "asr_librispeech"
    names = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
    (out / "len_for_bucket").mkdir(parents=True, exist_ok=True)
    for split, name in names.items():
        link = out / name
        target = (src / "LibriSpeech" / split).resolve()
        if link.is_symlink() and link.resolve() != target:
            link.unlink()
        if not link.exists():
            try:
                os.symlink(target, link)
            except FileExistsError:  # the background evaluations made it meanwhile
                pass
        lines = (src / "bucket" / f"{split}.csv").read_text().splitlines()
        renamed = [lines[0]] + [re.sub(rf"(^[^,]*,){split}/", rf"\g<1>{name}/", line) for line in lines[1:]]
        from speechft_upstream.checkpoints.files import write_text_atomic

        write_text_atomic("\n".join(renamed) + "\n", out / "len_for_bucket" / f"{name}.csv")
    try:
        os.symlink((src / "char.dict").resolve(), out / "char.dict")
    except FileExistsError:
        pass
    return out


def eval_qbe(stage, data, exp, upstream, ckpt, budget, device):
    """One qbe.sh run: DTW is deterministic, so there is no seed spread to measure; the record
    says so ("deterministic") and holds the one run under the --seed it was given."""
    seed = budget["seeds"][0]
    cmd = qbe_cmd(data, exp, upstream=upstream, ckpt=ckpt, device=device, layer=budget["layer"], seed=seed)
    run_cmd(cmd, log=stage.folder / "run.log", stream=False)
    result = json.loads((exp / "results.json").read_text())
    run = {"test": result["value"], "dev": result["metrics"]["dev_mtwv"], "layer": result["layer"],
           "dev_by_layer": result["metrics"]["dev_mtwv_by_layer"], "checkpoint_step": None, "steps_run": None,
           "timing": {}}
    out = {"test": run["test"], "dev": run["dev"], "seeds": {str(seed): run}, "deterministic": True,
           "items": {}, "dev_items": {}}
    return stage.finish(out, ["exp/results.json"])
