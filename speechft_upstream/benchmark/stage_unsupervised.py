"""The benchmark's unsupervised stages: a second-language corpus and θ0's continued pre-training on it.

The Speech-FT paper's unsupervised fine-tuning: θ0 is pre-trained further on a new language
(θ′), merged back (θ̂ = (1−α)θ0 + αθ′), and evaluated on the English tasks and on phoneme
recognition in the new language (``PR_TASK``, data/language.py's ``pr/``).

Targets are θ0's own (``--targets theta0``): each frame's target is the argmax of the frozen θ0's
codeword logits, as HuBERT's later iterations train on fixed labels made by the previous model.
On Mandarin the shipped θ0's head is not collapsed: its argmax uses 96 of its 100 codewords on the
unlabelled audio (perplexity 68; English audio: 89–98, perplexity 61–69), so fixed targets carry
information, and unlike ``current`` (targets from the model being trained) they cannot drift
towards fewer codewords as training goes on. In 200 steps on the default corpus (lr 1e-4, means
over 40-step blocks) the codewords per batch fell 60 → 42 with ``current`` while its masked loss
fell 2.65 → 1.99, largely by the targets getting easier; with ``theta0`` they stayed at 61–65 and
the loss fell 2.66 → 2.49.

At the quick size (200 steps, 33 s; PR_CMN by pr.sh evaluate with the quick PR budget, 160 head
steps, seed 1, 40 test utterances) PER was θ0 60.8 %, θ′ 58.6 %, θ̂ at α 0.25 59.1 %: a small
gain, within the noise of one seed on 40 utterances (2026-12-02, measured once).
"""

import json
from pathlib import Path

from speechft_upstream.benchmark.stage import Stage, run_cmd, say, speechft_cmd, stage_key
from speechft_upstream.data.language import FORMAT_VERSION as LANGUAGE_FORMAT
from speechft_upstream.errors import SpeechFTError

LANGUAGE = "cmn"
PR_TASK = "PR_" + LANGUAGE.upper()
ENCODER_NAME = "theta_prime_unsup_" + LANGUAGE

# the language corpus's size (data/language.py SIZES) at each benchmark size; None: none made
# (the paper size runs on real data, where the new language's corpus is the user's)
CORPUS_SIZE = {"full": "default", "quick": "quick", "smoke": "tiny", "superb": None, "paper": None}

# speechft unsupervised per benchmark size: optimizer steps, peak lr (10 % warm-up, 40 % hold,
# 50 % decay), crops per step, longest crop, where the targets come from. One step of the mini
# θ0 at batch 6 × ≤ 4 s took 0.18 s on one (shared) core: full ≈ 2.5 min, quick ≈ 40 s. The lr
# is a fifth of the mini θ0's pre-training lr (1e-3), as the paper's continued pre-training
# lowers HuBERT's (200 steps on the default corpus, mean of the first and last 20 steps: masked
# loss 2.72 → 2.50 at 1e-4, 2.70 → 2.46 at 3e-4). "smoke" (the tests: a random θ0, the tiny
# corpus) checks the code path; a random head's codeword usage is not vouched for, so it asks
# for only one codeword.
UNSUPERVISED_BUDGET = {
    "full": {"steps": 800, "lr": 2e-4, "batch": 6, "max_seconds": 4.0, "targets": "theta0"},
    "quick": {"steps": 200, "lr": 2e-4, "batch": 6, "max_seconds": 4.0, "targets": "theta0"},
    "smoke": {"steps": 3, "lr": 1e-3, "batch": 2, "max_seconds": 1.5, "targets": "theta0", "min_codewords": 1},
    "superb": None,
}


def _corpus_size(size):
    if CORPUS_SIZE.get(size) is None:
        sizes = ", ".join(k for k, v in CORPUS_SIZE.items() if v)
        raise SpeechFTError(f"benchmark size {size}: no synthetic {LANGUAGE} corpus at this size (sizes with one: {sizes})")
    return CORPUS_SIZE[size]


def stage_language_corpus(work, size, seed, language=LANGUAGE):
    """The second-language corpus (unlabelled audio + PR layout) in ``work/corpus_<language>``."""
    corpus_size = _corpus_size(size)
    stage = Stage(Path(work) / f"corpus_{language}", {"language": language, "size": corpus_size, "seed": seed,
                                                      "format": LANGUAGE_FORMAT})
    done = stage.cached()
    if done:
        say(f"reusing {stage.folder} (eSpeak NG {language} corpus, {corpus_size} size, seed {seed})")
        return done
    stage.start()
    data = stage.folder / "data"
    cmd = speechft_cmd("corpus", "--language", language, "--out", data, "--seed", seed)
    if corpus_size == "quick":
        cmd.append("--quick")
    elif corpus_size == "tiny":  # the tests' size: hidden in the CLI
        cmd += ["--size", "tiny"]
    say("$ speechft " + " ".join(map(str, cmd[3:])))
    run_cmd(cmd)
    manifest = json.loads((data / "corpus.json").read_text())
    for name in ("pr/train.csv", "pr/dev.csv", "pr/test.csv", "pr/phones.txt", "unlabelled"):
        if not (data / name).exists():
            raise SpeechFTError(f"{data}: the {language} corpus has no {name}")
    info = {"dir": str(data.resolve()), "language": language, "minutes": manifest["minutes"],
            "unlabelled_minutes": manifest["unlabelled_minutes"], "utterances": manifest["counts"],
            "speakers": len(manifest["speakers"]), "audio": str((data / "unlabelled").resolve()),
            "espeak_ng": manifest.get("espeak_ng"), "size": corpus_size}
    return stage.finish(info, ["data/corpus.json", "data/pr/phones.txt"])


def stage_unsupervised(work, size, lang_corpus, theta0, device):
    """θ′: ``speechft unsupervised`` of θ0 on the language corpus's unlabelled audio, in
    ``work/unsupervised_<language>``, with the size's UNSUPERVISED_BUDGET."""
    budget = UNSUPERVISED_BUDGET.get(size)
    if budget is None:
        sizes = ", ".join(k for k, v in UNSUPERVISED_BUDGET.items() if v)
        raise SpeechFTError(f"benchmark size {size}: no unsupervised fine-tuning budget at this size "
                            f"(sizes with one: {sizes})")
    language = lang_corpus["language"]
    params = {"theta0": theta0["path"], "theta0_key": stage_key(theta0), "corpus_key": stage_key(lang_corpus),
              "language": language, **budget, "device": device}
    stage = Stage(Path(work) / f"unsupervised_{language}", params)
    done = stage.cached()
    if done:
        say(f"reusing {done['path']}")
        return done
    stage.start()
    out = stage.folder / "theta_prime.pt"
    cmd = speechft_cmd("unsupervised", "--ckpt", theta0["path"], "--audio", lang_corpus["audio"], "-o", out,
                       "--steps", budget["steps"], "--lr", budget["lr"], "--batch-size", budget["batch"],
                       "--max-seconds", budget["max_seconds"], "--targets", budget["targets"], "--device", device)
    if "min_codewords" in budget:
        cmd += ["--min-codewords", budget["min_codewords"]]
    say(f"$ speechft unsupervised --ckpt θ0 --audio {lang_corpus['audio']} --steps {budget['steps']} "
        f"--lr {budget['lr']} --batch-size {budget['batch']} --targets {budget['targets']} ...  "
        f"(log {stage.folder / 'run.log'})")
    run_cmd(cmd, log=stage.folder / "run.log", stream=True)
    log = out.with_name(out.stem + ".loss.json")
    for path in (out, log):
        if not path.is_file():
            raise SpeechFTError(f"speechft unsupervised wrote no {path}")
    record = json.loads(log.read_text())
    loss = record["loss"]
    return stage.finish({"path": str(out.resolve()), "language": language, "steps": record["steps"],
                         "seconds": record["seconds_elapsed"], "targets": record["targets"],
                         "audio_seconds": record["seconds"], "files": record["files"],
                         "loss_first": loss[0], "loss_last": loss[-1],
                         "codewords_last": record["batch_codewords"][-1], "loss_log": str(log.resolve())},
                        [out.name, log.name])
