"""Ray Tune's OptunaSearch, with the study kept true.

The stock integration (``ray.tune.search.optuna.OptunaSearch``) has two gaps (measured, see the
README): a trial ASHA stops early is stored COMPLETE, and the last result never becomes an
intermediate value (Tune hands it to ``on_trial_complete`` only). :class:`StudySearcher` closes
both there: it records the final result at its epoch, then tells the study PRUNED when ASHA
stopped the trial before its last epoch. It also

* samples the space define-by-run (``space=`` is a function of the Optuna trial: a knob is only
  drawn when the part owning it is drawn), then validates, counts the cost and checks the
  constraints in :meth:`suggest`; a draw that breaks a rule or a constraint, or repeats an
  architecture already trained, is recorded FAIL with the reason and never reaches a worker;
* with ``search.prescreen``, draws a pool of admitted candidates per trial slot, scores each
  with a zero-cost score in the driver, queues the best ``ceil(keep · pool)`` for the next slots
  and tells the study PRUNED (status ``skipped``, score, rank and reason) for the rest
  (:mod:`hvsearch.search.prescreen`);
* stores the learning curve with the storage's own setter, so multi-objective studies (where
  ``Trial.report`` is not allowed) get curves too, with step = epoch (Tune's
  ``training_iteration`` restarts at 1 when a re-queued trial resumes from its checkpoint, whose
  earlier epochs arrive with its first result);
* records the failure reason of a trial that raised or whose worker died
  (:mod:`hvsearch.search.failures`), and marks trials stopped for any other reason (Ctrl-C, a
  dying cluster, a worker Tune could not start) interrupted and re-queues them.

The Optuna storage is the truth; ``save``/``restore`` (Tune's experiment checkpoint of the
searcher) are not used: ``hvsearch run`` resumes from the study, never with ``Tuner.restore``.
"""
from __future__ import annotations

import math
import shutil
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from hvsearch.errors import HVSearchError, SpecError
from hvsearch.search import study as st
from hvsearch.search.failures import NOT_STARTED, error_reason
from hvsearch.search.prescreen import PrescreenMixin
from hvsearch.space import Space
from hvsearch.train.config import METRIC_KEYS  # a trial's history holds what proxy training reports

MAX_REJECTS_IN_A_ROW = 200
#: rejected draws in a row after which the next ones are drawn at random (until one is admitted).
#: A model-based sampler can keep proposing what is rejected: a duplicate is FAIL (invisible to
#: TPE), NSGA-II ignores PRUNED invalid draws, and before invalid draws were told PRUNED
#: multi-objective TPE proposed a Hire-MLP region too large for stage 2 of spaces/fashion.yaml two
#: hundred times in a row and the search stopped (measured; README, the accuracy × latency run).
RANDOM_AFTER_REJECTS = 5


class StudySearcher(PrescreenMixin, OptunaSearch):
    def __init__(self, space: Space, opened: st.Opened, sampler, cost_fn: Callable, epochs: int,
                 checkpoint_root: Path | None = None, deadline: float | None = None,
                 slots: int | None = None, say: Callable[[str], None] | None = None,
                 latency_fn: Callable | None = None, on_idle: Callable[[], None] | None = None):
        self.space = space
        # called (once) when a slot frees and the budget has nothing left to start: the driver
        # may use that slot's core for the work it will do at the end (see runner._fit)
        self.on_idle = on_idle
        self.latency_fn = latency_fn  # spec -> hvsearch.latency.Latency, or None: not measured
        self._latencies: dict[str, Any] = {}  # arch id -> its Latency, measured once per run
        self.say = say  # progress lines (the runner's), or None
        self.prescreen = space.search.prescreen
        self.slots_left = slots if slots is not None else space.search.trials  # trials still to start
        self._queue: list[tuple[str, dict]] = []  # (_ot_trials key, config) the pre-screen kept
        self._batch = None  # (resolution, (images, labels, classes)) the pre-screen scores on
        self.epochs = epochs
        # spec -> (params, flops, resolution), counted from the spec (a part without a formula:
        # on its model); raises on a spec that cannot be counted (a map too small for a layer)
        self.cost_fn = cost_fn
        self.checkpoint_root = checkpoint_root
        self.deadline = deadline  # time.monotonic() after which no new trial starts
        self.opened = opened
        self.counts: Counter[str] = Counter(t.user_attrs.get(st.ATTR_STATUS)
                                            for t in opened.study.get_trials(deepcopy=False)
                                            if t.user_attrs.get(st.ATTR_STATUS) not in (None, "running"))
        self.best: tuple[float, int] | None = _best_so_far(opened.study)
        self.asha_stopped: set[str] = set()  # filled by the scheduler (see tune_parts.TellingASHA)
        self.tune_trials: dict[str, Any] = {}  # Tune trial objects (see tune_parts.Progress)
        self.exhausted: str | None = None
        self.finished = False  # suggest() said FINISHED: Tune stops when this has been said
        self._numbers: dict[str, int] = {}
        self._tids: dict[str, int] = {}
        self._reported: dict[str, set[int]] = {}
        self._history: dict[str, list[dict]] = {}
        # the driver's own seconds per trial: drawing (rejected draws included), validating,
        # counting, measuring latency, and recording its results; stored at the end
        self._driver_s: Counter[str] = Counter()
        self._random = None  # the RandomSampler of draws after rejections in a row (see _draw)
        self._seen = self._trained_archs(opened.study)
        objectives = space.search.objectives
        metric = [st.RESULT_KEYS[o] for o in objectives]
        mode = ["max" if m == "maximize" else "min" for m in st.directions(space)]
        super().__init__(space=self._define, metric=metric if len(metric) > 1 else metric[0],
                         mode=mode if len(mode) > 1 else mode[0], sampler=sampler,
                         study_name=opened.study.study_name, storage=opened.storage)

    # ---- sampling -----------------------------------------------------------------------------
    def _suggest_from_define_by_run_func(self, func, ot_trial):
        # Ray warns when the define-by-run function takes over a second, assuming the driver is
        # doing a trial's work. Here that time is Optuna's sampler (TPE over a conditional space,
        # slower on a busy machine): the advice does not apply and there is nothing to act on.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument took",
                                    category=UserWarning)
            return super()._suggest_from_define_by_run_func(func, ot_trial)

    def _live(self) -> bool:
        """Whether a trial this searcher handed out may still report: not completed here, and
        not ended in Tune's eyes (a trial Tune drops without telling the searcher is not live)."""
        for tid in self._numbers:
            if tid in self._completed_trials:
                continue
            trial = self.tune_trials.get(tid)
            if trial is None or trial.status not in ("ERROR", "TERMINATED"):
                return True
        return False

    def _define(self, trial) -> dict[str, Any]:
        """Define-by-run: draw one architecture (its knobs become the trial's params)."""
        return {"arch": self.space.arch.suggest(trial)}

    def suggest(self, trial_id: str) -> dict | None:
        t0 = time.perf_counter()
        config = self._suggest(trial_id)
        if config == Searcher.FINISHED:
            self.finished = True  # the search ended itself (budget, time, space); see runner._fit
        elif config is not None:
            self._driver_s[trial_id] += time.perf_counter() - t0
        return config

    def _suggest(self, trial_id: str) -> dict | None:
        if self.slots_left <= 0:
            # The budget is handed out; while trials run, one may still die before its first
            # epoch (a worker Tune could not start) and give its slot back (_interrupt).
            live = self._live()
            if live and self.on_idle is not None:  # a slot is free while the last trials train
                idle, self.on_idle = self.on_idle, None
                try:
                    idle()
                except Exception as e:  # an optimisation: never worth the search
                    if self.say is not None:
                        self.say(f"note: preparing the results early failed ({type(e).__name__}: {e})")
            return None if live else Searcher.FINISHED
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.exhausted = self.exhausted or "time budget reached"
            return Searcher.FINISHED
        if self.prescreen is None:
            config = self._draw(trial_id)
        else:
            if not self._queue:
                self._fill_queue(trial_id)
            config = self._take(trial_id) if self._queue else None
        if config is None:
            return Searcher.FINISHED
        ot_trial = self._ot_trials[trial_id]
        self._numbers[trial_id] = ot_trial.number
        self._tids[trial_id] = st.trial_id(self._ot_study, self.opened.storage, ot_trial.number)
        self._reported[trial_id] = set()
        self.slots_left -= 1
        return config

    def _draw(self, key: str) -> dict | None:
        """Ask Optuna (under ``key`` in ``_ot_trials``) until a draw is admitted; None when the
        space seems to have nothing new left. After :data:`RANDOM_AFTER_REJECTS` rejections in a
        row the draws are random (the trial's user attr ``sampled_by`` says so)."""
        all_drawn = getattr(self._ot_study.sampler, "all_drawn", None)  # a grid of candidates
        for attempt in range(MAX_REJECTS_IN_A_ROW):
            if all_drawn is not None and all_drawn(self._ot_study):
                self.exhausted = "every candidate was drawn; those not trained were rejected (see their reasons)"
                return None
            if attempt < RANDOM_AFTER_REJECTS:
                config = super().suggest(key)
            else:
                if attempt == RANDOM_AFTER_REJECTS and self.say is not None:
                    self.say(f"the {self.space.search.sampler} sampler's last {RANDOM_AFTER_REJECTS} draws were "
                             "rejected: drawing at random until one is admitted")
                config = self._random_suggest(key)
            admitted = self._admit(self._ot_trials[key], config["arch"])
            if admitted is not None:
                return admitted
            del self._ot_trials[key]  # rejected: the next pass asks a new Optuna trial
        self.exhausted = (f"the last {MAX_REJECTS_IN_A_ROW} draws were all invalid or already trained; "
                          "the space (or its constraints) leaves nothing new to train")
        return None

    def _admit(self, ot_trial, arch: dict) -> dict | None:
        """Validate, de-duplicate and cost one draw; None (after recording why) if rejected."""
        from hvsearch.arch import ModelSpec

        try:
            spec = ModelSpec.from_dict(arch, validate=True)
        except SpecError as e:
            return self._reject(ot_trial, "invalid", str(e))
        arch_id = spec.arch_id
        ot_trial.set_user_attr(st.ATTR_ARCH, st.arch_json(spec))
        ot_trial.set_user_attr(st.ATTR_ARCH_ID, arch_id)
        if arch_id in self._seen:
            return self._reject(ot_trial, "duplicate", f"architecture {arch_id} is (being) trained "
                                f"as trial {self._seen[arch_id]}")
        try:
            params, flops, res = self.cost_fn(spec)
        except Exception as e:  # the cost cannot be counted: record why, keep searching
            return self._reject(ot_trial, "invalid", f"counting its cost failed: {type(e).__name__}: {e}")
        ot_trial.set_user_attr(st.ATTR_PARAMS, params)
        ot_trial.set_user_attr(st.ATTR_FLOPS, flops)
        ot_trial.set_user_attr(st.ATTR_COST_RES, res)
        broken = self.space.constraints.violations(params, flops)
        if broken:
            return self._reject(ot_trial, "invalid", f"{'; '.join(broken)} (at {res}x{res})")
        latency_ms = None
        if self.latency_fn is not None:  # measured before it trains, so the constraint can reject it
            try:  # a draw seen before in this run keeps its measurement (no re-timing while trials run)
                m = self._latencies.get(arch_id) or self.latency_fn(spec)
            except HVSearchError as e:
                return self._reject(ot_trial, "invalid", f"its latency could not be measured: {e}")
            self._latencies[arch_id] = m
            latency_ms = m.median_ms
            ot_trial.set_user_attr(st.ATTR_LATENCY, latency_ms)
            ot_trial.set_user_attr(st.ATTR_LATENCY_INFO, {
                "p90_ms": m.p90_ms, "flags": m.flags, "cached": m.cached, "device": m.device, "runtime": m.runtime,
                "batch": m.batch, "resolution": m.resolution, "threads": m.threads, "load_before": m.load_before,
                "others_cpu": m.others_cpu})
            broken = self.space.constraints.latency_violations(latency_ms)
            if broken:
                return self._reject(ot_trial, "invalid", f"{broken[0]} ({m.runtime} on {m.device}, batch {m.batch}, "
                                    f"{m.resolution} px, {m.threads} thread{'s' * (m.threads > 1)})")
        ot_trial.set_user_attr(st.ATTR_STATUS, "running")
        self._seen[arch_id] = ot_trial.number
        return {"optuna_trial": ot_trial.number, "arch_id": arch_id, "arch": spec.to_dict(),
                "n_params": params, "flops": flops, "latency_ms": latency_ms}

    def _random_suggest(self, key: str) -> dict:
        """One draw of the space by Optuna's RandomSampler (seeded from the search's seed and the
        study's size), recorded in the study like any other."""
        import optuna

        study = self._ot_study
        if self._random is None:
            self._random = optuna.samplers.RandomSampler(
                seed=None if self.space.search.seed is None
                else self.space.search.seed + len(study.get_trials(deepcopy=False)))
        model_based, study.sampler = study.sampler, self._random
        try:
            config = super().suggest(key)
        finally:
            study.sampler = model_based
        self._ot_trials[key].set_user_attr(st.ATTR_SAMPLED_BY, "random")
        return config

    def _reject(self, ot_trial, status: str, reason: str) -> None:
        from optuna.trial import TrialState

        ot_trial.set_user_attr(st.ATTR_STATUS, status)
        ot_trial.set_user_attr(st.ATTR_REASON, reason)
        # An invalid draw is told PRUNED (with no value): TPE counts such trials among the worst
        # and learns to avoid what broke the rule; a FAIL trial is invisible to it, and a sampler
        # that favours a broken combination would propose it again and again. A duplicate is
        # FAIL: its architecture was trained, it is not a bad region.
        self._ot_study.tell(ot_trial, state=TrialState.PRUNED if status == "invalid" else TrialState.FAIL)
        self.counts[status] += 1
        if self.say is not None:  # every draw's fate is a line, not only a counter
            self.say(f"trial {ot_trial.number} {status}, not trained: {reason}")
        return None

    @staticmethod
    def _trained_archs(study) -> dict[str, int]:
        """arch id -> trial number of every architecture this study trained (or is training)."""
        out = {}
        for t in study.get_trials(deepcopy=False):
            if t.user_attrs.get(st.ATTR_STATUS) in (*st.TRAINED_STATUSES, "running"):
                aid = t.user_attrs.get(st.ATTR_ARCH_ID)
                if aid:
                    out.setdefault(aid, t.number)
        return out

    # ---- results ------------------------------------------------------------------------------
    def _set_intermediate(self, trial_id: str, step: int, value: float) -> None:
        done = self._reported.setdefault(trial_id, set())
        if step in done:
            return
        self.opened.storage.set_trial_intermediate_value(self._tids[trial_id], step, float(value))
        done.add(step)

    def _record(self, trial_id: str, result: dict) -> None:
        """One epoch's result (and, for a trial resumed from its checkpoint, the epochs the
        checkpoint holds) into the curve and the history."""
        rows = [*(result.get("prior_history") or []), result]
        hist = self._history.setdefault(trial_id, [])
        known = {h["epoch"] for h in hist}
        added = False
        for res in rows:
            epoch = int(res.get("epoch", 0))
            if epoch < 1 or epoch in known:
                continue
            if st.METRIC in res:
                self._set_intermediate(trial_id, epoch, res[st.METRIC])
            hist.append({k: res[k] for k in METRIC_KEYS if k in res})
            known.add(epoch)
            added = True
        if added:
            hist.sort(key=lambda h: h["epoch"])
            ot_trial = self._ot_trials[trial_id]
            ot_trial.set_user_attr(st.ATTR_HISTORY, hist)
            ot_trial.set_user_attr(st.ATTR_EPOCHS, hist[-1]["epoch"])
            if "node_id" in result:
                ot_trial.set_user_attr(st.ATTR_NODE, result["node_id"])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials and trial_id not in self._completed_trials:
            t0 = time.perf_counter()
            self._record(trial_id, result)
            self._driver_s[trial_id] += time.perf_counter() - t0

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        from optuna.trial import TrialState

        if trial_id not in self._ot_trials or trial_id in self._completed_trials:
            return
        t0 = time.perf_counter()
        ot_trial = self._ot_trials[trial_id]
        if result:
            self._record(trial_id, result)  # gap 2: the last result only arrives here
            if "wall_time" in result:
                ot_trial.set_user_attr(st.ATTR_TRAIN_TIME, float(result["wall_time"]))
        trial = self.tune_trials.get(trial_id)
        if trial is not None:
            ot_trial.set_user_attr(st.ATTR_RAY_TRIAL, trial_id)
        # (the study's tell and this attribute's own write are not in it: two storage writes)
        ot_trial.set_user_attr(st.ATTR_DRIVER_TIME, self._driver_s[trial_id] + time.perf_counter() - t0)
        epoch = int(result.get("epoch", 0)) if result else 0
        if error:
            reason = error_reason(trial)
            if not result and NOT_STARTED in reason:
                # Tune's re-used worker was still finishing the trial before (its reset timed
                # out): this one never ran, so it is re-queued and retried in this run
                self._interrupt(trial_id, "Tune could not start it on a re-used worker (the previous "
                                "trial's thread did not stop in time)", retry=True)
            else:
                self._finish(trial_id, "failed", TrialState.FAIL, reason=reason)
        elif not result:
            self._interrupt(trial_id, "stopped before it reported an epoch", retry=True)
        elif epoch >= self.epochs:
            values = [result.get(st.RESULT_KEYS[o]) for o in self.space.search.objectives]
            bad = [v for v in values if v is None or not math.isfinite(float(v))]
            if bad:
                self._finish(trial_id, "failed", TrialState.FAIL,
                             reason=f"the final result is not a finite number: {values}")
            else:
                self._finish(trial_id, "trained", TrialState.COMPLETE, values=values)
        elif trial_id in self.asha_stopped:
            self._finish(trial_id, "pruned", TrialState.PRUNED)  # gap 1: stock says COMPLETE
        else:
            self._interrupt(trial_id, f"stopped after epoch {epoch} of {self.epochs} by the search "
                            "ending, not by the scheduler")

    def _finish(self, trial_id: str, status: str, state, values=None, reason: str | None = None) -> None:
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr(st.ATTR_STATUS, status)
        if reason:
            ot_trial.set_user_attr(st.ATTR_REASON, reason)
        self._ot_study.tell(ot_trial, values if values is None or len(values) > 1 else values[0],
                            state=state)
        self._completed_trials.add(trial_id)
        self.counts[status] += 1
        if status == "trained":
            top1 = float(values[0])
            if self.best is None or top1 > self.best[0]:
                self.best = (top1, ot_trial.number)
        self._drop_checkpoint(ot_trial)

    def _interrupt(self, trial_id: str, reason: str, retry: bool = False) -> None:
        """Mark the trial interrupted and re-queue its architecture; with ``retry`` (it never
        reported an epoch: Tune could not start it) its slot is given back, so that this run
        trains it, not only the next one."""
        ot_trial = self._ot_trials[trial_id]
        st.mark_interrupted(self._ot_study, self.opened.storage, ot_trial.number, reason)
        self._seen.pop(ot_trial.user_attrs.get(st.ATTR_ARCH_ID), None)
        self._completed_trials.add(trial_id)
        self.counts["interrupted"] += 1
        if retry:
            self.slots_left += 1

    def _drop_checkpoint(self, ot_trial) -> None:
        if self.checkpoint_root is None:
            return
        aid = ot_trial.user_attrs.get(st.ATTR_ARCH_ID)
        if aid:
            shutil.rmtree(self.checkpoint_root / aid, ignore_errors=True)

    def number(self, trial_id: str) -> int | None:
        return self._numbers.get(trial_id)

    def save(self, checkpoint_path: str) -> None:
        """Not used: the Optuna storage holds the search's state (see the module docstring)."""

    def restore(self, checkpoint_path: str) -> None:
        """Not used: see :meth:`save`."""


def _best_so_far(study) -> tuple[float, int] | None:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    if not done:
        return None
    top = max(done, key=lambda t: t.values[0])
    return (top.values[0], top.number)
