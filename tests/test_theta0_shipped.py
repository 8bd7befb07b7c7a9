"""The shipped mini-SUPERB θ0 (assets/theta0_mini_superb.pt): its sha256, its codeword head on
held-out audio, and the benchmark's θ0 stage (the shipped file, or --pretrain at smoke size)."""

import json
import shutil

import numpy as np
import pytest
import torch

from speechft_upstream.errors import SpeechFTError
from speechft_upstream.pretrain import shipped
from tests.conftest import REPO, run_py
from tests.test_pretrain import write_corpus


def test_sha256_is_the_recorded_one():
    from speechft_upstream.pretrain.data import sha256_of

    assert shipped.ASSET == REPO / "assets" / "theta0_mini_superb.pt"
    assert shipped.ASSET.stat().st_size <= 25 * 2 ** 20
    assert sha256_of(shipped.ASSET) == shipped.SHA256 and shipped.verified() == shipped.ASSET
    record = json.loads(shipped.ASSET.with_name(shipped.ASSET.name + ".json").read_text())
    assert record["sha256"] == shipped.SHA256 and record["settings"]["recipe"] == "mini-superb"


def test_a_changed_file_is_refused(tmp_path):
    copy = tmp_path / "theta0.pt"
    shutil.copyfile(shipped.ASSET, copy)
    with open(copy, "r+b") as handle:  # one byte changed
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(SpeechFTError, match="sha256 .* is not the recorded"):
        shipped.verified(copy)
    with pytest.raises(SpeechFTError, match="missing"):
        shipped.verified(tmp_path / "absent.pt")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """A small corpus of another seed: voices and sentences the θ0 never heard."""
    from speechft_upstream.data import corpus

    out = tmp_path_factory.mktemp("heldout") / "corpus"
    manifest = corpus.generate(out, seed=12345, size="tiny", workers=2)
    return out, manifest


def test_codeword_head_has_real_targets_on_heldout_audio(heldout):
    """As `speechft unsupervised` reads its targets: unmasked input, eval mode, argmax of the cosine
    codeword logits with the fairseq specials excluded; at least 16 codewords, perplexity >= 8."""
    import soundfile

    from speechft_upstream.finetune.unsupervised import build_model, codeword_logits, encode, special_masks

    out, manifest = heldout
    model, state = build_model(shipped.ASSET)
    model.eval()
    specials = special_masks(state["dictionaries_symbols"], "cpu")[0]
    counts = np.zeros(len(state["dictionaries_symbols"][0]), dtype=np.int64)
    torch.set_num_threads(1)
    with torch.no_grad():
        for u in manifest["utterances"]:
            wave, rate = soundfile.read(str(out / u["path"]), dtype="float32")
            assert rate == 16000
            features = model.feature_extractor(torch.from_numpy(wave)[None]).transpose(1, 2)
            hidden, _ = encode(model, features, mask=False)
            goal = codeword_logits(model, hidden[0])[0].masked_fill(specials, float("-inf")).argmax(-1)
            counts += np.bincount(goal.numpy(), minlength=len(counts))
    assert counts[specials.numpy()].sum() == 0
    p = counts[counts > 0] / counts.sum()
    used, perplexity = int((counts > 0).sum()), float(np.exp(-(p * np.log(p)).sum()))
    assert counts.sum() > 5000, counts.sum()
    assert used >= 16 and perplexity >= 8, (used, perplexity)


def test_benchmark_uses_the_shipped_file_at_full_and_quick_size(tmp_path):
    from speechft_upstream.benchmark.stages import stage_theta0

    for size in ("full", "quick"):
        done = stage_theta0(tmp_path / size, size, 0, {"dir": str(tmp_path / "corpus")})
        assert done["path"] == str(shipped.ASSET) and done["sha256"] == shipped.SHA256
        assert "shipped" in done["source"] and not done["_reused"]
        assert stage_theta0(tmp_path / size, size, 0, {"dir": str(tmp_path / "corpus")})["_reused"]


def test_pretrain_option_runs_the_recipe_at_smoke_size(tmp_path):
    from speechft_upstream.benchmark.stages import stage_theta0
    from speechft_upstream.pretrain.data import sha256_of

    corpus = write_corpus(tmp_path / "corpus")
    done = stage_theta0(tmp_path / "work", "smoke", 0, {"dir": str(corpus)}, pretrain=True)
    path = tmp_path / "work" / "theta0" / "theta0.pt"
    assert done["path"] == str(path.resolve()) and done["sha256"] == sha256_of(path)
    assert done["source"].startswith("speechft pretrain --recipe mini-superb")
    record = json.loads(path.with_name("theta0.pt.json").read_text())
    assert record["settings"]["recipe"] == "mini-superb" and len(record["loss"]) == 3 + 2
    assert record["kmeans_iteration2"]["layer"] == record["settings"]["iter2_layer"]
    state = torch.load(path, weights_only=True)
    assert state["model_weight"]["label_embs_concat"].shape[0] == 8 + 4
    proc = run_py(["-m", "speechft_upstream.cli", "benchmark", "--help"])
    assert proc.returncode == 0 and "--pretrain" in proc.stdout
