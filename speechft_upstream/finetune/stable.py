"""Stable fine-tuning (Speech-FT step 1) inside the upstream, so the stock runner with -f does it.

- The CNN feature extractor never trains: its parameters get ``requires_grad=False`` when the
  expert is built, before s3prl's runner wraps it in DDP (flipping the flag later is unsafe).
- For the first ⌊β·T⌋ optimizer steps the encoder runs under ``torch.no_grad()``: only the
  featurizer and the task head learn. Afterwards encoder and head train together.

The step count comes from s3prl's runner (``attach_to_runner``): T is ``runner.total_steps``,
the starting step is the ``Step`` of the checkpoint being resumed, and every
``gradient_accumulate_steps`` training forwards are one optimizer step. Outside the runner the
budget is ``total_steps`` in the ``-g`` settings or an explicit ``expert.set_step_budget(T)``;
with no budget at all the upstream trains like the stock expert (encoder learns from the first
step), so it can be dropped into anyone's own training loop. Nothing is added to the expert's
``state_dict``, so runner checkpoints keep stock s3prl's keys.
"""

import math

from speechft_upstream.errors import SpeechFTError

DEFAULT_BETA = 0.1


def read_beta(settings, source="-g settings"):
    beta = settings.get("beta", DEFAULT_BETA)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 <= beta < 1:
        raise SpeechFTError(f"{source}: beta must be a number in [0, 1), got {beta!r}")
    return float(beta)


def cnn_of(expert):
    """The convolutional feature extractor of a speechft expert, or None (DeCoAR 2.0 has none)."""
    return getattr(getattr(expert, "model", None), "feature_extractor", None)


class StableSchedule:
    """Decides, per training forward, whether the encoder may learn yet."""

    def __init__(self, beta):
        self.beta = beta
        self.total_steps = None
        self.accumulate = 1
        self.forwards = 0  # training forwards seen since start (or resume)
        self.start_step = 0

    def configure(self, total_steps, accumulate=1, start_step=0):
        if not isinstance(total_steps, int) or total_steps <= 0:
            raise SpeechFTError(f"stable fine-tuning: total_steps must be a positive integer, got {total_steps!r}")
        if not isinstance(accumulate, int) or accumulate <= 0:
            raise SpeechFTError(f"stable fine-tuning: gradient_accumulate_steps must be a positive integer, got {accumulate!r}")
        self.total_steps = total_steps
        self.accumulate = accumulate
        self.start_step = int(start_step or 0)
        self.forwards = 0

    @property
    def head_only_steps(self):
        return math.floor(self.beta * self.total_steps)

    @property
    def step(self):
        """The optimizer step the current forward belongs to (1-based, like the runner's)."""
        return self.start_step + self.forwards // self.accumulate + 1

    def next_forward_is_head_only(self):
        # No budget: behave as the stock expert (someone's own loop that never set one).
        if self.beta == 0 or self.total_steps is None:
            return False
        head_only = self.step <= self.head_only_steps
        self.forwards += 1
        return head_only


def read_total_steps(settings, source="-g settings"):
    total = settings.get("total_steps")
    if total is not None and (isinstance(total, bool) or not isinstance(total, int) or total <= 0):
        raise SpeechFTError(f"{source}: total_steps must be a positive integer, got {total!r}")
    return total


def attach_to_runner(entry, config, init_ckpt):
    """Give a speechft upstream built by s3prl's Runner its step budget (called from compat)."""
    expert = getattr(entry.model, "module", entry.model)  # unwrap DDP
    schedule = getattr(expert, "speechft_schedule", None)
    if schedule is None or not entry.trainable:
        return
    runner_cfg = config.get("runner", {})
    total = runner_cfg.get("total_steps")
    schedule.configure(
        total_steps=expert.speechft_settings.get("total_steps", total),
        accumulate=runner_cfg.get("gradient_accumulate_steps", 1) or 1,
        start_step=(init_ckpt or {}).get("Step", 0),
    )
    penalty = getattr(expert, "speechft_l2", None)
    if penalty is not None:
        penalty.accumulate = schedule.accumulate
        print(f"[speechft] baseline: L2 toward θ0, lambda {penalty.lam}")
    lora = getattr(expert, "speechft_lora", None)
    if lora is not None:
        n = sum(p.numel() for p in expert.parameters() if p.requires_grad)
        print(f"[speechft] baseline: LoRA on {len(lora.layers)} layers, {n:,} trainable encoder parameters")
    if schedule.beta > 0:
        resumed = f"; resuming after step {schedule.start_step}" if schedule.start_step else ""
        print(f"[speechft] stable fine-tuning: CNN frozen; head only for steps 1-{schedule.head_only_steps} "
              f"(beta {schedule.beta} of {schedule.total_steps}), then encoder and head{resumed}")
