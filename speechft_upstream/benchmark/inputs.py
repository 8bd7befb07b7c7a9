"""The benchmark's inputs from outside: real task data (--data-root) and a given θ0 (--theta0).

--data-root DIR replaces the corpus stage: DIR/<folder>/ holds each task's data in the layout
its recipe documents (downstream_recipes/README.md), with the corpus's folder names (so a
`speechft corpus` folder is itself a valid DIR). Everything is checked before any stage runs.
"""

import hashlib
import os
import re
from pathlib import Path

from speechft_upstream.benchmark.sizes import FINETUNE_TASKS, RECIPES, TASKS
from speechft_upstream.benchmark.stage import Stage, run_cmd, say, speechft_cmd
from speechft_upstream.errors import SpeechFTError

# Folders the recipes write into a data folder themselves (asr.sh's LibriSpeech bucket lists):
# left out of the fingerprint, so a first run does not change the data's identity.
DERIVED = ("len_for_bucket",)

# Held-out LibriSpeech-style audio for the analysis stage: the corpus's, then LibriSpeech's own.
ANALYZE_AUDIO = ("asr/LibriSpeech/test", "asr/test-clean")


def _recipe_data(recipe):
    """(DATA_LAYOUT, static DATA_CHECK paths) as the recipe script declares them."""
    text = (RECIPES / recipe).read_text()
    layout = re.search(r'^DATA_LAYOUT="([^"]*)"', text, re.M)
    check = re.search(r"^DATA_CHECK=\(([^)\n]*)\)", text, re.M)
    return (layout.group(1) if layout else "see downstream_recipes/README.md"), (check.group(1).split() if check else [])


def check_data_root(root, tasks, finetune_task):
    """One line naming the first missing folder / file and the layout it belongs to."""
    root = Path(root)
    if not root.is_dir():
        raise SpeechFTError(f"--data-root {root}: no such folder")
    needed = [(task, *TASKS[task][:2]) for task in tasks]
    needed.append((finetune_task, *FINETUNE_TASKS[finetune_task][:2]))
    for task, recipe, folder in needed:
        layout, checks = _recipe_data(recipe)
        where = root / folder
        if not where.is_dir():
            raise SpeechFTError(f"{where}: no such folder ({task} data; expected layout: {layout}; "
                                "see downstream_recipes/README.md)")
        for need in checks:
            if not (where / need).exists():
                raise SpeechFTError(f"{where}: missing {need} ({task} data; expected layout: {layout}; "
                                    "see downstream_recipes/README.md)")
    for rel in ANALYZE_AUDIO:
        if (root / rel).is_dir():
            return root / rel
    raise SpeechFTError(f"{root / ANALYZE_AUDIO[-1]}: no such folder (held-out LibriSpeech audio for the analysis "
                        f"stage; {root / 'asr'} is the LibriSpeech root of the ASR layout)")


def fingerprint(root, folders):
    """sha256 over the sorted 'relative path, size, mtime' lines of every file under the folders
    (not the audio bytes: reading a SUPERB-sized tree would take hours); (hex, files, bytes)."""
    root = Path(root)
    lines, total = [], 0
    for folder in sorted(set(folders)):
        for top, dirs, names in os.walk(root / folder, followlinks=True):
            dirs[:] = sorted(d for d in dirs if d not in DERIVED)
            for name in names:
                path = Path(top) / name
                st = path.stat()
                total += st.st_size
                lines.append(f"{path.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}")
    lines.sort()
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), len(lines), total


def data_root_info(root, tasks, finetune_task):
    """What stands in for the corpus stage's outputs: the data's path and fingerprint."""
    root = Path(root).resolve()
    audio = check_data_root(root, tasks, finetune_task)
    folders = [TASKS[t][1] for t in tasks] + [FINETUNE_TASKS[finetune_task][1]]
    folders.append(audio.relative_to(root).parts[0])  # the analysis reads it
    say(f"data: {root} ({', '.join(sorted(set(folders)))}); fingerprinting the file list (paths, sizes, mtimes)")
    digest, files, size = fingerprint(root, folders)
    say(f"data: {files} files, {size / 2**30:.2f} GiB, fingerprint {digest[:16]}…")
    return {"dir": str(root), "data_root": True, "folders": sorted(set(folders)), "fingerprint": digest,
            "files": files, "bytes": size, "analyze_audio": str(audio),
            "fingerprint_of": "sha256 of the sorted 'relative path<TAB>size<TAB>mtime_ns' lines of every file under "
                              "the task folders (" + ", ".join(DERIVED) + " left out); not the audio bytes"}


def theta0_format(path):
    """'converted' or 'fairseq' for a HuBERT checkpoint; the existing one-line refusals otherwise."""
    from speechft_upstream.checkpoints import convert, files

    state = convert.read(path)  # fairseq's pickled configs read as inert records; nothing runs
    if isinstance(state, dict) and isinstance(state.get("model"), dict) and "model_weight" not in state:
        family = convert.detect(state, path)
        if family != "hubert":
            raise SpeechFTError(f"{path}: is a {family} checkpoint, but a hubert checkpoint is needed "
                                "(the benchmark evaluates through speechft_hubert)")
        return "fairseq"
    del state
    files.read_encoder(path, expect="hubert")
    return "converted"


def stage_theta0_given(work, path, kind=None):
    """--theta0: used as it is (speechft's converted format), or converted first (a fairseq
    checkpoint; `speechft convert` into the θ0 stage folder, cached by the source's sha256)."""
    from speechft_upstream.pretrain.data import sha256_of

    path = Path(path).resolve()
    kind = kind or theta0_format(path)
    say(f"θ0: {path} ({'s3prl converted' if kind == 'converted' else 'fairseq'} HuBERT checkpoint); sha256 …")
    digest = sha256_of(path)
    params = {"mode": "given", "format": kind, "sha256": digest}
    if kind == "converted":
        params["path"] = str(path)
    stage = Stage(Path(work) / "theta0", params)
    done = stage.cached()
    if done:
        say(f"reusing {done['path']} ({done['source']})")
        return done
    stage.start()
    if kind == "converted":
        return stage.finish({"path": str(path), "sha256": digest, "source": f"--theta0 {path}"}, [str(path)])
    out = stage.folder / "theta0.pt"
    cmd = speechft_cmd("convert", path, "-o", out)
    say("$ speechft " + " ".join(map(str, cmd[3:])))
    run_cmd(cmd)
    if not out.is_file():
        raise SpeechFTError(f"speechft convert wrote no {out}")
    return stage.finish({"path": str(out.resolve()), "sha256": sha256_of(out), "source_sha256": digest,
                         "source": f"--theta0 {path} (fairseq; converted by speechft convert)"}, ["theta0.pt"])
