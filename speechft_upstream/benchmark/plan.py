"""Which experiments a benchmark run holds: the default run's and `--paper`'s (the paper's table).

An experiment produces θ′ (a fine-tuned encoder) in one of four ways, ``kind``:

- ``finetune``      stable fine-tuning of θ0 on ``task`` (stages.stage_finetune)
- ``baseline``      the paper's baselines on ``task`` with the same budget: L2 toward θ0, LoRA, an
                    early checkpoint (stage_baselines.stage_baseline, imported when needed)
- ``multi``         no training: θ0 + α·mean(τ) of the ``sources`` experiments' task vectors
- ``unsupervised``  continued pre-training on a second language (stage_unsupervised)

``merged`` experiments are swept over the size's α values (θ̂_α = θ0 + α·τ; α = 1 is θ′
itself), and their α is chosen on the dev score; the others are evaluated as they are (θ′ only).

Names: the default PR experiment keeps the names of the runs before plans existed (encoders
``theta_prime``, ``alpha<α>``; rows ``theta_prime``, ``theta_hat``), so an existing --work
folder is reused; every other experiment's encoders and rows carry its name
(``theta_prime_sid``, ``sid_alpha0.25``, ``theta_hat_sid``; ``theta_prime_multi`` is α = 1 of
the multi-task merge: the plain mean of the θ′s).
"""

import importlib
from dataclasses import dataclass, field

from speechft_upstream.errors import SpeechFTError

KINDS = ("finetune", "baseline", "multi", "unsupervised")
# the module each kind's θ′ comes from, where it is not stages.py
PRODUCERS = {"baseline": "speechft_upstream.benchmark.stage_baselines",
             "unsupervised": "speechft_upstream.benchmark.stage_unsupervised"}
PAPER_FINETUNE_TASKS = ("PR", "SID", "ER")  # the paper's fine-tuning tasks on the mini corpus
PAPER_BASELINES = ("l2", "lora", "early")   # stage_baselines.BASELINES
DEFAULT_BASELINE = "l2"
UNSUP = "unsup"  # the unsupervised experiment's name (its rows: theta_prime_unsup_<language>)


@dataclass(frozen=True)
class Experiment:
    name: str                  # "pr" (the default one), "sid", "er", "multi", "l2", "lora", "early", "unsup"
    kind: str
    task: str = None           # fine-tuning task (finetune, baseline); None for multi / unsupervised
    merged: bool = True        # α sweep and dev choice, or evaluated as is
    sources: tuple = ()        # multi: the finetune experiments whose task vectors are averaged
    primary: bool = False      # the default experiment: the legacy names and stage folders
    encoder_name: str = None   # θ′'s encoder and row name, where the kind's module names it
    extra_task: str = None     # unsupervised: the second language's PR task (only its encoders)
    options: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def prime(self):
        """θ′'s encoder and row name."""
        if self.encoder_name:
            return self.encoder_name
        return "theta_prime" if self.primary else f"theta_prime_{self.name}"

    @property
    def hat(self):
        """θ̂'s row name (merged experiments only)."""
        if not self.merged:
            return None
        if self.primary:
            return "theta_hat"
        return "theta_hat_" + self.prime[len("theta_prime_"):]

    @property
    def merge_folder(self):
        return "merge" if self.primary else f"merge_{self.name}"

    def alpha_encoder(self, alpha):
        """The evaluation encoder (and evaluate/<name>/ folder) of θ̂_α; α = 1 is θ′."""
        if alpha == 1.0:
            return self.prime
        return f"alpha{alpha:g}" if self.primary else f"{self.name}_alpha{alpha:g}"

    def label(self):
        what = {"finetune": f"stable fine-tuning on {self.task}", "baseline": f"baseline {self.name} on {self.task}",
                "multi": "multi-task merge of " + ", ".join(self.sources),
                "unsupervised": "unsupervised continued pre-training"}[self.kind]
        return f"{self.prime}: {what}"


def default_plan(finetune_task="PR", with_baseline=True):
    """./run.sh: one fine-tuning task with its α sweep, and (``with_baseline``; not at the quick
    size, see sizes.py) one baseline on the same task."""
    plan = [Experiment("pr" if finetune_task == "PR" else finetune_task.lower(), "finetune", finetune_task,
                       primary=True)]
    return plan + [baseline(DEFAULT_BASELINE, finetune_task)] if with_baseline else plan


def paper_plan(finetune_task="PR", language=None):
    """--paper: the paper's experiments. θ′ on each of PR, SID, ER (and ``finetune_task``, first,
    when it is another, e.g. ASR_TED with --data-root), each with its own α; the multi-task
    merge of PR, SID and ER; the three baselines on ``finetune_task``; the unsupervised one."""
    plan = default_plan(finetune_task)[:1]
    for task in PAPER_FINETUNE_TASKS:
        if task != finetune_task:
            plan.append(Experiment(task.lower(), "finetune", task))
    names = {e.task: e.name for e in plan if e.kind == "finetune"}
    plan.append(Experiment("multi", "multi", sources=tuple(names[t] for t in PAPER_FINETUNE_TASKS)))
    plan += [baseline(kind, finetune_task) for kind in PAPER_BASELINES]
    plan.append(unsupervised())
    return plan


def baseline(kind, task="PR"):
    """A baseline's entry; its encoder name is stage_baselines.ENCODER_NAMES[kind] (the same
    pattern, checked when the module is there)."""
    return Experiment(kind, "baseline", task, merged=False, encoder_name=f"theta_prime_{kind}")


def unsupervised():
    """The unsupervised entry. Its θ′ is merged back (α sweep); α is chosen on the dev score over
    the English tasks and the second language's PR, each task weighted equally (pipeline)."""
    return Experiment(UNSUP, "unsupervised", merged=True)


def producer(kind):
    """The module of a kind's θ′, imported now; a clear error when this checkout lacks it."""
    module = PRODUCERS.get(kind)
    if module is None:
        return None
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        path = module.replace(".", "/") + ".py"
        raise SpeechFTError(f"the {kind} experiment needs {path}, which this checkout does not have") from None


def resolve(plan, skip_missing=False):
    """The plan with the names the producer modules give (baselines, the unsupervised language),
    every producer imported up front. ``skip_missing``: the tests' way to run a plan on a checkout
    without a producer module (its entries dropped, with a line saying so); never the CLI's."""
    out, skipped = [], []
    for entry in plan:
        if entry.kind not in KINDS:
            raise SpeechFTError(f"plan entry {entry.name}: unknown kind {entry.kind!r} (one of {', '.join(KINDS)})")
        try:
            module = producer(entry.kind)
        except SpeechFTError:
            if not skip_missing:
                raise
            skipped.append(entry.name)
            continue
        if entry.kind == "baseline":
            if entry.name not in module.BASELINES:
                raise SpeechFTError(f"baseline {entry.name!r}: stage_baselines offers {', '.join(module.BASELINES)}")
            entry = _with(entry, encoder_name=module.ENCODER_NAMES[entry.name])
        elif entry.kind == "unsupervised":
            entry = _with(entry, encoder_name=module.ENCODER_NAME, extra_task=module.PR_TASK,
                          options={"language": module.LANGUAGE})
        out.append(entry)
    names = {e.name for e in out}
    for entry in out:
        missing = [s for s in entry.sources if s not in names]
        if missing:
            if skip_missing:
                raise SpeechFTError(f"multi experiment {entry.name}: its sources {', '.join(missing)} were skipped")
            raise SpeechFTError(f"multi experiment {entry.name}: no experiment named {', '.join(missing)}")
    if len(names) != len(out) or len({e.prime for e in out}) != len(out):
        raise SpeechFTError("the plan names an experiment twice")
    return out, skipped


def _with(entry, **changes):
    from dataclasses import replace

    return replace(entry, **changes)


def evaluation_count(plan, tasks, alphas, seeds, no_head=()):
    """(evaluations, runs): encoder × task evaluations and their runs (one per seed; QbE's one)."""
    encoders = 2  # FBANK, θ0
    extra = 0
    for entry in plan:
        n = len(alphas) if entry.merged else 1
        encoders += n
        if entry.extra_task:  # the second language's PR: FBANK, θ0 and this experiment's encoders
            extra += 2 + n
    evaluations = encoders * len(tasks) + extra
    runs = sum(encoders * (1 if t in no_head else len(seeds)) for t in tasks) + extra * len(seeds)
    return evaluations, runs
