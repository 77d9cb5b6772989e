"""The parts of a search that are Ray Tune classes: the ASHA scheduler that records what it
stopped, and the progress callback (with its counts line, which the runner's closing line uses too).

Kept out of :mod:`hvsearch.search.runner` so that importing the runner does not import Ray Tune
(about a second): a run imports this module while its local Ray instance starts, and a study
whose budget is spent never imports it.
"""
from __future__ import annotations

import time

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from hvsearch.search import study as st
from hvsearch.space import human


class TellingASHA(ASHAScheduler):
    """ASHA that records which trials it stopped, so that the searcher tells the study PRUNED
    for them (and not COMPLETE, or interrupted)."""

    def __init__(self, stopped: set[str], **kwargs):
        super().__init__(**kwargs)
        self.stopped = stopped

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP:
            self.stopped.add(trial.trial_id)
        return decision


def counts_line(counts, running: int | None = None) -> str:
    c = {**counts, "running": running or 0}
    always = ("trained", "pruned") + (("running",) if running is not None else ())
    keys = ("trained", "pruned", "failed", "running", "skipped", "invalid", "duplicate", "interrupted")
    return ", ".join(f"{c.get(k, 0)} {k}" for k in keys if c.get(k, 0) or k in always)


class Progress(Callback):
    """One line per trial event: start, each epoch, the end and why; the study's counts and the
    best accuracy so far."""

    def __init__(self, searcher, epochs: int, say, on_start=None, search_alg=None):
        self.searcher, self.epochs, self.say = searcher, epochs, say
        self.search_alg = search_alg or searcher  # what Tune calls: the searcher or its limiter
        self.on_start = on_start  # called as each trial starts (the run's Ray processes recorded)
        self.started = 0
        self.train_time = 0.0
        self.first_start: float | None = None
        self.live: set[str] = set()
        self.ended: set[str] = set()

    def _label(self, trial) -> str:
        n = self.searcher.number(trial.trial_id)
        return f"trial {n}" if n is not None else trial.trial_id

    def _tail(self) -> str:
        best = self.searcher.best
        return f"  | {counts_line(self.searcher.counts, len(self.live))}" + (f" | best {best[0]:.2f}% (trial {best[1]})" if best else "")

    def on_step_begin(self, iteration, trials, **info):
        # every trial known as soon as Tune has it: one whose worker dies before it starts
        # (killed for memory, say) still has its error files read (failures.error_reason)
        for t in trials:
            self.searcher.tune_trials.setdefault(t.trial_id, t)

    def on_step_end(self, iteration, trials, **info):
        # Tune ends a trial whose re-used worker could not be reset (reset_config timed out)
        # with status ERROR but tells neither the searcher nor the callbacks: tell them here, so
        # the study records it (and re-queues it) instead of leaving it RUNNING.
        for t in trials:
            if (t.status == "ERROR" and t.trial_id in self.searcher._ot_trials
                    and t.trial_id not in self.searcher._completed_trials):
                self.searcher.tune_trials.setdefault(t.trial_id, t)
                self.search_alg.on_trial_complete(t.trial_id, None, error=True)
                self._end(t)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.searcher.tune_trials[trial.trial_id] = trial
        self.live.add(trial.trial_id)
        self.started += 1
        if self.on_start is not None:
            self.on_start()
        if self.first_start is None:
            self.first_start = time.monotonic()
        cfg = trial.config
        mixers = "/".join(s["mixer"]["type"] for s in cfg["arch"]["stages"])
        latency = f", {cfg['latency_ms']:.3g} ms" if cfg.get("latency_ms") is not None else ""
        self.say(f"{self._label(trial)} start: {mixers}, {human(cfg['n_params'])} params, "
                 f"{human(cfg['flops'])} FLOPs{latency}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.say(f"{self._label(trial)} epoch {result.get('epoch')}/{self.epochs}: val top-1 "
                 f"{result.get('val_top1', float('nan')):.2f}%, loss {result.get('train_loss', float('nan')):.3f}"
                 + self._tail())

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial)

    def _end(self, trial) -> None:
        if trial.trial_id in self.ended:
            return
        self.ended.add(trial.trial_id)
        self.live.discard(trial.trial_id)
        n = self.searcher.number(trial.trial_id)
        if n is None:
            return
        t = self.searcher._ot_study.get_trials(deepcopy=False)[n]
        self.train_time += float(t.user_attrs.get(st.ATTR_TRAIN_TIME, 0.0))
        status = t.user_attrs.get(st.ATTR_STATUS, "?")
        why = t.user_attrs.get(st.ATTR_REASON)
        ep = t.user_attrs.get(st.ATTR_EPOCHS)
        self.say(f"{self._label(trial)} {status}" + (f" after epoch {ep}" if ep else "")
                 + (f": {why}" if why else "") + self._tail())
