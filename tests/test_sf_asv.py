"""SF and ASV: the corpus layouts read by s3prl's own classes, the recipes end to end on the tiny
corpus, their metrics against hand-computed cases, and bad data folders refused in one line."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from speechft_upstream.data import corpus  # noqa: E402
from tests.conftest import REPO  # noqa: E402

RECIPES = REPO / "downstream_recipes"
SMOKE = ["--steps", "2", "--batch-size", "2", "--workers", "0", "--device", "cpu"]
SF_SMALL = ["-o", "config.downstream_expert.model.project_dim=32,,config.downstream_expert.model.RNNs.dim=[32,32]"]
ASV_SMALL = ["-o", "config.downstream_expert.modelrc.input_dim=32,,"
                   "config.downstream_expert.modelrc.module_config.XVector.agg_dim=64"]
# sha256 over the six earlier tasks' files of the tiny corpus (seed 3), made before SF and ASV
# existed: adding tasks must not change a byte of them.
SIX_TASKS_DIGEST = "4be30e60c2242b1b054178332c35ae79a9697a97d5262e45f07398f223b9a7cf"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "tiny"
    manifest = corpus.generate(out, seed=3, size="tiny", workers=2)
    return out, manifest


def recipe(task, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(RECIPES / f"{task}.sh"), *map(str, args)], env=env, text=True,
                          capture_output=True, timeout=600)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_earlier_tasks_unchanged(tmp_path):
    # without the extra dev utterances (added later still, on purpose; tests/test_corpus_dev_extra.py
    # checks that they leave every train and test file as it is)
    out = tmp_path / "tiny"
    corpus.generate(out, seed=3, size="tiny", workers=2, dev_extra=False)
    h = hashlib.sha256()
    for task in ("asr", "er", "ic", "ks", "pr", "sid"):
        for path in sorted((out / task).rglob("*")):
            if path.is_file():
                h.update(str(path.relative_to(out)).encode())
                h.update(path.read_bytes())
    assert h.hexdigest() == SIX_TASKS_DIGEST


# ---- SF ----------------------------------------------------------------------------------------

def sf_tokenizer(root):
    from s3prl.downstream.ctc.text import load_text_encoder

    return load_text_encoder("character-slot", str(RECIPES / "configs" / "sf_chars.txt"), str(root / "slots.txt"))


def test_sf_layout_read_by_s3prl(tiny):
    """s3prl's ctc create_dataset + its character-slot encoder + its collate read every utterance."""
    import s3prl.downstream.ctc.expert  # noqa: F401  (as the runner does: the hook adds the corpus package)
    from s3prl.downstream.ctc import data as ctc_data

    out, manifest = tiny
    root = out / "sf"
    tokenizer = sf_tokenizer(root)
    corpus_cfg = {"name": "snips", "path": str(root), "train": ["train"], "dev": ["valid"], "test": ["test"],
                  "bucketing": True, "batch_size": 2}
    speakers = {}
    for split, folder in (("train", "train"), ("dev", "valid"), ("test", "test")):
        dataset, _ = ctc_data.create_dataset(split, tokenizer, **corpus_cfg)
        utts = [u for u in manifest["utterances"] if u["task"] == "sf" and u["split"] == split]
        assert len(dataset.file_list) == len(utts) > 0
        speakers[split] = {Path(f).name.split("-")[0] for f in dataset.file_list}
        for path, tokens in zip(dataset.file_list, dataset.text):
            assert Path(path).parent.name == folder and tokens[-1] == tokenizer.eos_idx
            assert tokenizer.unk_idx not in tokens
            decoded = tokenizer.decode(tokens)
            assert " E-" in decoded and "B-" in decoded  # every command has a slot
        wavs, texts, names = ctc_data.collect_audio_batch([dataset[0]] if split != "train" else dataset[0], split)
        assert all(w.ndim == 1 and w.size > 8000 for w in wavs)
    assert not (speakers["train"] & speakers["dev"]) and not (speakers["train"] & speakers["test"])
    line = (root / "all.iob.snips.txt").read_text().splitlines()[0]
    rest = line.split(" ", 1)[1]  # e.g. "BOS PLAY ADELE EOS\tO O artist PlayMusic" -> "PLAY B-artist ADELE E-artist"
    words, tags = (part.split()[1:-1] for part in rest.split("\t"))
    expected = " ".join(f"B-{t} {w} E-{t}" if t != "O" else w for w, t in zip(words, tags))
    for tag in set(tags) - {"O"}:  # a value of several words: one B- before, one E- after
        expected = expected.replace(f" E-{tag} B-{tag} ", " ")
    assert tokenizer.decode(tokenizer.encode(rest)) == expected
    assert (root / "slots.txt").read_text().split("\n")[0] == "O"


def test_sf_bad_annotation_is_named(tmp_path, tiny):
    from speechft_upstream.compat.snips_corpus import SnipsDataset
    from speechft_upstream.errors import SpeechFTError

    out, _ = tiny
    root = tmp_path / "sf"
    shutil.copytree(out / "sf", root)
    lines = (root / "all.iob.snips.txt").read_text().splitlines()
    uid = lines[0].split(" ", 1)[0]
    text, tags = lines[0].split("\t")
    lines[0] = text + "\t" + tags.replace(" O ", " flavour ", 1)
    (root / "all.iob.snips.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(SpeechFTError, match=f"{uid}: slot 'flavour' is not in the slots file"):
        SnipsDataset(["train"], sf_tokenizer(root), 1, str(root))
    with pytest.raises(SpeechFTError, match="no labelled wav of speakers Ivy"):
        SnipsDataset(["valid"], sf_tokenizer(root), 1, str(root), valid_speakers=["Ivy"])


def test_sf_metrics_by_hand():
    """s3prl's slot_type_f1 / slot_value_cer, which results.json reports, on a case done by hand."""
    from s3prl.downstream.ctc.metric import slot_type_f1, slot_value_cer

    ref = ["PLAY B-artist ADELE E-artist",
           "RAIN IN B-city PARIS E-city B-timeRange TONIGHT E-timeRange"]
    hyp = ["PLAY B-artist ADELA E-artist",                          # right type, 1 of 5 characters wrong
           "RAIN IN B-city PARIS E-city B-artist TONIGHT E-artist"]  # city right, timeRange missed
    # utterance 1: P = R = 1 -> F1 1; utterance 2: P = 1/2, R = 1/2 -> F1 1/2; mean 3/4
    assert slot_type_f1(hyp, ref) == pytest.approx(0.75)
    # values: ADELE/ADELA 1 edit, PARIS/PARIS 0, TONIGHT/'' 7 edits; 1 + 0 + 7 over 5 + 5 + 7 characters
    assert slot_value_cer(hyp, ref) == pytest.approx(8 / 17)


def check_theta_prime(exp, theta0):
    from speechft_upstream.checkpoints import files

    assert files.read_encoder(exp / "theta_prime.pt")[1] == "hubert"
    tuned, base = files.weights(*files.read_encoder(exp / "theta_prime.pt")), files.weights(*files.read_encoder(theta0))
    assert tuned.keys() == base.keys()
    name = "encoder.layers.0.fc1.weight"
    assert not np.array_equal(tuned[name].numpy(), base[name].numpy())  # step 2 trained the encoder


def test_sf_recipe_finetune(tiny, tmp_path, tiny_hubert):
    out, _ = tiny
    exp = tmp_path / "sf_ft"
    proc = ok(recipe("sf", "finetune", "--ckpt", tiny_hubert, "--data", out / "sf", "--exp", exp, "--beta", "0.5",
                     *SMOKE, *SF_SMALL))
    assert "head only for steps 1-1 (beta 0.5 of 2)" in proc.stdout + proc.stderr
    check_theta_prime(exp, tiny_hubert)


def test_sf_recipe_evaluate(tiny, tmp_path, tiny_hubert):
    from s3prl.downstream.ctc.metric import slot_type_f1, slot_value_cer

    out, _ = tiny
    exp = tmp_path / "sf_eval"
    ok(recipe("sf", "evaluate", "--ckpt", tiny_hubert, "--data", out / "sf", "--exp", exp, *SMOKE, *SF_SMALL))
    results = json.loads((exp / "results.json").read_text())
    assert results["task"] == "sf" and results["metric"] == "slot_type_f1" and results["split"] == "test"
    assert set(results["metrics"]) == {"slot_type_f1", "slot_value_cer"}
    assert results["value"] == results["metrics"]["slot_type_f1"] and np.isfinite(results["value"])
    # the reported numbers are the metrics of what the runner decoded on the test split
    hyp = [line.split(" ", 1)[1] if " " in line else "" for line in (exp / "test-hyp.ark").read_text().splitlines()]
    ref = [line.split(" ", 1)[1] for line in (exp / "test-ref.ark").read_text().splitlines()]
    assert len(ref) == 4 and all("B-" in r for r in ref)
    assert results["metrics"]["slot_type_f1"] == pytest.approx(slot_type_f1(hyp, ref))
    assert results["metrics"]["slot_value_cer"] == pytest.approx(slot_value_cer(hyp, ref))


def test_sf_superb_speakers_on_own_layout(tiny, tmp_path, tiny_hubert):
    """A hand-made Audio SNIPS folder with Polly speaker names: --speakers superb keeps SUPERB's subsets."""
    out, _ = tiny
    src = out / "sf"
    lines = (src / "all.iob.snips.txt").read_text().splitlines()
    data = tmp_path / "snips"
    names = {"train": ["Ivy", "Joey", "Zed"], "valid": ["Amy", "Zed"], "test": ["Brian", "Zed"]}
    table, n = [], 0
    for folder, speakers in names.items():
        for speaker in speakers:
            for k in range(2):
                text = lines[n % len(lines)].split(" ", 1)[1]
                wav = sorted((src / "train").glob("*.wav"))[n % 12]
                uid = f"{speaker}-snips-{folder}-{n}"
                (data / folder).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(wav, data / folder / f"{uid}.wav")
                table.append(f"{uid} {text}")
                n += 1
    (data / "all.iob.snips.txt").write_text("\n".join(table) + "\n")
    shutil.copyfile(src / "slots.txt", data / "slots.txt")
    proc = recipe("sf", "evaluate", "--ckpt", tiny_hubert, "--data", data, "--exp", tmp_path / "bad", "--speakers", "some")
    assert proc.returncode == 1 and "--speakers must be 'all' or 'superb'" in proc.stderr
    exp = tmp_path / "sf_superb"
    ok(recipe("sf", "evaluate", "--ckpt", tiny_hubert, "--data", data, "--exp", exp, "--speakers", "superb",
              *SMOKE, *SF_SMALL))
    log = (exp / "train.log").read_text()
    assert f"{data} train: 4 utterances" in log and f"{data} valid: 2 utterances" in log  # Zed left out
    refs = (exp / "test-ref.ark").read_text().splitlines()
    assert len(refs) == 2 and all(r.startswith("Brian-snips-test-") for r in refs)
    assert json.loads((exp / "results.json").read_text())["speakers"] == "superb"


# ---- ASV ---------------------------------------------------------------------------------------

def test_asv_layout_read_by_s3prl(tiny, tmp_path, monkeypatch):
    from s3prl.downstream.sv_voxceleb1 import dataset as sv

    from speechft_upstream.compat import sv_voxceleb1

    monkeypatch.setattr(sv_voxceleb1, "CACHE_DIR", str(tmp_path / "cache"))
    out, manifest = tiny
    root = out / "asv"
    train = sv.SpeakerVerifi_train({"min_sec": 8000}, ["Voxceleb1"], [root / "dev" / "wav"], None,
                                   max_timestep=16000)
    n_sid = sum(1 for u in manifest["utterances"] if u["task"] == "sid" and not u.get("extra_dev"))
    assert len(train) == n_sid and train.speaker_num == 6
    wav, utt, label = train[0]
    assert wav.ndim == 1 and wav.size <= 16000 and 0 <= label < 6
    test = sv.SpeakerVerifi_test({"min_sec": 8000}, str(root / "test" / "wav"), str(root / "veri_test2.txt"))
    assert all(os.path.isfile(p) for p in test.dataset)
    labels = [int(t[0]) for t in test.pair_table]
    assert labels.count(1) == labels.count(0) > 0
    for label, a, b in test.pair_table:
        assert (Path(a).parts[-3] == Path(b).parts[-3]) == (label == "1")
    held_out = {Path(p).parts[-3] for p in test.dataset}
    assert held_out and not held_out & set(train.all_speakers)  # trials over speakers held out from training


def test_asv_length_cache_keyed_by_data(tiny, tmp_path, monkeypatch):
    """s3prl caches every data set's lengths as one file in site-packages; the hook keys them."""
    from s3prl.downstream.sv_voxceleb1 import dataset as sv

    from speechft_upstream.compat import sv_voxceleb1

    monkeypatch.setattr(sv_voxceleb1, "CACHE_DIR", str(tmp_path / "cache"))
    out, _ = tiny
    other = tmp_path / "asv2" / "wav"
    shutil.copytree(out / "asv" / "dev" / "wav", other)
    for extra in sorted(other.glob("*"))[3:]:
        shutil.rmtree(extra)
    first = sv.SpeakerVerifi_train({"min_sec": 0}, ["Voxceleb1"], [out / "asv" / "dev" / "wav"], None)
    second = sv.SpeakerVerifi_train({"min_sec": 0}, ["Voxceleb1"], [other], None)
    assert second.speaker_num == 3 < first.speaker_num == 6
    assert all(str(p).startswith(str(other)) for p in second.dataset)
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    again = sv.SpeakerVerifi_train({"min_sec": 0}, ["Voxceleb1"], [out / "asv" / "dev" / "wav"], None)
    assert again.dataset == first.dataset and len(list((tmp_path / "cache").glob("*.json"))) == 2
    assert not (Path(sv.__file__).parent / ".wav_lengths").exists()


def test_eer_by_hand():
    """s3prl's EER (what results.json reports) on trials whose EER is plain to see."""
    from s3prl.downstream.sv_voxceleb1.utils import EER

    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.6, 0.2, 0.1, 0.05])
    # a threshold in (0.3, 0.6) rejects 1 of 4 targets and accepts 1 of 4 non-targets: FRR = FAR = 1/4
    assert EER(labels, scores)[0] == pytest.approx(0.25, abs=1e-6)
    assert EER(labels, np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]))[0] == pytest.approx(0.0, abs=1e-6)


def test_asv_recipe_finetune(tiny, tmp_path, tiny_hubert):
    out, _ = tiny
    exp = tmp_path / "asv_ft"
    ok(recipe("asv", "finetune", "--ckpt", tiny_hubert, "--data", out / "asv", "--exp", exp, "--beta", "0.5",
              *SMOKE, *ASV_SMALL))
    check_theta_prime(exp, tiny_hubert)
    assert list((exp / "cache" / "sv_voxceleb1").glob("*.json"))  # the length cache lives in EXP


def test_asv_recipe_evaluate(tiny, tmp_path, tiny_hubert):
    from s3prl.downstream.sv_voxceleb1.utils import EER

    out, _ = tiny
    exp = tmp_path / "asv_eval"
    ok(recipe("asv", "evaluate", "--ckpt", tiny_hubert, "--data", out / "asv", "--exp", exp, *SMOKE, *ASV_SMALL))
    results = json.loads((exp / "results.json").read_text())
    assert results["task"] == "asv" and results["metric"] == "eer" and results["split"] == "test"
    assert results["higher_is_better"] is False and 0.0 <= results["value"] <= 1.0
    # EER of the runner's own cosine scores against the labels of our trial list
    trials = (out / "asv" / "veri_test2.txt").read_text().splitlines()
    scores = [float(line.rsplit(" ", 1)[1]) for line in (exp / "test_predict.txt").read_text().splitlines()]
    labels = [int(line.split()[0]) for line in trials]
    assert len(scores) == len(labels)
    assert results["value"] == pytest.approx(EER(np.array(labels), np.array(scores))[0])


# ---- bad data folders --------------------------------------------------------------------------

@pytest.mark.parametrize("task,missing", [("sf", "slots.txt"), ("sf", "valid"), ("asv", "veri_test2.txt"),
                                          ("asv", "test/wav")])
def test_missing_file_named_in_one_line(task, missing, tiny, tmp_path, tiny_hubert):
    out, _ = tiny
    data = tmp_path / task
    shutil.copytree(out / task, data)
    target = data / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    exp = tmp_path / "exp"
    proc = recipe(task, "evaluate", "--ckpt", tiny_hubert, "--data", data, "--exp", exp, *SMOKE)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("speechft: error:")]
    assert len(lines) == 1 and f"missing {missing} ({task.upper()} data layout: " in lines[0], proc.stderr
    layout = {"sf": "all.iob.snips.txt, slots.txt and train/ valid/ test/", "asv": "dev/wav/idXXXXX"}[task]
    assert layout in lines[0]
    assert not exp.exists()  # refused before the runner started


@pytest.mark.parametrize("task", ["sf", "asv"])
def test_help(task):
    proc = ok(recipe(task, "-h"))
    assert "finetune" in proc.stdout and "evaluate" in proc.stdout


def test_score_sf_and_asv_rows(tmp_path):
    """speechft score on SF (F1 + CER) and ASV (EER) rows, mini references (FBANK measured)."""
    from speechft_upstream.evaluate import score

    rows = [{"encoder": e, "task": t, "metric": m, "value": v, "split": "test"} for e, t, m, v in [
        ("fbank", "sf", "F1", 60.0), ("fbank", "sf", "CER", 50.0), ("fbank", "asv", "EER", 20.0),
        ("theta0", "sf", "F1", 80.0), ("theta0", "sf", "CER", 25.0), ("theta0", "asv", "EER", 5.0)]]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    scores, _ = score.run(path, score.MINI_REFERENCES)
    # SF: F1 (80−60)/(100−60) = 0.5, CER (25−50)/(0−50) = 0.5 -> 0.5; ASV: (5−20)/(0−20) = 0.75
    assert scores["theta0"]["tasks"]["SF"]["normalised"] == pytest.approx(0.5)
    assert scores["theta0"]["tasks"]["ASV"]["normalised"] == pytest.approx(0.75)
    assert scores["theta0"]["score"] == pytest.approx(625.0) and scores["fbank"]["score"] == pytest.approx(0.0)
    refs = score.load_references(score.SUPERB_REFERENCES)  # the leaderboard's points, in percent
    assert set(refs["tasks"]["SF"]) == {"F1", "CER"} and set(refs["tasks"]["ASV"]) == {"EER"}
