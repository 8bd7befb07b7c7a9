"""`speechft corpus`: an offline speech corpus synthesised with eSpeak NG, in SUPERB layouts.

Speakers are eSpeak NG voices: an English accent (8 language voices) × a voice variant (which
sets formants and pitch envelope) × pitch, pitch range and speaking rate, plus a per-speaker
vocal-tract warp (the audio is resampled so that every frequency, formants included, moves by
the same factor) and a per-speaker channel tilt. Every utterance gets noise at a random SNR.

Speakers 0 … 59 are the training pool (and the 60 SID speakers); then ``k`` dev and ``k`` test
speakers (``k`` = 10, or 6 with ``--quick``), unseen in training for every task but SID, whose
train/dev/test utterances all come from the same 60 speakers.

Dev splits are larger than the train/test sizes above would give, by utterances from their own
random streams (dev_extra.py), so that α selection on dev resolves differences of a few points.
The report's figure is 1.96 · √2 · the bootstrap standard error: for an accuracy near 50 % that
is 100 · 2.77 · 0.5 / √n points, ≤ 5 points from n ≈ 770 on; PER's fell from 4.5 points at 60
utterances, so ≈ 200 reach 2.5. Dev items (default / --quick; before them 60 / 18, 120 / 60,
240 / 72, 60 / 18, 168 / 106):

| task | dev items | definition | ≈ smallest resolved difference |
|---|---|---|---|
| PR | 200 / 102 utterances | 20 / 17 sentences of each dev speaker | 2.5 / 3.5 PER points |
| SID | 840 / 420 | 14 / 7 dev utterances of each of the 60 training speakers | 4.8 / 6.8 |
| KS | 840 / 432 | dev speakers, 7 / 6 of each keyword + 14 / 12 unknown words | 4.8 / 6.7 |
| IC | 840 / 420 | 84 / 70 commands of each dev speaker | 4.8 / 6.8 |
| ER | 1008 / 370 | s3prl's 20 % carve of the training list + 3 / 1 sentences × 4 styles per train or dev speaker | 4.4 / 7.2 |

(accuracies at the worst case p = 0.5; the report measures the real figure on θ0's dev items).
--quick stays at ≈ 7 points to keep ./run.sh --quick within 10 minutes. Train and test splits,
the pre-training lists (pretrain/data.py) and ASV's lists are byte for byte those of corpus
format 2, which the shipped θ0 was trained on.

Layout under OUT (each the on-disk format of the matching s3prl 0.4.18 downstream):

- ``asr/``: LibriSpeech-style ``LibriSpeech/{train,dev,test}/<spk>/<chapter>/`` with
  ``<spk>-<chapter>.trans.txt``, ``bucket/{train,dev,test}.csv`` (file_path, length) and
  ``char.dict`` (``-d asr``: libri_root = asr/LibriSpeech, bucket_file = asr/bucket).
- ``pr/``: ``{train,dev,test}.csv`` (wav_path relative to pr/, phonemes) over the ASR audio and
  ``phones.txt`` (``-d ctc`` with the libriphone corpus). Phones are eSpeak NG's ASCII phoneme
  names for the speaker's accent, stress and length marks removed.
- ``sid/``: VoxCeleb1-style ``all/wav/id1xxxx/<video>/<n>.wav`` and ``iden_split.txt``
  (``-d voxceleb1``: file_path = sid, meta_data = sid/iden_split.txt).
- ``ks/``: Speech Commands v1-style ``train/<word>/<speaker>_nohash_<n>.wav`` (+ other words,
  read as ``_unknown_``, and ``_background_noise_/``) and ``test/<class>/`` with all 12 classes,
  1 s clips (``-d speech_commands``). Dev speakers are named so that s3prl's hash split puts
  them in its validation list.
- ``ic/``: Fluent Speech Commands-style ``data/{train,valid,test}_data.csv`` (path, speakerId,
  transcription, action, object, location) and ``wavs/`` (``-d fluent_commands``).
- ``er/``: prosody classification (neutral, question, excited, calm; the same sentences in
  every class) as IEMOCAP-style ``meta_data/Session1/{train,test}_meta_data.json`` and ``wav/``
  (``-d emotion``, test_fold fold1).
- ``sd/``: two-speaker mixtures with overlaps as Kaldi folders ``{train,dev,test}/`` (wav.scp,
  segments, utt2spk, spk2utt, reco2dur, rttm; ``-d diarization``), see layout_sd.py.
- ``qbe/``: spoken queries and a search collection in the QUESST 2014 layout with its ground
  truth (``-d quesst14_dtw``: dataset_root = qbe), see layout_qbe.py.
- ``sf/``: spoken commands with slots, Audio SNIPS-style ``{train,valid,test}/<spk>-snips-<split>-<n>.wav``,
  ``all.iob.snips.txt``, ``all-trans.txt`` and ``slots.txt`` (``-d ctc``, corpus ``snips``; layout_sf.py).
- ``asv/``: VoxCeleb1-style ``dev/wav/`` (the SID speakers' audio), ``test/wav/`` (dev and test
  speakers' ASR audio) and the trial list ``veri_test2.txt`` (``-d sv_voxceleb1``; layout_asv.py).
- ``corpus.json``: every utterance with text, phonemes, speaker, task, split, label and path;
  the speakers' parameters; seed and eSpeak NG version.

``--language cmn`` writes a Mandarin corpus instead (unlabelled audio and PR; language.py); this
English corpus does not change with it.

Deterministic for a seed: jobs are cut into a fixed number of shards, each synthesised in a
fresh process in a fixed order (eSpeak NG carries state from one utterance to the next).
"""

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from speechft_upstream.checkpoints import atomic
from speechft_upstream.errors import SpeechFTError
from speechft_upstream.data import layout_asv, layout_qbe, layout_sd, layout_sf
from speechft_upstream.data.layouts import _paths, _write_tables
from speechft_upstream.data.plan import FORMAT_VERSION, SAMPLE_RATE, SIZES, plan
from speechft_upstream.data.render import shard_worker


def generate(out, seed=0, quick=False, workers=None, force=False, progress=None, size=None, dev_extra=True):
    """Write the corpus into ``out``; returns the manifest dict (``dev_extra=False``: without
    dev_extra.py's utterances, for the tests)."""
    size = size or ("quick" if quick else "default")
    say = progress or (lambda message: None)
    out = Path(out)
    manifest_path = out / "corpus.json"
    if out.exists() and any(out.iterdir()):
        if not manifest_path.is_file() and not force:
            raise SpeechFTError(f"{manifest_path}: not found, so {out} (not empty) is not a speechft corpus; "
                                "choose an empty or new folder, or use --force to replace it")
        if manifest_path.is_file() and not force:
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                manifest = {}
            if (manifest.get("seed") == seed and manifest.get("size") == size and manifest.get("format") == FORMAT_VERSION
                    and manifest.get("dev_extra", True) == dev_extra):
                say(f"{out}: corpus already there (seed {seed}, {size}); reusing it")
                return manifest
        if not force:
            raise SpeechFTError(f"{out}: exists and is not this corpus (seed {seed}, {size}); "
                                "use --force to replace it")
    started = time.time()
    layout = plan(seed, size, dev_extra=dev_extra)
    _paths(layout)
    layout_sf.paths(layout)
    jobs, speakers = layout["jobs"], layout["speakers"]
    # Written beside OUT under a name with our pid, swapped in when complete: a killed run
    # leaves OUT as it was, and the next run removes the leftover.
    tmp = atomic.new_temp(out, folder=True)
    legacy = out.with_name(out.name + ".partial")  # earlier versions' temp folder
    if legacy.is_dir():
        shutil.rmtree(legacy)
    try:
        manifest, hours = _write(tmp, out, layout, jobs, speakers, seed, size, workers, say)
        _replace(tmp, out)
    except Exception as err:
        failed = atomic.failure_of(err, tmp)
        if failed is None:
            raise
        raise atomic.write_error(out, failed, atomic.size_of(tmp)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"wrote {len(manifest['utterances'])} utterances ({hours * 60:.1f} min of audio) to {out} in {time.time() - started:.0f} s")
    return manifest


def _write(tmp, out, layout, jobs, speakers, seed, size, workers, say):
    import multiprocessing

    n_shards = SIZES[size]["shards"]
    # a later task's jobs (shard_group) get shards of their own, so the first six tasks' shards,
    # and with them their audio, are the same as before that task existed
    groups = {}
    for job in jobs:
        groups.setdefault(job.get("shard_group"), []).append(job)
    base = groups.pop(None)
    shards = [base[i::n_shards] for i in range(n_shards)]
    per_shard = -(-len(base) // n_shards)
    for members in groups.values():  # shards of about the same size as the first six tasks'
        k = min(n_shards, -(-len(members) // per_shard))
        shards += [members[i::k] for i in range(k)]
    # SD and QbE utterances are planned apart from the others and go in shards of their own,
    # after them, for the same reason
    sd_jobs = layout_sd.plan_jobs(seed, size, layout["roles"])
    qbe_jobs = layout_qbe.plan_jobs(seed, size, layout["roles"])
    extra, n_extra = sd_jobs + qbe_jobs, max(2, n_shards // 4)
    shards += [extra[i::n_extra] for i in range(n_extra)]
    workers = workers or min(2, os.cpu_count() or 1)
    say(f"synthesising {len(jobs) + len(extra)} utterances of {len(speakers)} speakers with eSpeak NG ({workers} processes)")
    results, version = {}, None
    context = multiprocessing.get_context("spawn")  # fresh eSpeak NG state for every shard
    with context.Pool(workers, maxtasksperchild=1) as pool:
        for done, (shard_results, version) in enumerate(
                pool.imap(shard_worker, [(shard, speakers, str(tmp)) for shard in shards]), 1):
            for r in shard_results:
                results[r["id"]] = r
            say(f"shard {done}/{len(shards)}")
    for job in jobs + extra:
        job.update(results[job["id"]])
    _write_tables(tmp, layout)
    layout_sf.write(tmp, layout)
    layout_asv.write(tmp, layout)
    layout_sd.write(tmp, out, seed, sd_jobs)
    layout_qbe.write(tmp, qbe_jobs)
    manifest = {"format": FORMAT_VERSION, "seed": seed, "size": size, "espeak_ng": version,
                "sample_rate": SAMPLE_RATE, "speakers": speakers,
                "roles": layout["roles"], **({} if layout["dev_extra"] else {"dev_extra": False}), "utterances": [
                    {k: job[k] for k in ("id", "task", "split", "speaker", "text", "phonemes", "path", "samples",
                                         "snr_db", "label", "action", "object", "location", "extra_dev") if k in job}
                    for job in jobs + extra]}
    hours = sum(j["samples"] for j in jobs + extra) / SAMPLE_RATE / 3600
    manifest["hours"] = round(hours, 4)
    (tmp / "corpus.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest, hours


def _replace(tmp, out):
    """``tmp`` becomes ``out``; a previous ``out`` (--force) is renamed aside first, then removed."""
    atomic.usual_mode(tmp, folder=True)
    if not out.exists():
        os.rename(tmp, out)
        return
    aside = atomic.new_temp(out, folder=True)
    os.rename(out, aside / out.name)
    os.rename(tmp, out)
    shutil.rmtree(aside, ignore_errors=True)


def add_parser(sub):
    p = sub.add_parser("corpus", help="synthesise the offline mini-SUPERB corpus with eSpeak NG",
                       description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="DIR", help="the speech corpus (eSpeak NG)")
    where.add_argument("--music", metavar="DIR", help="instead, the synthetic music corpus (data/music.py)")
    p.add_argument("--language", metavar="L",
                   help="instead, a second-language corpus with --out: unlabelled audio and PR in language L "
                        "(cmn: Mandarin; data/language.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer utterances per speaker (for ./run.sh --quick)")
    p.add_argument("--workers", type=int, help="synthesis processes (default: min(2, CPUs)); output is the same")
    p.add_argument("--force", action="store_true", help="replace an existing corpus in DIR")
    p.add_argument("--size", choices=sorted(SIZES), help=argparse.SUPPRESS)  # tests: the tiny plan
    p.set_defaults(func=_cli)


def _cli(args):
    import sys

    if args.language is not None:
        return _language_cli(args)
    if args.music:
        from speechft_upstream.data import music

        manifest = music.generate(args.music, seed=args.seed, size="quick" if args.quick else "default",
                                  force=args.force, progress=lambda m: print(f"[corpus] {m}", file=sys.stderr, flush=True))
        print(f"{args.music}: {len(manifest['clips'])} music clips, {manifest['minutes']:.1f} min of audio; "
              + ", ".join(f"{t} ({len(labels)} classes)" for t, labels in manifest["tasks"].items()))
        return

    manifest = generate(args.out, seed=args.seed, quick=args.quick, workers=args.workers, force=args.force, size=args.size,
                        progress=lambda m: print(f"[corpus] {m}", file=sys.stderr, flush=True))
    counts = {}
    for u in manifest["utterances"]:
        counts[u["task"]] = counts.get(u["task"], 0) + 1
    print(f"{args.out}: {len(manifest['speakers'])} speakers, {manifest['hours'] * 60:.1f} min of audio, "
          f"eSpeak NG {manifest['espeak_ng']}; " + ", ".join(f"{t} {n}" for t, n in counts.items()))


def _language_cli(args):
    import sys

    from speechft_upstream.data import language

    if args.music:
        raise SpeechFTError("--language: goes with --out (a speech corpus), not --music")
    size = args.size or ("quick" if args.quick else "default")
    if size not in language.SIZES:
        raise SpeechFTError(f"--size {size}: no such size for a --language corpus")
    manifest = language.generate(args.out, args.language, seed=args.seed, size=size, workers=args.workers,
                                 force=args.force, progress=lambda m: print(f"[corpus] {m}", file=sys.stderr, flush=True))
    print(f"{args.out}: {manifest['name']} ({manifest['language']}), {len(manifest['speakers'])} speakers, "
          f"{manifest['minutes']:.1f} min of audio ({manifest['unlabelled_minutes']:.1f} min unlabelled in "
          f"{args.out}/unlabelled), eSpeak NG {manifest['espeak_ng']}; "
          + ", ".join(f"{k} {n}" for k, n in manifest["counts"].items()))
