"""``STUDY:best`` and ``STUDY:<trial number>``: an architecture out of a search's storage.

Used wherever an architecture is named (``hvsearch scale --seed my_study:best``). The study's
storage is ``studies/<STUDY>.db`` unless ``HVSEARCH_STORAGE`` gives an RDB URL or a SQLite path.
"""
from __future__ import annotations

import json
import os

from hvsearch.arch import ModelSpec
from hvsearch.errors import StudyError
from hvsearch.search import study as st


def load_study_arch(ref: str, storage: str | None = None, studies_dir: str = "studies") -> ModelSpec:
    name, _, which = ref.rpartition(":")
    if not name or not which:
        raise StudyError(f"{ref!r} must be STUDY:best or STUDY:<trial number>")
    url = st.storage_url(name, storage or os.environ.get("HVSEARCH_STORAGE"), studies_dir, create=False)
    study = st.load_study(name, url)
    if which == "best":
        from hvsearch.search.results import best_trial

        trial = best_trial(study)
        if trial is None:
            raise StudyError(f"study {name!r} has no trained trial yet, so it has no best architecture")
    else:
        try:
            number = int(which)
        except ValueError:
            raise StudyError(f"{ref!r}: after the colon comes `best` or a trial number, got {which!r}") from None
        trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
        if not trials:
            raise StudyError(f"study {name!r} has no trial {number} (it has {len(study.trials)} trials)")
        trial = trials[0]
    if st.ATTR_ARCH not in trial.user_attrs:
        reason = trial.user_attrs.get(st.ATTR_REASON, "no architecture was recorded")
        raise StudyError(f"trial {trial.number} of study {name!r} carries no valid architecture: {reason}")
    spec = ModelSpec.from_dict(json.loads(trial.user_attrs[st.ATTR_ARCH]))
    return spec.replace(name=f"{name}-t{trial.number}")
