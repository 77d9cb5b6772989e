"""``hvsearch dashboard STUDY``: optuna-dashboard on the study's storage, on 127.0.0.1.

The same as ``optuna-dashboard sqlite:///studies/STUDY.db --host 127.0.0.1 --port 8080``. Each
trial shows its params (the sampled knobs), its learning curve (intermediate values, val top-1
per epoch) and its user attrs (architecture, arch id, params, FLOPs, status, failure reason).
"""
from __future__ import annotations

from pathlib import Path

from hvsearch.errors import MissingDependencyError
from hvsearch.search import study as st


def serve(study: str, storage: str | None = None, studies_dir: str | Path = "studies",
          host: str = "127.0.0.1", port: int = 8080) -> None:
    url = st.storage_url(study, storage, studies_dir, create=False)
    loaded = st.load_study(study, url)  # fails clearly when the study is not there
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise MissingDependencyError("optuna-dashboard is not installed: pip install optuna-dashboard==0.21.0") from None
    study_id = st.open_storage(url).get_study_id_from_name(loaded.study_name)
    print(f"optuna-dashboard for study {study!r} ({len(loaded.trials)} trials) on {url}\n"
          f"  http://{host}:{port}/dashboard/studies/{study_id}   (Ctrl-C stops it)", flush=True)
    run_server(st.open_storage(url), host=host, port=port)
