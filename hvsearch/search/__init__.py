"""The search: an Optuna sampler driving Ray Tune over a space, the study as the truth.

* :mod:`.study` — the Optuna storage, the trial record (user attrs), resume bookkeeping;
* :mod:`.searcher` — OptunaSearch with the study kept true (states, curves, reasons);
* :mod:`.trainable` — what a trial runs in a Ray worker (proxy training);
* :mod:`.runner` — the Tuner, ASHA, resources, progress: ``run_search``;
* :mod:`.results` — trials.csv, best.yaml, the Pareto table and plot, the leaderboard;
* :mod:`.check` — sampling a space without training (``hvsearch check``);
* :mod:`.dashboard` — optuna-dashboard on a study.

Importing this package imports none of them: Ray, Optuna, torch and optuna-dashboard load with
the module that needs them.
"""
