"""Training-free ("zero-cost") scores of an architecture at initialisation; see :mod:`.zero_cost`."""
from hvsearch._compat import patch_torchvision

patch_torchvision()

from hvsearch.zerocost.scores import (  # noqa: E402
    SCORES,
    Score,
    ScoreError,
    data_batch,
    get_score,
    random_batch,
    random_labels,
    register_score,
    score,
    score_names,
)

__all__ = ["SCORES", "Score", "ScoreError", "data_batch", "get_score", "random_batch", "random_labels",
           "register_score", "score", "score_names"]
