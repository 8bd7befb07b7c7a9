"""What the benchmark does differently per task: the data folder a recipe reads, where each
task's dev value is printed and in which unit, and QbE's one DTW run (see stages._eval_one)."""

import json
import os
import re
from pathlib import Path

from speechft_upstream.benchmark.sizes import RECIPES, TASKS
from speechft_upstream.benchmark.stage import run_cmd


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
