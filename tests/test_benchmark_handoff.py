"""Stage 5 takes over the background evaluations it has not started (stage_evaluations.Handoff): the
background claims each run first and starts none after stop(); stage 5 skips the one running.

The runs are replaced by a recorder (the real runs are covered by tests/test_benchmark.py), so
only the scheduling is under test here: which runs start where, and that none runs twice.
"""

import threading

import pytest

from speechft_upstream.benchmark import stage_evaluations as stages


@pytest.fixture
def recorder(monkeypatch):
    started, gate = [], threading.Event()

    def fake_eval(stage, task, data, encoder, budget, device, slots=None):
        started.append((encoder["name"], task, threading.current_thread().name))
        if encoder["name"] == "fbank" and task == "PR":
            gate.wait(10)  # the background's first run is still going when stage 5 starts
        return {"test": 0.5, "dev": 0.5, "seeds": {"1": {"test": 0.5, "dev": 0.5}}, "_seconds": 0.0}

    monkeypatch.setattr(stages, "_eval_one", fake_eval)
    return started, gate


def test_stage5_takes_over_what_the_background_has_not_started(tmp_path, recorder):
    started, gate = recorder
    corpus = {"dir": str(tmp_path / "corpus")}
    fbank, theta0 = {"name": "fbank", "key": "f"}, {"name": "theta0", "path": "x.pt", "key": "t"}
    handoff = stages.Handoff()
    tasks = ["PR", "KS", "IC"]
    out = {}
    bg = threading.Thread(target=lambda: out.update(
        zip(("results", "failures"), stages.stage_evaluate(tmp_path, "smoke", corpus, [fbank, theta0], "cpu", 1,
                                                            tasks, True, None, handoff))), name="background")
    bg.start()
    while not started:  # the background is inside its first run
        threading.Event().wait(0.01)
    running = handoff.stop()
    assert running == {("fbank", "PR")}
    assert not handoff.claim(("fbank", "KS"))
    gate.set()
    front = stages.stage_evaluate(tmp_path, "smoke", corpus, [fbank, theta0], "cpu", 2, tasks, skip=running)
    bg.join(10)
    assert not bg.is_alive()
    names = [(e, t) for e, t, _ in started]
    assert len(names) == len(set(names)) == 6  # every run once
    assert [(e, t) for e, t, who in started if who == "background"] == [("fbank", "PR")]
    assert set(front) == {(e, t) for e in ("fbank", "theta0") for t in tasks} - {("fbank", "PR")}
    assert set(out["results"]) == {("fbank", "PR")} and out["failures"] == []


def test_a_stopped_handoff_starts_nothing(tmp_path, recorder):
    started, _ = recorder
    handoff = stages.Handoff()
    assert handoff.claim(("fbank", "PR")) and handoff.stop() == {("fbank", "PR")}
    results, failures = stages.stage_evaluate(tmp_path, "smoke", {"dir": str(tmp_path)}, [{"name": "theta0", "key": "t"}],
                                              "cpu", 1, ["PR"], True, None, handoff)
    assert results == {} and failures == [] and started == []
