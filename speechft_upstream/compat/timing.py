"""Where a runner process spends its time, written to ``EXP/timing_<mode>.json`` (s3prl logs none).

All figures are CPU seconds of the process (``time.process_time``), which do not grow when
other users load the machine; ``wall`` is the wall time of the same span for comparison.

- ``startup``: the process (or, in a multi-run process, the run) up to ``train()`` /
  ``evaluate()``: imports, building upstream, featurizer and head, reading the data sets;
- ``upstream_forward_train`` / ``_evaluate``: the upstream's forward passes during training
  steps and during evaluation passes (the featurizer's weighted sum counts with the head);
- ``train_other``: the rest of ``train()`` (featurizer, head forward/backward, optimizer, data
  loading, checkpoints); ``evaluate_other`` likewise for the evaluation passes;
- ``steps``: optimizer steps taken; ``evaluations``: evaluation passes.

Cheap enough to be always on: two clock reads per upstream forward.
"""

import json
import os
import time

_MARK = "_speechft_timing"
_RUN = {}  # when the current run began, for processes that run several (recipe_tool.py runner)


def mark_run_start():
    """Called before each run of a multi-run process: the next run's start-up counts from here."""
    if "cpu" not in _RUN:
        _RUN["first_wall"] = _process_age()
    _RUN["cpu"], _RUN["wall"] = time.process_time(), time.perf_counter()


def _startup():
    if "cpu" in _RUN:
        first = _RUN.pop("first_wall", None)
        wall = time.perf_counter() - _RUN["wall"] + (first or 0.0)
        cpu = time.process_time() - (0.0 if first is not None else _RUN["cpu"])
        return cpu, wall
    return time.process_time(), _process_age()


def _process_age():
    """Wall seconds since this process started (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/stat") as handle:
            start_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def install(Runner, overall):
    if getattr(Runner.train, _MARK, False):
        return
    train, evaluate, get_upstream = Runner.train, Runner.evaluate, Runner._get_upstream

    def clock(self):
        return self.__dict__.setdefault(_MARK, {"phase": "train", "forward": {"train": 0.0, "evaluate": 0.0},
                                                "train": 0.0, "evaluate": 0.0, "evaluations": 0})

    def _get_upstream(self):
        entry = get_upstream(self)
        times = clock(self)
        started = {}

        def before(module, args):
            started["t"] = time.process_time()

        def after(module, args, output):
            times["forward"][times["phase"]] += time.process_time() - started.pop("t", time.process_time())

        entry.model.register_forward_pre_hook(before)
        entry.model.register_forward_hook(after)
        return entry

    def timed_train(self, *args, **kwargs):
        times = clock(self)
        times["startup"] = _startup()
        t0, w0 = time.process_time(), time.perf_counter()
        try:
            return train(self, *args, **kwargs)
        finally:
            times["train"] = time.process_time() - t0 - times["evaluate"]
            times["wall"] = time.perf_counter() - w0
            bar = overall.get("bar")
            times["steps"] = int(bar.n) if bar is not None else None
            _write(self, times)

    def timed_evaluate(self, *args, **kwargs):
        times = clock(self)
        if "startup" not in times:  # `-m evaluate`: the process only evaluates
            times["startup"] = _startup()
        phase, times["phase"] = times["phase"], "evaluate"
        t0, w0 = time.process_time(), time.perf_counter()
        try:
            return evaluate(self, *args, **kwargs)
        finally:
            times["evaluate"] += time.process_time() - t0
            times["evaluations"] += 1
            times["phase"] = phase
            if self.args.mode == "evaluate":
                times["wall"] = time.perf_counter() - w0
                _write(self, times)

    for fn in (timed_train, timed_evaluate, _get_upstream):
        setattr(fn, _MARK, True)
    Runner.train, Runner.evaluate, Runner._get_upstream = timed_train, timed_evaluate, _get_upstream


def _write(runner, times):
    forward = times["forward"]
    cpu, wall = times.get("startup") or (None, None)
    r = lambda v: None if v is None else round(v, 3)  # noqa: E731
    record = {"mode": runner.args.mode, "unit": "cpu seconds", "startup": r(cpu), "startup_wall": r(wall),
              "upstream_forward_train": r(forward["train"]), "upstream_forward_evaluate": r(forward["evaluate"]),
              "train_other": r(max(0.0, times["train"] - forward["train"])) if runner.args.mode == "train" else 0.0,
              "evaluate_other": r(max(0.0, times["evaluate"] - forward["evaluate"])),
              "evaluations": times["evaluations"], "steps": times.get("steps"), "wall": r(times.get("wall"))}
    cache = runner.upstream.model
    if hasattr(cache, "hits"):  # compat/feature_cache.py
        record["feature_cache"] = {"hits": cache.hits, "misses": cache.misses, "mb": round(cache.used / 2 ** 20, 1)}
    path = os.path.join(runner.args.expdir, f"timing_{runner.args.mode}.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    os.replace(tmp, path)
