"""The report's plots: the default experiment's α sweep and the per-task bars."""

from speechft_upstream.benchmark.report_rows import MAIN, head_label
from speechft_upstream.benchmark.report_tables import LABELS
from speechft_upstream.benchmark.sizes import BASELINE, NO_DEV, TASKS, UNIT


def plot_sweep(path, context, sweep, rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(context["tasks"])
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(3.2 * (len(tasks) + 1), 3.4))
    fbank = {r["task"]: r for r in rows if r["encoder"] == BASELINE}
    for ax, task in zip(axes, tasks):
        mine = [r for r in sweep if r["task"] == task and r["metric"] == TASKS[task][3]]
        xs = [r["alpha"] for r in mine]
        ax.plot(xs, [float("nan") if r["dev"] is None else r["dev"] for r in mine], marker="o", label="dev")
        ax.plot(xs, [r["test"] for r in mine], marker="s", label="test")
        ax.axhline(fbank[task]["value"], color="grey", ls="--", lw=1, label="FBANK test")
        ax.axvline(context["theta_hat"]["alpha"], color="red", ls=":", lw=1)
        ax.set_title(head_label(task) + (" (no dev)" if task in NO_DEV else ""))
        ax.set_xlabel("α (0 = θ0, 1 = θ′)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    alphas = [0.0, *context["by_alpha"]]
    dev = [context["dev_scores"]["theta0"]["score"], *context["by_alpha"].values()]
    ax.plot(alphas, dev, marker="o", color="black")
    ax.axvline(context["theta_hat"]["alpha"], color="red", ls=":", lw=1, label="chosen α")
    ax.set_title("dev score (selects α)")
    ax.set_xlabel("α")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("Each task against α: θ̂_α = (1−α)·θ0 + α·θ′ (fine-tuned on PR)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def plot_bars(path, rows, context):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(context["tasks"])
    by = {(r["encoder"], r["task"]): r["value"] for r in rows}
    fig, axes = plt.subplots(1, len(tasks), figsize=(2.6 * len(tasks), 3.2))
    colours = {"fbank": "#bbbbbb", "theta0": "#4c72b0", "theta_prime": "#dd8452", "theta_hat": "#55a868"}
    for ax, task in zip(axes, tasks):
        values = [by[(e, task)] for e in MAIN]
        bars = ax.bar(range(len(MAIN)), values, color=[colours[e] for e in MAIN])
        ax.set_xticks(range(len(MAIN)), [LABELS[e] for e in MAIN])
        ax.set_title(head_label(task), fontsize=10)
        ax.bar_label(bars, fmt="%.3f" if UNIT[task] != "%" else "%.1f", fontsize=7)
        ax.margins(y=0.15)
    fig.suptitle(f"Test split: FBANK, θ0, θ′ (PR fine-tuned), θ̂ (α = {context['theta_hat']['alpha']:g})",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
