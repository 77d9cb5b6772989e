"""``hvsearch dashboard STUDY``: optuna-dashboard on the study's storage, on 127.0.0.1.

The same as ``optuna-dashboard sqlite:///studies/STUDY.db --host 127.0.0.1 --port 8080``. Each
trial shows its params (the sampled knobs), its learning curve (intermediate values, val top-1
per epoch) and its user attrs (architecture, arch id, params, FLOPs, status, failure reason).
"""
from __future__ import annotations

import errno
import warnings
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

from hvsearch.errors import HVSearchError, MissingDependencyError
from hvsearch.search import study as st


def serve(study: str, storage: str | None = None, studies_dir: str | Path = "studies",
          host: str = "127.0.0.1", port: int = 8080, access_log: bool = False) -> None:
    """Serve until Ctrl-C; one line per HTTP request on stderr only with ``access_log``."""
    url = st.storage_url(study, storage, studies_dir, create=False)
    loaded = st.load_study(study, url)  # fails clearly when the study is not there
    try:
        from optuna_dashboard import wsgi
    except ImportError:
        raise MissingDependencyError("optuna-dashboard is not installed: pip install optuna-dashboard==0.21.0") from None
    study_id = st.open_storage(url).get_study_id_from_name(loaded.study_name)
    # The parameter-importance panel warns "Some regimes for parameter ... have less than 2
    # trials" for every knob that exists only under one mixer choice: in a conditional space
    # that is the normal state of a young study, and the panel shows its estimate anyway.
    warnings.filterwarnings("ignore", message="Some regimes for parameter", category=UserWarning)
    app = wsgi(st.open_storage(url))
    handler = WSGIRequestHandler if access_log else _QuietHandler
    try:  # bound before the address is printed: a line says where it is served only if it is
        server = make_server(host, port, app, handler_class=handler)
    except OSError as e:
        why = "is in use (another dashboard?); choose another with --port" if e.errno == errno.EADDRINUSE else \
            f"cannot be served ({e.strerror or e})"
        raise HVSearchError(f"dashboard: {host}:{port} {why}") from None
    print(f"optuna-dashboard for study {study!r} ({len(loaded.trials)} trials) on {st.masked(url)}\n"
          f"  http://{host}:{server.server_port}/dashboard/studies/{study_id}   (Ctrl-C stops it)", flush=True)
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


class _QuietHandler(WSGIRequestHandler):
    """wsgiref's handler without its access log (a line per request, several per page view)."""

    def log_request(self, *args, **kwargs) -> None:
        pass
