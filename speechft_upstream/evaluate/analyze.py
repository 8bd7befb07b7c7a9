"""`speechft analyze`: how far fine-tuned or merged encoders moved from θ0, layer by layer.

For θ0 and every model, the speechft upstream (s3prl's own expert, eval mode, no gradient) runs
on each audio file of a folder, one file at a time. Hidden state h (h = 0 … L, as s3prl gives
them: h = 0 is the transformer's input, h ≥ 1 the output of transformer layer h − 1) is compared
with θ0's hidden state h over all frames of all files:

- ``r2``: R² of the least-squares affine fit predicting the model's features from θ0's;
- ``cka``: linear CKA (Kornblith et al., 2019);
- ``weight_change``: ‖θ − θ0‖ / ‖θ0‖ over the parameters that produce that hidden state and
  not the previous one: ``encoder.layers.<h−1>.*`` for h ≥ 1; for h = 0 every parameter outside
  ``encoder.layers.*`` that the forward pass uses (CNN, projection, positional convolution,
  encoder layer norm), i.e. without the pre-training heads (``final_proj``, codebooks, …).

Writes ``similarity.md``, ``similarity.csv``, ``similarity.json`` and ``similarity.png`` into
the output folder. The paper's finding to look for: the merged θ̂ keeps high similarity to θ0
although its weights moved more than the baselines'.
"""

import argparse
import csv
import json
import re
from pathlib import Path

from speechft_upstream.checkpoints import files
from speechft_upstream.errors import SpeechFTError
from speechft_upstream.evaluate.similarity import Accumulator, relative_change

SAMPLE_RATE = 16000
AUDIO_EXTENSIONS = (".wav", ".flac")
LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")
# Parameters the feature forward pass never uses (pre-training heads and masking).
HEADS = ("final_proj", "label_embs_concat", "label_embs", "mask_emb", "quantizer", "project_q", "target_glu")
OUTPUT_NAMES = ("similarity.md", "similarity.csv", "similarity.json", "similarity.png")


def audio_files(folder, max_files=None):
    import soundfile

    folder = Path(folder)
    if not folder.is_dir():
        raise SpeechFTError(f"{folder}: no such folder (give the folder that holds the .wav files)")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not paths:
        raise SpeechFTError(f"{folder}: no .wav or .flac files in it (searched sub-folders too)")
    if max_files:
        paths = paths[:max_files]
    for path in paths:
        try:
            info = soundfile.info(str(path))
        except Exception as err:
            raise SpeechFTError(f"{path}: cannot read audio ({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__})") from None
        if info.samplerate != SAMPLE_RATE:
            raise SpeechFTError(f"{path}: sample rate is {info.samplerate} Hz; 16000 Hz audio is needed")
        if info.channels != 1:
            raise SpeechFTError(f"{path}: has {info.channels} channels; mono audio is needed")
    return paths


def _group(name):
    """The hidden-state index whose weight change this parameter counts toward, or None."""
    match = LAYER.match(name)
    if match:
        return int(match.group(1)) + 1
    if name.split(".")[0] in HEADS:
        return None
    return 0


def weight_changes(base, model, base_path, model_path):
    """{hidden state index: relative change} and the overall change, for two same-shaped weight dicts."""
    if set(base) != set(model):
        only = sorted(set(base) ^ set(model))
        raise SpeechFTError(f"{model_path}: its parameters differ from {base_path}'s (e.g. {only[0]!r}); "
                            "compare models of the same architecture")
    groups = {}
    for name in base:
        if tuple(base[name].shape) != tuple(model[name].shape):
            raise SpeechFTError(f"{model_path}: parameter {name!r} has shape {tuple(model[name].shape)}, "
                                f"{base_path} has {tuple(base[name].shape)}")
        if not base[name].is_floating_point():
            continue
        group = _group(name)
        if group is not None:
            groups.setdefault(group, []).append(name)
    changes = {g: relative_change([model[n].numpy() for n in names], [base[n].numpy() for n in names])
               for g, names in sorted(groups.items())}
    used = [n for names in groups.values() for n in names]
    overall = relative_change([model[n].numpy() for n in used], [base[n].numpy() for n in used])
    return changes, overall, {g: len(names) for g, names in groups.items()}


def _labels(paths):
    stems = [Path(p).stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    return [str(p) for p in paths]


def analyze(base, models, audio, max_files=None, progress=None):
    """The per-model, per-layer table: a list of row dicts (see the module docstring)."""
    import numpy as np
    import soundfile
    import torch

    from speechft_upstream.upstream import expert

    say = progress or (lambda message: None)
    if not models:
        raise SpeechFTError("give at least one model to compare with θ0 (--models A.pt [B.pt ...])")
    wavs = audio_files(audio, max_files)
    base_state, family = files.read_encoder(base)
    base_weights = files.weights(base_state, family)
    labels = _labels(models)

    changes = []
    for path in models:
        state, model_family = files.read_encoder(path)
        if model_family != family:
            raise SpeechFTError(f"{path}: is a {model_family} checkpoint, but θ0 ({base}) is {family}")
        changes.append(weight_changes(base_weights, files.weights(state, family), base, path))
        del state

    say(f"loading θ0 and {len(models)} model(s) ({family})")
    encoders = []
    for path in [base, *models]:
        module = expert.build(family, path)
        module.eval()
        encoders.append(module)

    accumulators = None
    frames = 0
    with torch.no_grad():
        for index, path in enumerate(wavs, 1):
            wav, _ = soundfile.read(str(path), dtype="float32", always_2d=False)
            wav = torch.from_numpy(np.ascontiguousarray(wav))
            hidden = [enc([wav])["hidden_states"] for enc in encoders]
            if accumulators is None:
                accumulators = [[Accumulator() for _ in hidden[0]] for _ in models]
            reference = hidden[0]
            for m, states in enumerate(hidden[1:]):
                if len(states) != len(reference):
                    raise SpeechFTError(f"{models[m]}: gives {len(states)} hidden states, θ0 gives {len(reference)}")
                for h, (x, y) in enumerate(zip(reference, states)):
                    x, y = x[0].double().numpy(), y[0].double().numpy()
                    if x.shape != y.shape:
                        raise SpeechFTError(f"{models[m]}: hidden state {h} has shape {y.shape} on {path}, θ0's {x.shape}")
                    accumulators[m][h].update(x, y)
            frames += reference[0].shape[1]
            if index % 20 == 0 or index == len(wavs):
                say(f"features: {index}/{len(wavs)} files, {frames} frames")

    dims = accumulators[0][0].dims
    if frames <= dims:
        raise SpeechFTError(f"{audio}: only {frames} frames of audio for {dims}-dimensional features; the linear fit "
                            f"needs more frames than dimensions (give more or longer files, ≥ {dims * 2 * 320 / SAMPLE_RATE:.0f} s)")

    rows = []
    for m, label in enumerate(labels):
        per_layer, overall, counts = changes[m]
        for h, acc in enumerate(accumulators[m]):
            rows.append({"model": label, "path": str(models[m]), "hidden_state": h,
                         "r2": acc.r2(), "cka": acc.cka(),
                         "weight_change": per_layer.get(h, float("nan")), "tensors": counts.get(h, 0),
                         "overall_weight_change": overall, "frames": frames, "files": len(wavs)})
    return rows


def write_outputs(rows, outdir, base):
    """The four outputs, moved into ``outdir`` together once all are written (a full disk gives
    one error line and leaves earlier outputs as they were)."""
    from speechft_upstream.checkpoints import atomic

    final = Path(outdir)
    with atomic.folder_output(final) as outdir:
        _write_outputs(rows, outdir, base)
    return [final / name for name in OUTPUT_NAMES]


def _write_outputs(rows, outdir, base):
    fields = ["model", "hidden_state", "r2", "cka", "weight_change", "tensors", "overall_weight_change", "frames",
              "files", "path"]
    with open(outdir / "similarity.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (outdir / "similarity.json").write_text(json.dumps({"base": str(base), "rows": rows}, indent=2) + "\n",
                                            encoding="utf-8")
    (outdir / "similarity.md").write_text("\n".join(markdown(rows, base)) + "\n", encoding="utf-8")
    plot(rows, outdir / "similarity.png", base)
    return [outdir / name for name in OUTPUT_NAMES]


def markdown(rows, base):
    first = rows[0]
    lines = [f"Feature similarity to θ0 ({base}) over {first['frames']} frames of {first['files']} files; "
             "hidden state 0 is the transformer's input, h ≥ 1 the output of layer h − 1.", "",
             "| model | hidden state | R² | linear CKA | weight change ‖θ−θ0‖/‖θ0‖ |", "|---|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['hidden_state']} | {row['r2']:.4f} | {row['cka']:.4f} | "
                     f"{row['weight_change']:.4g} |")
    lines += ["", "| model | overall weight change |", "|---|---:|"]
    seen = []
    for row in rows:
        if row["model"] not in seen:
            seen.append(row["model"])
            lines.append(f"| {row['model']} | {row['overall_weight_change']:.4g} |")
    return lines


def plot(rows, path, base):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(row["model"] for row in rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for model in models:
        mine = [row for row in rows if row["model"] == model]
        layers = [row["hidden_state"] for row in mine]
        axes[0].plot(layers, [row["cka"] for row in mine], marker="o", label=model)
        axes[1].plot(layers, [row["r2"] for row in mine], marker="o", label=model)
        axes[2].plot(layers, [row["weight_change"] for row in mine], marker="o", label=model)
    from matplotlib.ticker import MaxNLocator

    for ax, title in zip(axes, ("linear CKA to θ0", "R² (linear fit from θ0)", "relative weight change")):
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("hidden state (0 = transformer input)")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(top=1.02)
    axes[1].set_ylim(top=1.02)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"similarity to θ0: {Path(str(base)).name}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_parser(sub):
    p = sub.add_parser("analyze", help="per-layer feature similarity (R², linear CKA) and weight change vs θ0",
                       description="\n\n".join(__doc__.split("\n\n")[1:4]),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, metavar="THETA0", help="θ0 (s3prl converted format)")
    p.add_argument("--models", required=True, nargs="+", metavar="MODEL", help="θ′, θ̂, … (same family and shape)")
    p.add_argument("--audio", required=True, metavar="DIR", help="folder of 16 kHz mono .wav/.flac files")
    p.add_argument("-o", "--outdir", default="analysis", metavar="OUTDIR", help="where to write (default: analysis)")
    p.add_argument("--max-files", type=int, metavar="N", help="use only the first N files (sorted by path)")
    p.set_defaults(func=_cli)


def _cli(args):
    import sys

    rows = analyze(args.base, args.models, args.audio, max_files=args.max_files,
                   progress=lambda message: print(f"[analyze] {message}", file=sys.stderr, flush=True))
    written = write_outputs(rows, args.outdir, args.base)
    print("\n".join(markdown(rows, args.base)))
    print(f"wrote {', '.join(str(p) for p in written)}")
