"""``speechft export-hf``: a converted encoder as a HuggingFace transformers model folder.

The transformers config is built from the checkpoint's own model config (resolved with s3prl's
config classes, so the defaults are the ones s3prl builds the model with), the weights are
renamed from s3prl's (fairseq) names to transformers' names, and the mapping is checked both
ways: every transformers parameter must be filled with a tensor of its shape, and every tensor
of the checkpoint must land somewhere, except the few that only serve pre-training
(``PRETRAINING_ONLY``). The folder is written by transformers' own ``save_pretrained``
(config.json + model.safetensors) plus a ``preprocessor_config.json`` for the feature extractor,
into a temporary folder beside OUTDIR that is then renamed into place.
"""

import os
import shutil
from pathlib import Path

from speechft_upstream.checkpoints import atomic, files
from speechft_upstream.errors import SpeechFTError

from speechft_upstream.checkpoints.hf.config import HF_CLASSES, SUPPORTED, build_hf_config, model_config
from speechft_upstream.checkpoints.hf.weights import map_weights

WRITTEN = ("config.json", "model.safetensors", "preprocessor_config.json")





def _check_outdir(outdir, force):
    if outdir.exists() and not outdir.is_dir():
        raise SpeechFTError(f"{outdir}: exists and is not a folder")
    if outdir.is_dir() and any(outdir.iterdir()) and not force:
        raise SpeechFTError(f"{outdir}: folder exists and is not empty; use --force to write into it")


def _publish(tmp, outdir, force):
    """Move the finished folder ``tmp`` into place as ``outdir``, each step a rename."""
    _check_outdir(outdir, force)  # again: something may have appeared there meanwhile
    if outdir.is_dir() and not any(outdir.iterdir()):
        outdir.rmdir()
    if not outdir.exists():
        os.rename(tmp, outdir)
        return
    # --force on a non-empty folder: replace our files one by one, leave the others alone
    for name in sorted(os.listdir(tmp)):
        os.replace(tmp / name, outdir / name)
    shutil.rmtree(tmp, ignore_errors=True)


def export(ckpt, outdir, force=False):
    """Write ``ckpt`` (a converted hubert/wav2vec2/wavlm checkpoint) as a transformers folder.

    Returns a one-line summary.
    """
    import torch
    import transformers

    from speechft_upstream import __version__

    outdir = Path(outdir)
    _check_outdir(outdir, force)

    state, family = files.read_encoder(ckpt)
    if family not in SUPPORTED:
        raise SpeechFTError(
            f"{ckpt}: is a {family} checkpoint; export-hf writes {', '.join(SUPPORTED)} encoders only "
            "(transformers has no such model)"
        )
    params = files.weights(state, family)
    cfg, normalize = model_config(state, family, ckpt)
    config = build_hf_config(cfg, family, ckpt)
    config.speechft_source = {"file": Path(ckpt).name, "family": family, "speechft_version": __version__}

    model_class = getattr(transformers, HF_CLASSES[family][1])
    model = model_class(config).eval()
    mapped, left_out, notes = map_weights(params, family, model.state_dict(), ckpt)

    float_dtypes = {t.dtype for t in params.values() if t.is_floating_point()}
    dtype = float_dtypes.pop() if len(float_dtypes) == 1 else torch.float32
    model.load_state_dict({k: v.to(torch.float32) for k, v in mapped.items()}, strict=True)
    if dtype != torch.float32:
        model = model.to(dtype)

    extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=normalize,
        # group-norm CNNs were trained without attention masks (transformers' convention)
        return_attention_mask=config.feat_extract_norm == "layer",
    )

    tmp = atomic.new_temp(outdir.absolute(), folder=True)  # .NAME.<pid>.*.tmp beside OUTDIR
    bars = transformers.utils.logging.is_progress_bar_enabled()
    try:
        transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bar
        model.save_pretrained(tmp)
        extractor.save_pretrained(tmp)
        written = sorted(os.listdir(tmp))
        if "model.safetensors" not in written:
            raise SpeechFTError(f"{outdir}: transformers wrote {written}, expected a single model.safetensors")
        # mkdtemp makes 0700 and safetensors may write 0600: give everything the usual modes
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        for name in written:
            os.chmod(tmp / name, 0o666 & ~umask)
        _publish(tmp, outdir, force)
    except Exception as err:  # safetensors reports a full disk as its own error type
        failed = atomic.failure_of(err, tmp)
        if failed is None:
            raise
        expected = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        raise atomic.write_error(outdir, failed, atomic.size_of(tmp), expected) from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    count = sum(p.numel() for p in model.parameters())
    summary = (
        f"wrote {outdir}: {HF_CLASSES[family][1]} ({config.num_hidden_layers} layers, {config.hidden_size} dims, "
        f"{count:,} parameters, {str(dtype).replace('torch.', '')}) from {family} checkpoint {ckpt}; "
        f"files: {', '.join(written)}"
    )
    if left_out:
        summary += f"; left out (pre-training only): {', '.join(left_out)}"
    if notes:
        summary += "; " + "; ".join(notes)
    return summary
