"""patches/: the s3prl source-checkout workflow, on the unpacked PyPI sdist of s3prl 0.4.18.

The sdist is cached in REPO/.cache/sdist (git-ignored); pip fetches it once (the local mirror
works offline). The patched copy runs with the startup hook off (SPEECHFT_NO_AUTOLOAD=1), so
everything it needs must come from the patched source itself.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

from speechft_upstream.checkpoints import files
from tests.conftest import EXAMPLE_CONFIG, REPO, assert_ok

APPLY = REPO / "patches" / "apply.sh"
PATCHES = sorted((REPO / "patches" / "s3prl").glob("*.patch"))
SDIST_DIR = REPO / ".cache" / "sdist"
VERSION = "0.4.18"

pytestmark = pytest.mark.skipif(shutil.which("patch") is None, reason="GNU patch is not installed")


@pytest.fixture(scope="session")
def pristine(tmp_path_factory):
    """The unpacked sdist (read-only use: tests copy it)."""
    archive = SDIST_DIR / f"s3prl-{VERSION}.tar.gz"
    if not archive.is_file():
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"s3prl=={VERSION}", "-d", str(SDIST_DIR)],
            capture_output=True, text=True, timeout=300,
        )
        if proc.returncode != 0 or not archive.is_file():
            pytest.skip(f"cannot download the s3prl {VERSION} sdist with pip: {proc.stderr.strip()[-300:]}")
    folder = tmp_path_factory.mktemp("sdist")
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder / f"s3prl-{VERSION}"


@pytest.fixture
def tree(pristine, tmp_path):
    root = tmp_path / "s3prl-src"
    shutil.copytree(pristine, root)
    return root


@pytest.fixture(scope="session")
def patched(pristine, tmp_path_factory):
    root = tmp_path_factory.mktemp("patched") / "s3prl-src"
    shutil.copytree(pristine, root)
    proc = apply(root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root


def apply(*args, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(["bash", str(APPLY), *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=120)


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def patched_env(root):
    """Hook off; the patched source first on the path, speechft importable from the repo."""
    return dict(os.environ, SPEECHFT_NO_AUTOLOAD="1", PYTHONDONTWRITEBYTECODE="1",
                PYTHONPATH=os.pathsep.join([str(root), str(REPO)]))


def py(args, env, timeout=600):
    return subprocess.run([sys.executable, *map(str, args)], env=env, text=True,
                          capture_output=True, timeout=timeout)


def report(proc):
    return {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in proc.stdout.splitlines() if ": " in line}


def test_patches_exist():
    assert [p.name[:4] for p in PATCHES] == ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009"]


def test_check_apply_idempotent_reverse(tree, pristine):
    names = [f"s3prl/{p.name}" for p in PATCHES]
    proc = apply("--check", tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report(proc) == {n: "applies" for n in names}
    assert snapshot(tree) == snapshot(pristine), "--check must not change anything"

    proc = apply(tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report(proc) == {n: "applied" for n in names}
    once = snapshot(tree)
    assert "s3prl/_torchaudio_compat.py" in once
    assert not [f for f in once if f.endswith((".orig", ".rej"))]

    proc = apply(tree)  # idempotent
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report(proc) == {n: "already applied, skipped" for n in names}
    assert snapshot(tree) == once
    proc = apply(tree, "--check")  # options after ROOT work too
    assert proc.returncode == 0 and report(proc) == {n: "already applied" for n in names}

    proc = apply("--reverse", tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(report(proc)) == names[::-1]
    after = snapshot(tree)
    assert after.keys() == snapshot(pristine).keys()
    assert after == snapshot(pristine), "--reverse must restore the pristine files byte for byte"
    proc = apply("--reverse", tree)
    assert proc.returncode == 0 and set(report(proc).values()) == {"not applied, skipped"}


def test_partly_applied_tree(tree):
    subprocess.run(["patch", "-p1", "-s", "-i", str(PATCHES[0])], cwd=tree, check=True)
    proc = apply(tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rep = report(proc)
    assert rep.pop(f"s3prl/{PATCHES[0].name}") == "already applied, skipped"
    assert set(rep.values()) == {"applied"}


def test_conflict_is_reported_and_changes_nothing(tree):
    hub = tree / "s3prl" / "hub.py"
    hub.write_text(hub.read_text().replace("    return all_options\n", "    return list(all_options)\n"))
    before = snapshot(tree)
    proc = apply("--check", tree)
    assert proc.returncode == 1
    rep = report(proc)
    assert rep[f"s3prl/{PATCHES[0].name}"] == "CONFLICT"
    assert all(v == "applies" for k, v in rep.items() if k.startswith("s3prl/0") and "0001" not in k)
    assert "s3prl/hub.py" in proc.stdout  # patch's own diagnosis, indented
    proc = apply(tree)
    assert proc.returncode == 1 and "was not changed" in proc.stderr
    assert snapshot(tree) == before


def test_targets_and_usage(tmp_path, tree):
    proc = apply("--help")
    assert proc.returncode == 0 and "--reverse" in proc.stdout
    assert apply().returncode == 2
    assert apply("--bogus", tree).returncode == 2
    proc = apply(tmp_path / "nothing-here")
    assert proc.returncode == 2 and "no such folder" in proc.stderr
    (tmp_path / "plain").mkdir()
    proc = apply(tmp_path / "plain")
    assert proc.returncode == 2 and "not an s3prl source root" in proc.stderr
    proc = apply(tree / "s3prl")
    assert proc.returncode == 2 and "give the checkout root above it" in proc.stderr
    # a fairseq checkout with no fairseq patches: a message, nothing done
    fairseq = tmp_path / "fairseq-src"
    (fairseq / "fairseq").mkdir(parents=True)
    (fairseq / "fairseq" / "__init__.py").write_text("")
    empty = tmp_path / "no-patches"
    (empty / "fairseq").mkdir(parents=True)
    proc = apply(fairseq, env={"SPEECHFT_PATCHES_DIR": str(empty)})
    assert proc.returncode == 0 and "no patches for fairseq" in proc.stdout
    assert [p.name for p in fairseq.rglob("*")] == ["fairseq", "__init__.py"]


CHECK_PATCHED = """
import sys
import s3prl, s3prl.hub, s3prl.schedulers, s3prl.run_downstream  # s3prl first: it makes torchaudio import
import torchaudio
from s3prl.downstream.runner import Runner
assert not any(type(f).__name__ == "_PostImportFinder" for f in sys.meta_path), "hook is on"
print("s3prl", s3prl.__file__)
print("runner", Runner._get_upstream.__code__.co_filename)
print("hub", sorted(n for n in vars(s3prl.hub) if n.startswith("speechft_")))
print("registered", hasattr(s3prl.hub, "my_tiny"))
print("schedule", hasattr(s3prl.schedulers, "get_stable_finetuning_schedule"))
print("torchaudio", hasattr(torchaudio, "set_audio_backend"), "torchaudio.sox_effects" in sys.modules)
import os, tempfile, torch
from torchaudio.sox_effects import apply_effects_file  # as s3prl's datasets import it
path = os.path.join(tempfile.mkdtemp(), "two_channels.wav")
torchaudio.save(path, torch.rand(2, 32000) - 0.5, 32000)
meta = torchaudio.info(path)
wav, sr = apply_effects_file(path, [["channels", "1"], ["rate", "16000"], ["trim", "0", "0.5"], ["norm"]])
print("audio", meta.num_channels, meta.num_frames, tuple(wav.shape), sr, round(float(wav.abs().max()), 4))
"""


def register_tiny(registry, tiny_hubert):
    """A `speechft register my_tiny ...` entry, written directly (no s3prl import in-process)."""
    registry.write_text(json.dumps({"my_tiny": {"path": str(tiny_hubert), "family": "hubert"}}))


def test_patched_source_stands_alone(patched, isolated_registry, tiny_hubert):
    """Hook off: the names, the schedule, the runner fixes and torchaudio all come from the patches."""
    register_tiny(isolated_registry, tiny_hubert)
    proc = py(["-c", CHECK_PATCHED], patched_env(patched))
    assert_ok(proc)
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["s3prl"] == str(patched / "s3prl" / "__init__.py")
    assert lines["runner"] == str(patched / "s3prl" / "downstream" / "runner.py")
    assert lines["hub"] == str(["speechft_decoar2", "speechft_hubert", "speechft_wav2vec2", "speechft_wavlm"])
    assert lines["registered"] == "True"
    assert lines["schedule"] == "True"
    assert lines["torchaudio"] == "True True"
    assert lines["audio"] == "2 32000 (1, 8000) 16000 1.0"  # soundfile I/O and the sox effects
    assert "speechft: warning" not in proc.stderr


def test_patched_source_without_speechft(patched):
    """speechft not importable: s3prl still imports, without the speechft names or warnings."""
    code = ("import sys; sys.modules['speechft_upstream'] = None\n" + CHECK_PATCHED)
    proc = py(["-c", code], patched_env(patched))
    assert_ok(proc)
    assert "hub []" in proc.stdout and "schedule False" in proc.stdout
    assert "speechft upstreams unavailable" not in proc.stderr


def test_patched_source_with_the_hook_on(patched, isolated_registry, tiny_hubert):
    """Hook and patches together: the runner is patched once, not wrapped a second time, and
    registered names are added once (a second registry pass would warn that they shadow)."""
    register_tiny(isolated_registry, tiny_hubert)
    env = patched_env(patched)
    del env["SPEECHFT_NO_AUTOLOAD"]
    code = CHECK_PATCHED.replace('assert not any(', 'assert any(').replace('"hook is on"', '"hook is off"')
    proc = py(["-c", code], env)
    assert_ok(proc)
    assert f"runner {patched / 's3prl' / 'downstream' / 'runner.py'}" in proc.stdout
    assert "registered True" in proc.stdout and "speechft: warning" not in proc.stderr


def _encoder(path):
    state = files.load(path, allowed=files.RUNNER_ALLOWED)["Upstream"]
    return {k: v for k, v in state.items()
            if not k.startswith(("model.feature_extractor.", "model.final_proj.", "model.label_embs"))}


def test_patched_runner_train_resume_evaluate(patched, tmp_path, tiny_hubert):
    """python -m s3prl.run_downstream from the patched source, hook off: train, resume, evaluate."""
    env = patched_env(patched)
    exp = tmp_path / "exp"
    settings = tmp_path / "speechft.yaml"
    settings.write_text("beta: 0.5\n")
    quick = "config.runner.evaluate_ratio=0.04"  # 3 of the example's 50 eval batches
    proc = py(["-m", "s3prl.run_downstream", "-m", "train", "-u", "speechft_hubert", "-k", tiny_hubert,
               "-g", settings, "-d", "example", "-c", EXAMPLE_CONFIG, "-f", "--device", "cpu",
               "-p", exp, "-o", quick], env)
    assert_ok(proc)
    assert "[speechft] stable fine-tuning" in proc.stdout
    assert "head only for steps 1-3 (beta 0.5 of 6)" in proc.stdout
    assert "dev:" in proc.stderr  # evaluated on dev at step 6

    # β honoured: the encoder is θ0 after the head-only phase and has moved by the end.
    theta0 = {f"model.{k}": v for k, v in files.weights(*files.read_encoder(tiny_hubert)).items()}
    at3, at6 = _encoder(exp / "states-3.ckpt"), _encoder(exp / "states-6.ckpt")
    assert all(torch.equal(at3[k], theta0[k]) for k in at3)
    assert not all(torch.equal(at6[k], theta0[k]) for k in at6)

    proc = py(["-m", "s3prl.run_downstream", "-m", "train", "-e", exp / "states-6.ckpt",
               "-o", "config.runner.total_steps=9", "--device", "cpu"], env)
    assert_ok(proc)
    assert "Resume from" in proc.stdout and "resuming after step 6" in proc.stdout
    assert (exp / "states-9.ckpt").is_file()

    # (dev-best.ckpt needs an accuracy above 0 on 3 batches: evaluate the resumed run's last state)
    proc = py(["-m", "s3prl.run_downstream", "-m", "evaluate", "-e", exp / "states-9.ckpt",
               "--device", "cpu"], env)
    assert_ok(proc)
    assert "test:" in proc.stderr
    assert not list(patched.rglob("__pycache__")), "runs must leave the patched tree as applied"


def test_patched_runner_under_plain_torchrun(patched, tmp_path, tiny_hubert):
    """torchrun straight into the patched runner on CPU: LOCAL_RANK read, gloo picked, DDP on CPU."""
    env = dict(patched_env(patched), OMP_NUM_THREADS="1")
    exp = tmp_path / "exp"
    short = "config.runner.total_steps=2,,config.runner.save_step=2,,config.runner.eval_step=100"
    proc = py(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547",
               "-m", "s3prl.run_downstream", "-m", "train", "-u", "speechft_hubert", "-k", tiny_hubert,
               "-d", "example", "-c", EXAMPLE_CONFIG, "-f", "--device", "cpu", "-p", exp, "-o", short], env)
    assert_ok(proc)
    states = files.load(exp / "states-2.ckpt", allowed=files.RUNNER_ALLOWED)
    assert states["WorldSize"] == 2 and states["Args"].local_rank == 0


def test_patched_sd_qbe_experts(patched):
    """0007/0008 with the hook off: test posteriors unpadded, QbE DTW processes from the affinity."""
    proc = py([REPO / "tests" / "sd_qbe_experts_probe.py"], patched_env(patched), timeout=300)
    assert_ok(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not out["hooked"]  # the patched source alone
    assert out["frames"] == 14 and out["qbe_workers"] == out["affinity"] == 1


def test_patched_sv_voxceleb1_on_cpu(patched, tmp_path, tiny_hubert):
    """0006, hook off: ASV (sv_voxceleb1) trains and scores on CPU; its length cache is keyed."""
    from speechft_upstream.data import corpus

    data = corpus.generate(tmp_path / "corpus", seed=3, size="tiny", workers=2) and tmp_path / "corpus" / "asv"
    env = dict(patched_env(patched), S3PRL_SV_CACHE_DIR=str(tmp_path / "svcache"), OMP_NUM_THREADS="1")
    trials = data / "veri_test2.txt"
    small = ",,".join([
        f"config.downstream_expert.datarc.file_path='{data}'",
        *(f"config.downstream_expert.datarc.{k}_meta_data='{trials}'" for k in ("train", "dev", "test")),
        "config.runner.total_steps=2", "config.runner.save_step=2", "config.runner.log_step=2",
        "config.downstream_expert.datarc.train_batch_size=2", "config.downstream_expert.datarc.num_workers=0",
        "config.downstream_expert.modelrc.input_dim=32", "config.downstream_expert.modelrc.module_config.XVector.agg_dim=64"])
    exp = tmp_path / "exp"
    proc = py(["-m", "s3prl.run_downstream", "-m", "train", "-u", "hubert_local", "-k", tiny_hubert,
               "-d", "sv_voxceleb1", "-c", REPO / "downstream_recipes" / "configs" / "asv.yaml", "--device", "cpu",
               "-p", exp, "-o", small], env)
    assert_ok(proc)
    caches = list((tmp_path / "svcache").glob("Voxceleb1_*_length.pt"))
    assert len(caches) == 1 and not list(patched.rglob(".wav_lengths"))
    proc = py(["-m", "s3prl.run_downstream", "-m", "evaluate", "-e", exp / "states-2.ckpt", "--device", "cpu"], env)
    assert_ok(proc)
    eer = [float(x) for x in re.findall(r"sv-voxceleb1/test-EER: ([0-9.eE+-]+)", proc.stdout)]
    assert len(eer) == 1 and 0.0 <= eer[0] <= 1.0


# ---- 0009: speechft's asr_ted downstream as s3prl/downstream/asr_ted/ ------------------------------

ASR_TED_PATCH = REPO / "patches" / "s3prl" / "0009-downstream-asr-ted.patch"


def _patch_maker():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_asr_ted_patch", REPO / "patches" / "make_asr_ted_patch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_asr_ted_patch_is_generated_from_the_module(tmp_path, monkeypatch):
    maker = _patch_maker()
    assert maker.PATCH == ASR_TED_PATCH and ASR_TED_PATCH.read_text() == maker.render()
    proc = py([REPO / "patches" / "make_asr_ted_patch.py", "--check"], dict(os.environ))
    assert proc.returncode == 0 and "up to date" in proc.stdout, proc.stderr
    # a change to the module makes the committed patch stale
    changed = tmp_path / "expert.py"
    changed.write_text(maker.FILES[2][0].read_text() + "# changed\n")
    monkeypatch.setattr(maker, "FILES", [*maker.FILES[:2], (changed, maker.FILES[2][1]), *maker.FILES[3:]])
    assert maker.main(["--check"]) == 1


def test_asr_ted_patch_on_a_copy_of_the_installed_s3prl(tmp_path):
    """0009 alone goes onto the s3prl this environment runs (its package copied, untouched)."""
    import s3prl

    root = tmp_path / "installed"
    shutil.copytree(Path(s3prl.__file__).parent, root / "s3prl", ignore=shutil.ignore_patterns("__pycache__"))
    assert not (root / "s3prl" / "downstream" / "asr_ted").exists()
    proc = subprocess.run(["patch", "-p1", "--dry-run", "-i", str(ASR_TED_PATCH)], cwd=root,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("checking file s3prl/downstream/asr_ted/") == 4
    if shutil.which("git"):
        proc = subprocess.run(["git", "apply", "--check", str(ASR_TED_PATCH)], cwd=root, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert not (root / "s3prl" / "downstream" / "asr_ted").exists()  # dry runs


FIND_ASR_TED = """
import importlib, sys
import s3prl.downstream
expert = importlib.import_module("s3prl.downstream.asr_ted.expert")
assert not any(type(f).__name__ == "_PostImportFinder" for f in sys.meta_path), "hook is on"
print("expert", expert.__file__)
print("paths", len(s3prl.downstream.__path__))
print("vocabulary", len(expert.vocabulary().symbols))
"""


def test_patched_source_finds_asr_ted(patched, tmp_path, tiny_hubert):
    """Hook off: -d asr_ted comes from the patched tree; the plain runner trains it with the
    patch's config.yaml (the runner's default -c, run from the patched s3prl folder)."""
    from tests.test_recipes_paper import make_tedlium

    for source, path in _patch_maker().FILES:  # the module's own files, byte for byte
        assert (patched / path).read_bytes() == source.read_bytes(), path
    env = dict(patched_env(patched), OMP_NUM_THREADS="1")
    proc = py(["-c", FIND_ASR_TED], env)
    assert_ok(proc)
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["expert"] == str(patched / "s3prl" / "downstream" / "asr_ted" / "expert.py")
    assert lines["paths"] == "1"  # s3prl's own downstream folder only: no hook added ours
    assert lines["vocabulary"] == "32"

    ted = make_tedlium(tmp_path / "TEDLIUM_release-3")
    exp = tmp_path / "exp"
    small = ",,".join([f"config.downstream_expert.datarc.ted_root='{ted}'",
                       "config.runner.total_steps=2", "config.runner.save_step=2", "config.runner.eval_step=2",
                       "config.runner.log_step=1", "config.downstream_expert.datarc.batch_size=2",
                       "config.downstream_expert.datarc.train_batch_size=2",
                       "config.downstream_expert.datarc.num_workers=0"])
    proc = subprocess.run([sys.executable, "-m", "s3prl.run_downstream", "-m", "train", "-u", "hubert_local", "-k",
                           str(tiny_hubert), "-d", "asr_ted", "--device", "cpu", "-p", str(exp), "-o", small],
                          cwd=patched / "s3prl", env=env, capture_output=True, text=True, timeout=600)
    assert_ok(proc)
    states = files.load(exp / "states-2.ckpt", allowed=files.RUNNER_ALLOWED)
    assert states["Args"].downstream == "asr_ted"
    assert states["Args"].config == "./downstream/asr_ted/config.yaml"  # the patch's config.yaml
    assert states["Config"]["downstream_expert"]["modelrc"]["RNNs"]["dim"] == [256, 256, 256]
    assert re.search(r"^dev wer: [0-9.]+$", proc.stdout, re.M), proc.stdout[-2000:]  # dev scored at step 2
    assert not list(patched.rglob("__pycache__")), "runs must leave the patched tree as applied"
