"""The paper's learning-rate schedule, by name in s3prl configs.

    scheduler:
      name: stable_finetuning_schedule   # optional: warmup_ratio (0.1), hold_ratio (0.4)

Linear warm-up over the first 10% of the steps, hold for 40%, then linear decay to 0 over the
last 50%. s3prl resolves ``name`` with ``eval(f"get_{name}")`` inside ``s3prl.schedulers``, so
compat puts ``get_stable_finetuning_schedule`` into that module's namespace.
"""

from torch.optim.lr_scheduler import LambdaLR

from speechft_upstream.errors import SpeechFTError


def stable_finetuning_factor(step, total_steps, warmup_ratio=0.1, hold_ratio=0.4):
    """The LR multiplier after ``step`` scheduler steps (0 <= step <= total_steps)."""
    warmup = int(warmup_ratio * total_steps)
    hold_end = warmup + int(hold_ratio * total_steps)
    if step < warmup:
        return step / warmup
    if step < hold_end:
        return 1.0
    decay = total_steps - hold_end
    return max(0.0, (total_steps - step) / decay) if decay > 0 else 0.0


def get_stable_finetuning_schedule(optimizer, num_training_steps, warmup_ratio=0.1, hold_ratio=0.4, last_epoch=-1):
    if not 0 <= warmup_ratio <= 1 or not 0 <= hold_ratio <= 1 or warmup_ratio + hold_ratio > 1:
        raise SpeechFTError(
            f"stable_finetuning_schedule: need 0 <= warmup_ratio, hold_ratio and their sum <= 1, "
            f"got {warmup_ratio}, {hold_ratio}"
        )

    def factor(step):
        return stable_finetuning_factor(step, num_training_steps, warmup_ratio, hold_ratio)

    return LambdaLR(optimizer, factor, last_epoch)
