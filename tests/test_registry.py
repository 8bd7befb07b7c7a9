"""`speechft register`: named checkpoints become s3prl upstream names."""

import json

import pytest

from speechft_upstream import cli
from tests.conftest import assert_ok, run_py, runner, train_args


def speechft(*args):
    return run_py(["-m", "speechft_upstream.cli", *args])


def test_register_list_remove(tmp_path, tiny_dir, isolated_registry, capsys):
    assert cli.main(["register", "my_merged", str(tiny_dir / "wavlm.pt")]) == 0
    entries = json.loads(isolated_registry.read_text())
    assert entries == {"my_merged": {"path": str(tiny_dir / "wavlm.pt"), "family": "wavlm"}}
    assert cli.main(["register", "--list"]) == 0
    assert "my_merged\twavlm\t" in capsys.readouterr().out

    # A fresh interpreter sees the name on s3prl.hub and builds it with no ckpt argument.
    proc = run_py(["-c", "import s3prl.hub as h; m = h.my_merged(); print(type(m).__name__)"])
    assert_ok(proc)
    assert "SpeechFTWavlmExpert" in proc.stdout

    assert cli.main(["register", "--remove", "my_merged"]) == 0
    assert json.loads(isolated_registry.read_text()) == {}


def test_registered_name_in_unmodified_runner(tmp_path, tiny_hubert):
    assert cli.main(["register", "theta_hat", str(tiny_hubert)]) == 0
    exp = tmp_path / "exp"
    assert_ok(runner(train_args("theta_hat", exp, extra=["-o", "config.runner.total_steps=3"])))
    assert (exp / "states-3.ckpt").is_file()


@pytest.mark.parametrize("name, message", [
    ("hubert", "already an s3prl or speechft upstream name"),
    ("wav2vec2_local", "already an s3prl or speechft upstream name"),
    ("speechft_hubert", "already an s3prl or speechft upstream name"),
    ("not-an-identifier", "not a valid upstream name"),
])
def test_refused_names(name, message, tiny_hubert, isolated_registry):
    proc = speechft("register", name, tiny_hubert)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]  # one line
    assert message in proc.stderr
    assert not isolated_registry.exists()


def test_refused_files(tmp_path, isolated_registry):
    proc = speechft("register", "x", tmp_path / "nope.pt")
    assert proc.returncode == 1 and "nope.pt: no such file" in proc.stderr
    (tmp_path / "foreign.pt").write_text("hello")
    proc = speechft("register", "x", tmp_path / "foreign.pt")
    assert proc.returncode == 1 and "foreign.pt: not a PyTorch checkpoint" in proc.stderr
    assert not isolated_registry.exists()


def test_existing_name_needs_force(tiny_dir, capsys):
    assert cli.main(["register", "m", str(tiny_dir / "hubert.pt")]) == 0
    assert cli.main(["register", "m", str(tiny_dir / "wavlm.pt")]) == 1
    assert "use --force" in capsys.readouterr().err
    assert cli.main(["register", "m", str(tiny_dir / "wavlm.pt"), "--force"]) == 0


def test_broken_registry_warns_but_s3prl_still_works(isolated_registry):
    isolated_registry.write_text("{not json")
    proc = run_py(["-c", "import s3prl.hub as h; print(callable(h.speechft_hubert))"])
    assert_ok(proc)
    assert "True" in proc.stdout
    assert "unreadable speechft registry" in proc.stderr
