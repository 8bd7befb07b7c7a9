"""Fixes to s3prl 0.4.18's downstream runner (``s3prl/downstream/runner.py``), applied in place.

- Stable fine-tuning needs the runner's step budget: after ``_get_upstream`` builds the
  upstream, a speechft expert is told ``total_steps``, ``gradient_accumulate_steps`` and the
  step being resumed from.
- DDP on CPU: the runner passes ``device_ids=[local_rank]``, which torch refuses for CPU modules.
- DDP followers never stop: only the leader reaches ``pbar.update(1)`` (non-leaders ``continue``
  before it), so ranks > 0 loop until the leader exits and their next all-reduce fails. A
  follower's progress bar is advanced at each optimizer step instead (the runner calls
  ``optimizer.zero_grad()`` exactly once per step).
- Evaluation runs on the leader alone, yet through the DDP wrappers, whose forward starts a
  buffer broadcast that no other rank joins; the leader evaluates the unwrapped modules.
- Early stopping (speechft's, s3prl has none): with ``config.runner.speechft_patience: N`` the
  run ends once N evaluations in a row brought no new ``*-best.ckpt``; ``total_steps`` stays
  the cap. See ``early_stop.py``.
- Frozen-upstream feature cache (``feature_cache.py``, ``runner.speechft_feature_cache: MB``).
- Timing (``timing.py``): start-up, upstream forward and the rest, to EXP/timing_<mode>.json.
"""

_MARK = "_speechft"


def install(runner_module):
    Runner = runner_module.Runner
    if getattr(Runner._get_upstream, _MARK, False):
        return
    _attach_stable_schedule(Runner)
    from speechft_upstream.compat import feature_cache

    feature_cache.install(Runner)  # before timing, so that timing sees the cached forward
    ddp_class = runner_module.DDP
    _cpu_aware_ddp(runner_module)
    overall = _followers_count_steps(runner_module, Runner)
    _evaluate_unwrapped(Runner, ddp_class)
    from speechft_upstream.compat import early_stop

    early_stop.install(runner_module, Runner, overall)
    from speechft_upstream.compat import timing

    timing.install(Runner, overall)


def _attach_stable_schedule(Runner):
    build_upstream = Runner._get_upstream

    def _get_upstream(self):
        from speechft_upstream.finetune.stable import attach_to_runner

        entry = build_upstream(self)
        attach_to_runner(entry, self.config, self.init_ckpt)
        return entry

    setattr(_get_upstream, _MARK, True)
    Runner._get_upstream = _get_upstream


def _cpu_aware_ddp(runner_module):
    DDP = runner_module.DDP

    def cpu_aware_ddp(module, device_ids=None, **kwargs):
        if all(p.device.type == "cpu" for p in module.parameters()):
            device_ids = None
        return DDP(module, device_ids=device_ids, **kwargs)

    runner_module.DDP = cpu_aware_ddp


def _followers_count_steps(runner_module, Runner):
    tqdm = runner_module.tqdm
    overall = {}  # the 'overall' bar of the current train() call (followers count steps on it)

    class RunnerTqdm(tqdm):  # a subclass: the runner also calls tqdm.write
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if kwargs.get("desc") == "overall":
                overall["bar"] = self

    runner_module.tqdm = RunnerTqdm
    get_optimizer = Runner._get_optimizer

    def _get_optimizer(self, model_params):
        optimizer = get_optimizer(self, model_params)
        if runner_module.is_leader_process():
            return optimizer
        zero_grad = optimizer.zero_grad

        def zero_grad_and_count(*args, **kwargs):
            zero_grad(*args, **kwargs)
            if "bar" in overall:
                overall["bar"].update(1)

        optimizer.zero_grad = zero_grad_and_count
        return optimizer

    Runner._get_optimizer = _get_optimizer
    return overall


def _evaluate_unwrapped(Runner, ddp_class):
    evaluate = Runner.evaluate

    def evaluate_unwrapped(self, *args, **kwargs):
        wrapped = [(entry, entry.model) for entry in self.all_entries if isinstance(entry.model, ddp_class)]
        for entry, model in wrapped:
            entry.model = model.module
        try:
            return evaluate(self, *args, **kwargs)
        finally:
            for entry, model in wrapped:
                entry.model = model

    Runner.evaluate = evaluate_unwrapped
