"""Early stopping for s3prl 0.4.18's runner, which trains for ``total_steps`` whatever dev says.

Set ``config.runner.speechft_patience: N`` (the recipes' ``--patience N``): after each
evaluation during training, a run whose evaluation wrote no new ``*-best.ckpt`` (the expert's
own "dev improved" signal, the one that picks the checkpoint that is tested) counts one more
stale evaluation; N in a row end the run at that step. ``total_steps`` stays the cap
(``--max-steps``). The run ends the runner's own way: its progress bar's total is lowered to the
current step, so the loop exits at its next check and the logger is closed as usual.
``EXP/early_stopping.json`` records the best and last step.

Multi-process runs evaluate on the leader only, and stopping the leader alone would leave the
followers waiting: there the setting is ignored with a warning.
"""

import json
import os
import sys

_MARK = "_speechft_early_stop"


def install(runner_module, Runner, overall):
    evaluate = Runner.evaluate
    if getattr(evaluate, _MARK, False):
        return

    def evaluate_and_watch(self, split=None, logger=None, global_step=0, *args, **kwargs):
        names = evaluate(self, split, logger, global_step, *args, **kwargs)
        patience = self.config.get("runner", {}).get("speechft_patience")
        if not patience or global_step == 0 or split is None:  # off, or `-m evaluate`
            return names
        eval_splits = self.config["runner"].get("eval_dataloaders") or [split]
        state = self.__dict__.setdefault(_MARK, {"best_step": None, "stale": 0, "evaluations": 0,
                                                 "seen": set()})
        state["improved"] = state.get("improved", False) or any(str(n).endswith("-best.ckpt") for n in names or [])
        state["seen"].add(split)
        if set(eval_splits) - state["seen"]:  # the other splits of this evaluation still to come
            return names
        state["seen"] = set()
        state["evaluations"] += 1
        if state.pop("improved"):
            state["best_step"], state["stale"] = global_step, 0
        else:
            state["stale"] += 1
        total = self.config["runner"]["total_steps"]
        stop = state["stale"] >= int(patience) and global_step < total
        if stop and runner_module.is_initialized() and runner_module.get_world_size() > 1:
            if not state.get("warned"):
                print("[speechft] early stopping is ignored in multi-process runs", file=sys.stderr)
                state["warned"] = True
            stop = False
        record = {"patience": int(patience), "max_steps": total, "evaluations": state["evaluations"],
                  "best_step": state["best_step"], "last_step": global_step, "stopped_early": bool(stop)}
        _write(os.path.join(self.args.expdir, "early_stopping.json"), record)
        if stop:
            print(f"[speechft] early stop at step {global_step}: {state['stale']} evaluation(s) without a "
                  f"better {', '.join(eval_splits)} (best at step {state['best_step']})", file=sys.stderr)
            bar = overall.get("bar")
            if bar is not None:
                bar.total = global_step  # the runner's loop ends after this step's bookkeeping
        return names

    setattr(evaluate_and_watch, _MARK, True)
    Runner.evaluate = evaluate_and_watch


def _write(path, record):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
    os.replace(tmp, path)
