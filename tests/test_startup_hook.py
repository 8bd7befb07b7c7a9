"""The startup hook: free until s3prl / torchaudio is imported, then the fixes are in place."""

import sys

from tests.conftest import assert_ok, run_py


def test_plain_start_imports_nothing_heavy():
    code = ("import sys; from speechft_upstream import autoload; "
            "print(any(isinstance(f, autoload._PostImportFinder) for f in sys.meta_path)); "
            "print(sorted(m for m in ('torch', 'numpy', 's3prl', 'torchaudio', 'yaml') if m in sys.modules))")
    proc = run_py(["-c", code])
    assert_ok(proc)
    assert proc.stdout.split("\n")[:2] == ["True", "[]"]


def test_hook_runs_from_pth_at_startup():
    # Without importing speechft at all: the .pth in site-packages must have put the finder in.
    proc = run_py(["-c", "import sys; print([type(f).__name__ for f in sys.meta_path][0])"])
    assert_ok(proc)
    assert proc.stdout.strip() == "_PostImportFinder"


def test_opt_out_variable():
    proc = run_py(["-c", "import sys; print([type(f).__name__ for f in sys.meta_path])"],
                  env={"SPEECHFT_NO_AUTOLOAD": "1"})
    assert_ok(proc)
    assert "_PostImportFinder" not in proc.stdout


def test_torchaudio_imports_with_restored_names():
    code = ("import torchaudio, torchaudio.sox_effects as fx; "
            "torchaudio.set_audio_backend('sox_io'); "
            "from torchaudio.sox_effects import apply_effects_file; "
            "print(torchaudio.load.__module__, fx.__name__)")
    proc = run_py(["-c", code])
    assert_ok(proc)
    assert "speechft_upstream.compat.audio_io" in proc.stdout


def test_huggingface_hub_names_for_runner():
    proc = run_py(["-c", "from huggingface_hub import HfApi, HfFolder, Repository; print('ok')"])
    assert_ok(proc)


def test_runner_checkpoint_namespace_allowed(tmp_path):
    code = (f"import argparse, torch, s3prl; p = r'{tmp_path}/c.ckpt'; "
            "torch.save({'Args': argparse.Namespace(a=1)}, p); "
            "print(torch.load(p, weights_only=True)['Args'].a)")
    proc = run_py(["-c", code])
    assert_ok(proc)
    assert proc.stdout.strip() == "1"
    # Only Namespace was allowed: safe loading still refuses anything else.
    code = (f"import datetime, torch, s3prl; p = r'{tmp_path}/d.ckpt'; "
            "torch.save({'when': datetime.date(2020, 1, 1)}, p); torch.load(p, weights_only=True)")
    proc = run_py(["-c", code])
    assert proc.returncode != 0 and "datetime" in proc.stderr


def test_in_process_hook_is_active():
    import s3prl.hub

    assert "s3prl.hub" in sys.modules and hasattr(s3prl.hub, "speechft_hubert")
