"""Where each task's files go and the tables each s3prl downstream reads (see corpus.py)."""


import csv
import json
import os
from pathlib import Path


from speechft_upstream.data.plan import PROSODY, SAMPLE_RATE, rng_for
from speechft_upstream.data.render import coloured_noise



def _paths(layout):
    """Fill in every job's relative wav path (the layout each s3prl downstream reads)."""
    ks_names = layout["ks_names"]
    counters = {}
    for job in layout["jobs"]:
        s, split, task = job["speaker"], job["split"], job["task"]
        key = (task, s, job.get("label"), split)
        n = counters[key] = counters.get(key, -1) + 1
        if task == "asr":
            spk = 1000 + s
            job["utt"] = f"{spk}-1-{n:04d}"
            job["path"] = f"asr/LibriSpeech/{split}/{spk}/1/{job['utt']}.wav"
        elif task == "sid":
            job["path"] = f"sid/all/wav/id{10001 + s}/{split}/{n:05d}.wav"
        elif task == "ks":
            root = "ks/test" if split == "test" else "ks/train"
            job["path"] = f"{root}/{job['label']}/{ks_names[s]}_nohash_{n}.wav"
        elif task == "ic":
            job["path"] = f"ic/wavs/speakers/spk{s:03d}/{job['id']}.wav"
        elif task == "er":
            job["path"] = f"er/wav/spk{s:03d}/{job['id']}.wav"


def _write_tables(out, layout):
    import numpy as np

    jobs = layout["jobs"]
    by_task = {}
    for job in jobs:
        by_task.setdefault(job["task"], []).append(job)

    # ASR: transcripts per speaker/chapter folder, bucket CSVs, char.dict
    (out / "asr" / "bucket").mkdir(parents=True, exist_ok=True)
    chars = {}
    folders = {}
    for job in by_task["asr"]:
        folders.setdefault(str(Path(job["path"]).parent), []).append(job)
        if job.get("extra_dev"):  # the vocabulary's order (by count) stays what it was
            continue
        for ch in job["text"].upper().replace(" ", "|"):
            chars[ch] = chars.get(ch, 0) + 1
        chars["|"] = chars.get("|", 0) + 1
    for folder, members in folders.items():
        spk, chapter = Path(folder).parts[-2:]
        lines = [f"{j['utt']} {j['text'].upper()}" for j in members]
        (out / folder / f"{spk}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    for split in ("train", "dev", "test"):
        rows = [j for j in by_task["asr"] if j["split"] == split]
        with open(out / "asr" / "bucket" / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["idx", "file_path", "length", "label"])
            for i, j in enumerate(rows):
                writer.writerow([i, j["path"].split("asr/LibriSpeech/", 1)[1], j["samples"], j["text"].upper()])
    (out / "asr" / "char.dict").write_text("".join(f"{c} {n}\n" for c, n in sorted(chars.items(), key=lambda kv: -kv[1])))

    # PR: CSVs over the ASR audio, phone vocabulary
    (out / "pr").mkdir(exist_ok=True)
    phones = set()
    for split in ("train", "dev", "test"):
        with open(out / "pr" / f"{split}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["wav_path", "phonemes", "transcription", "speaker"])
            for j in by_task["asr"]:
                if j["split"] == split:
                    seq = [p for word in j["phonemes"] for p in word]
                    phones.update(seq)
                    writer.writerow([os.path.relpath(j["path"], "pr"), " ".join(seq), j["text"], j["speaker"]])
    (out / "pr" / "phones.txt").write_text("".join(f"{p}\n" for p in sorted(phones)))

    # SID: VoxCeleb1 iden_split.txt (1 train, 2 dev, 3 test)
    code = {"train": 1, "dev": 2, "test": 3}
    lines = [f"{code[j['split']]} {j['path'].split('sid/all/wav/', 1)[1]}" for j in by_task["sid"]]
    (out / "sid" / "iden_split.txt").write_text("\n".join(lines) + "\n")

    # KS: background noise for _silence_ (train), 1 s silence clips (test)
    rng = rng_for(layout["seed"], "ks-noise")
    noise_dir = out / "ks" / "train" / "_background_noise_"
    noise_dir.mkdir(parents=True, exist_ok=True)
    import soundfile

    for i, colour in enumerate(("white", "pink", "brown", "white", "pink", "brown")):
        noise = coloured_noise(rng, SAMPLE_RATE * 10, colour)
        soundfile.write(str(noise_dir / f"{colour}_{i}.wav"),
                        (noise / (np.abs(noise).max() + 1e-9) * rng.uniform(0.05, 0.4)).astype(np.float32), SAMPLE_RATE,
                        subtype="PCM_16")
    silence_dir = out / "ks" / "test" / "_silence_"
    silence_dir.mkdir(parents=True, exist_ok=True)
    for i in range(max(4, len(layout["roles"]["test"]))):
        noise = coloured_noise(rng, SAMPLE_RATE, ("white", "pink", "brown")[i % 3])
        soundfile.write(str(silence_dir / f"silence_nohash_{i}.wav"),
                        (noise / (np.abs(noise).max() + 1e-9) * rng.uniform(0.02, 0.3)).astype(np.float32), SAMPLE_RATE,
                        subtype="PCM_16")

    # IC: Fluent Speech Commands CSVs
    (out / "ic" / "data").mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train_data.csv"), ("dev", "valid_data.csv"), ("test", "test_data.csv")):
        with open(out / "ic" / "data" / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["", "path", "speakerId", "transcription", "action", "object", "location"])
            rows = [j for j in by_task["ic"] if j["split"] == split]
            for i, j in enumerate(rows):
                writer.writerow([i, j["path"].split("ic/", 1)[1], f"spk{j['speaker']:03d}", j["text"], j["action"],
                                 j["object"], j["location"]])

    # ER (prosody): IEMOCAP-style fold 1: train+dev speakers train, test speakers test
    session = out / "er" / "meta_data" / "Session1"
    session.mkdir(parents=True, exist_ok=True)
    labels = {style: i for i, style in enumerate(PROSODY)}
    # s3prl carves its dev (20 %) out of the training list; the extra dev utterances go to a
    # list of their own, added to that dev by compat/emotion_dev.py, so the carve stays the same
    for name, splits, extra in (("train_meta_data.json", ("train", "dev"), False),
                                ("test_meta_data.json", ("test",), False), ("dev_meta_data.json", ("dev",), True)):
        meta = [{"path": j["path"].split("er/", 1)[1], "label": j["label"], "speaker": f"spk{j['speaker']:03d}"}
                for j in by_task["er"] if j["split"] in splits and bool(j.get("extra_dev")) == extra]
        if meta or not extra:
            (session / name).write_text(json.dumps({"labels": labels, "meta_data": meta}, indent=1))
