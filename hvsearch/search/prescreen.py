"""The pre-screen (``search.prescreen``): per trial slot, a pool of admitted candidates scored with
a zero-cost score in the driver; the best ``ceil(keep · pool)`` are queued for the next slots and
the rest told PRUNED (status ``skipped``, with score, rank and reason) without training.

A mixin of :class:`~hvsearch.search.searcher.StudySearcher`: it uses the searcher's draws
(``_draw``), its Optuna trials (``_ot_trials``, ``_ot_study``), the slots left, the seen
architectures, the counts and the progress printer (``say``).
"""
from __future__ import annotations

import math

from hvsearch.search import study as st


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


class PrescreenMixin:
    def _fill_queue(self, trial_id: str) -> None:
        """Draw a pool of admitted candidates, score each with the zero-cost score, queue the best
        ``ceil(keep · pool)`` (best first; no more than the trial slots left) and record the rest
        PRUNED with status ``skipped``, their score and rank."""
        from optuna.trial import TrialState

        pre = self.prescreen
        pool: list[tuple[str, dict]] = []
        for i in range(pre.pool):
            key = f"{trial_id}~pool{i}"
            config = self._draw(key)
            if config is None:
                break
            if st.ATTR_REQUEUED_FROM in self._ot_trials[key].user_attrs:
                # a trial a stopped run left training (or kept and never started): Optuna hands
                # the re-queued ones out first; it passed the pre-screen then and resumes from its
                # checkpoint now, unscored, before this pool's draws
                self._queue.insert(0, (key, config))
                if not pool:
                    return
                continue
            pool.append((key, config))
        if not pool:
            return
        scored = []
        for key, config in pool:
            value, error = self._prescreen_score(config)
            scored.append((value, key, config, error))
        # best first; ties keep the draw order (stable sort)
        order = sorted(range(len(scored)), key=lambda i: -scored[i][0])
        # ceil(keep · pool) of a full pool (Prescreen.kept), of a short one at the space's end,
        # and never more than the trial slots left
        kept = min(max(1, math.ceil(pre.keep * len(pool) - 1e-9)), max(self.slots_left, 1))
        numbers = [self._ot_trials[key].number for _, key, _, _ in scored]
        for rank, i in enumerate(order, start=1):
            value, key, config, error = scored[i]
            ot_trial = self._ot_trials[key]
            ot_trial.set_user_attr(st.ATTR_PRESCREEN, {
                "score": pre.score, "value": value if math.isfinite(value) else str(value),
                "rank": rank, "pool": numbers, "kept": kept})
            if rank <= kept:
                self._queue.append((key, config))
                continue
            why = (f"pre-screen: {pre.score} {_fmt(value)} ranks {rank} of {len(pool)} in its pool "
                   f"(trials {', '.join(map(str, numbers))}); the best {kept} train")
            if error:
                why += f" (scoring failed: {error})"
            ot_trial.set_user_attr(st.ATTR_STATUS, "skipped")
            ot_trial.set_user_attr(st.ATTR_REASON, why)
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
            del self._ot_trials[key]
            self._seen.pop(config["arch_id"], None)  # not trained: a later pool may draw it again
            self.counts["skipped"] += 1
        if self.say is not None:
            ranked = [f"trial {numbers[i]} {_fmt(scored[i][0])}" for i in order]
            self.say(f"pre-screen ({pre.score}): {', '.join(ranked[:kept])} kept; "
                     f"{', '.join(ranked[kept:]) or 'none'} skipped")

    def _take(self, trial_id: str) -> dict:
        key, config = self._queue.pop(0)
        self._ot_trials[trial_id] = self._ot_trials.pop(key)
        return config

    def _prescreen_score(self, config: dict) -> tuple[float, str | None]:
        """The pre-screen score of one admitted candidate, and the error if scoring failed (then
        -inf: ranked last)."""
        from hvsearch.arch import ModelSpec
        from hvsearch.zerocost import data_batch, score

        pre = self.prescreen
        spec = ModelSpec.from_dict(config["arch"])
        if self._batch is None or self._batch[0] != spec.resolution:
            self._batch = (spec.resolution, data_batch(self.space.data, spec.resolution, pre.batch_size))
        x, y, num_classes = self._batch[1]
        try:
            return score(spec, pre.score, (x, y), num_classes=num_classes, resolution=spec.resolution), None
        except Exception as e:  # an overflow, a model the score cannot handle: ranked last, recorded
            return -math.inf, f"{type(e).__name__}: {e}"

    def release_queue(self, reason: str) -> list[int]:
        """Candidates the pre-screen kept that never started (the search stopped first): marked
        interrupted and re-queued, so that a continued run trains them."""
        out = []
        while self._queue:
            key, _ = self._queue.pop(0)
            ot_trial = self._ot_trials.pop(key)
            st.mark_interrupted(self._ot_study, self.opened.storage, ot_trial.number, reason)
            self._seen.pop(ot_trial.user_attrs.get(st.ATTR_ARCH_ID), None)
            out.append(ot_trial.number)
        return out
