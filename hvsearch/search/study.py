"""The Optuna study: where a search's truth lives.

Storage: ``studies/<study>.db`` (SQLite) by default; any Optuna RDB URL works (PostgreSQL or MySQL
for a cluster, where several machines must reach it). Only the search driver writes to it; trial
workers never open it.

What every trial carries (user attrs, see the ``ATTR_*`` names):

* ``status`` — ``running``, then ``trained`` (COMPLETE), ``pruned`` (PRUNED: stopped by ASHA),
  ``failed`` (FAIL: raised, NaN, out of memory), ``invalid`` (PRUNED, no value: broke a rule or a
  constraint; never trained; PRUNED so that TPE counts it among the worst), ``duplicate`` (FAIL: an architecture already trained in this study; never
  trained again) or ``interrupted`` (FAIL: the search process stopped while it trained; re-queued).
* ``fail_reason`` — why, for every FAIL and every invalid draw.
* ``arch`` (the architecture as compact JSON, ``ModelSpec.from_json``), ``arch_id``, ``n_params``,
  ``flops`` (multiply-adds at ``cost_resolution``), ``history`` (per-epoch metrics),
  ``train_time_s``, ``epochs``, ``node_id`` (the Ray node that trained it).
* ``prescreen`` (with ``search.prescreen``): ``{score, value, rank, pool, kept}`` — the
  zero-cost score, its rank in the pool (trial numbers ``pool``) of which the best ``kept`` train.
* The learning curve (val top-1 per epoch) is the trial's intermediate values, step = epoch.

The study's user attrs hold the space file (``space_yaml``), its ``fingerprint`` (a re-run must
use the same architectures, training, data, objectives and constraints), the training recipe
every trial used (``train``, as the space's ``train:`` section with defaults filled in; for
calibrate's studies, which have no space file of their own, the only record of it) and ``driver`` (host,
pid and heartbeat of the process running it, so that two drivers never run one study).
"""
from __future__ import annotations

import inspect
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvsearch.errors import SpaceError, StudyError
from hvsearch.space import OBJECTIVES, Space
from hvsearch.space.schema import STUDY_NAME

ATTR_STATUS = "status"
ATTR_REASON = "fail_reason"
ATTR_ARCH = "arch"
ATTR_ARCH_ID = "arch_id"
ATTR_PARAMS = "n_params"
ATTR_FLOPS = "flops"
ATTR_COST_RES = "cost_resolution"
ATTR_LATENCY = "latency_ms"  # the median of the measurement (hvsearch.latency)
ATTR_LATENCY_INFO = "latency"  # its p90, flags and where it was measured
ATTR_HISTORY = "history"
ATTR_TRAIN_TIME = "train_time_s"
ATTR_DRIVER_TIME = "driver_time_s"  # the search driver's own seconds for this trial (see searcher)
ATTR_EPOCHS = "epochs"
ATTR_NODE = "node_id"
ATTR_RAY_TRIAL = "ray_trial_id"
ATTR_REQUEUED_FROM = "requeued_from"
ATTR_PRESCREEN = "prescreen"
ATTR_SAMPLED_BY = "sampled_by"  # "random" on a draw made at random after rejections in a row

TRAINED_STATUSES = ("trained", "pruned", "failed")  # the trial budget counts these
HEARTBEAT_S = 20.0
STALE_AFTER_S = 90.0

METRIC = "val_top1"  # what a trial reports and the study maximises (first objective)
RESULT_KEYS = {"accuracy": "val_top1", "flops": "flops", "params": "n_params", "latency": "latency_ms"}


def directions(space: Space) -> list[str]:
    return ["maximize" if OBJECTIVES[o] == "max" else "minimize" for o in space.search.objectives]


#: A study name: it becomes a file and folder name (``studies/NAME.db``, ``results/NAME/``), so
#: no separators, no leading dot, nothing a shell or a file system reads specially.


def check_study_name(name: str) -> str:
    """``name`` if it is a study name (:data:`STUDY_NAME`, no ``..``), else StudyError."""
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name) or ".." in name:
        raise StudyError(f"study name {name!r} is not a name: use letters, digits, `_`, `-` and `.` (up to 128, "
                         "starting with a letter or digit, no `..`): it becomes a file and a folder name")
    return name


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", url)


def inside(folder: str | Path, name: str) -> Path:
    """``folder/name`` resolved, refused (StudyError) unless it stays inside ``folder``."""
    base = Path(folder).resolve()
    path = (base / name).resolve()
    if path != base and base not in path.parents:
        raise StudyError(f"{name!r} would write outside {base}")
    return path


def storage_url(study: str, storage: str | None = None, studies_dir: str | Path = "studies",
                create: bool = True) -> str:
    """``storage`` as given (an RDB URL, or a path to a SQLite file), else
    ``sqlite:///<studies_dir>/<study>.db``. With ``create=False`` a SQLite file must exist. The
    study name is checked (:func:`check_study_name`) whichever storage holds it."""
    check_study_name(study)
    if storage and "://" in storage:
        return storage
    path = Path(storage).resolve() if storage else inside(studies_dir, f"{study}.db")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.is_file():
        raise StudyError(f"no study storage at {path}: run `hvsearch run SPACE --study {study}` first, "
                         "or pass --storage URL")
    return f"sqlite:///{path}"


def open_storage(url: str):
    """An Optuna RDB storage (OptunaSearch takes a storage object, not a URL)."""
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not path.parent.is_dir():
            raise StudyError(f"cannot open {masked(url)}: the folder {path.parent} does not exist")
        _check_sqlite(path)
        # Optuna creates its tables on first open; two drivers doing that at once on a new file
        # collide ("table ... already exists"): the first to hold the lock creates them.
        with _folder_lock(path.parent):
            return _rdb(url)
    return _rdb(url)


def _check_sqlite(path: Path) -> None:
    """Refuse a file that is not an SQLite database, or one whose tables are not Optuna's: hvsearch
    never adds its tables to someone else's database."""
    import sqlite3

    if not path.exists() or path.stat().st_size == 0:
        return
    if not path.is_file():
        raise StudyError(f"study storage {path} is not a file")
    with path.open("rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            raise StudyError(f"study storage {path} is not an SQLite database; give another --storage")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as e:
        raise StudyError(f"study storage {path} cannot be read as SQLite: {e}") from None
    if tables and "studies" not in tables:
        raise StudyError(f"study storage {path} is an SQLite database but not an Optuna storage (its tables: "
                         f"{', '.join(sorted(tables)[:8])}{', ...' if len(tables) > 8 else ''}); hvsearch does "
                         "not write into it: give another --storage")


class _folder_lock:
    """An exclusive ``flock`` on the folder ``path`` for the ``with`` block (no lock file left)."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.path, os.O_RDONLY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def _rdb(url: str):
    import optuna

    try:
        storage = optuna.storages.RDBStorage(url)
        if url.startswith("sqlite"):
            _quick_commits(storage.engine)
            with storage.engine.connect():  # the switch to WAL now, where its failure has a clear message
                pass
        return storage
    except ImportError:
        driver = {"postgresql": "psycopg2-binary", "mysql": "PyMySQL (and a mysql+pymysql:// URL)"}
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        raise StudyError(f"cannot open the study storage {masked(url)}: its database driver is not installed"
                         + (f"; pip install {driver[scheme]}" if scheme in driver else "")) from None
    except Exception as e:  # server unreachable, bad URL, bad credentials
        raise StudyError(f"cannot open the study storage {masked(url)}: {type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}") from None


def _quick_commits(engine) -> None:
    """SQLite in write-ahead-log mode with ``synchronous=NORMAL`` on every connection of the study's
    engine: a commit appends to the log without waiting for the disk, and no crash corrupts the
    database (a crash of the machine or a power cut may lose the last commits, one of the process
    loses nothing). Optuna writes every drawn knob, result and attribute in a transaction of its own
    (~40 per trial here): 0.87 ms each instead of 2.0 ms in SQLite's default rollback mode
    (``benchmarks/study_writes.py``, this project's 2-core machine, idle). The mode stays with the file (optuna-dashboard
    and later runs open it in WAL mode too); the log and its index (``NAME.db-wal``,
    ``NAME.db-shm``) sit beside it while it is open. Like SQLite itself, WAL needs the processes
    that open the file on one machine: a study file on a network file system is opened from one
    host at a time (or use a database server: ``--storage postgresql://...``)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    engine.dispose()  # connections Optuna opened to create its tables: reopened with the pragmas


def load_study(name: str, url: str):
    """An existing study, or StudyError listing the studies the storage holds."""
    import optuna

    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise StudyError(f"no study {name!r} in {masked(url)} (studies there: {', '.join(names) or 'none'})") from None


def make_sampler(space: Space, seed_offset: int = 0):
    """The Optuna sampler named by ``search.sampler`` with ``search.sampler_options``.

    A resumed study reseeds with ``seed + trials already in the study``: the same seed would
    replay the first run's proposals, all of them already trained."""
    import optuna

    if space.search.sampler == "grid":
        # an enumerated candidate set (`hvsearch scale --grid`): every candidate exactly once
        return _GridSampler(space.arch.grid(), seed=space.search.seed)
    cls = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
           "nsga2": optuna.samplers.NSGAIISampler}[space.search.sampler]
    options = dict(space.search.sampler_options)
    accepted = set(inspect.signature(cls).parameters)
    for key in options:
        if key not in accepted:
            from hvsearch.errors import did_you_mean

            raise SpaceError(f"{space.source}: search.sampler_options.{key}", f"is not an argument of Optuna's "
                             f"{cls.__name__}{did_you_mean(str(key), accepted - {'seed'})} "
                             f"({', '.join(sorted(accepted - {'seed'}))})", options[key])
    if space.search.seed is not None:
        options["seed"] = space.search.seed + seed_offset
    startup = None
    if cls is optuna.samplers.TPESampler:
        # TPE counts every COMPLETE or PRUNED trial towards its random start, invalid draws (told
        # PRUNED) included; the start is counted here, over trained architectures only
        startup = options.pop("n_startup_trials", 10)
        if not isinstance(startup, int) or isinstance(startup, bool) or startup < 0:
            raise SpaceError(f"{space.source}: search.sampler_options.n_startup_trials",
                             "must be an integer >= 0", startup)
        options["n_startup_trials"] = 0
    try:
        sampler = cls(**options)
    except (TypeError, ValueError) as e:
        raise SpaceError(f"{space.source}: search.sampler_options", f"are rejected by {cls.__name__}: {e}",
                         options) from None
    if startup is None:
        return sampler
    return _StartupOnTrained(sampler, startup, seed=options.get("seed"))


def trained_count(study) -> int:
    """Trials whose architecture trained (COMPLETE, or PRUNED by ASHA): not invalid draws (PRUNED
    without a value), duplicates or failures (FAIL)."""
    from optuna.trial import TrialState

    return sum(1 for t in study._storage.get_all_trials(study._study_id, deepcopy=False,
                                                         states=(TrialState.COMPLETE, TrialState.PRUNED))
               if t.user_attrs.get(ATTR_STATUS) in ("trained", "pruned"))


def _startup_sampler_cls():
    import optuna

    class StartupOnTrained(optuna.samplers.BaseSampler):
        """A model-based sampler whose random start lasts until ``n_startup`` architectures have
        trained. Optuna's TPE counts every COMPLETE or PRUNED trial, so in a space where a
        quarter of the draws break a rule it would model the space after fewer trained
        architectures than asked. The decision is taken once per trial (``before_trial``), so
        every parameter of a draw comes from the same sampler; the inner sampler still sees
        every trial once the start is over (invalid draws among the worst)."""

        def __init__(self, inner, n_startup: int, seed: int | None = None):
            self.inner, self.n_startup = inner, n_startup
            self._random = optuna.samplers.RandomSampler(seed=seed)
            self._starting: dict[int, bool] = {}  # trial id -> drawn at random

        def _is_random(self, trial) -> bool:
            return self._starting.get(trial._trial_id, False)

        def before_trial(self, study, trial) -> None:
            self._starting[trial._trial_id] = trained_count(study) < self.n_startup
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            if self._is_random(trial):
                return {}
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            if self._is_random(trial) or not search_space:
                return {}
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            sampler = self._random if self._is_random(trial) else self.inner
            return sampler.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self._starting.pop(trial._trial_id, None)
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()
            self._random.reseed_rng()

    return StartupOnTrained


def _StartupOnTrained(*args, **kwargs):
    return _startup_sampler_cls()(*args, **kwargs)


def _grid_sampler_cls():
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler without its end-of-grid ``study.stop()``, which only works
        inside ``study.optimize``; here the trial budget (one per grid point) ends the search."""

        def after_trial(self, study, trial, state, values) -> None:
            pass

        def all_drawn(self, study) -> bool:
            """Every grid point drawn (trained, training, or rejected) and no re-queued trial
            waiting: a further draw could only repeat one, so the search ends instead."""
            from optuna.trial import TrialState

            drawn = set()
            for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
                if t.state == TrialState.WAITING:
                    return False
                if "grid_id" in t.system_attrs and self._same_search_space(t.system_attrs["search_space"]):
                    drawn.add(t.system_attrs["grid_id"])
            return drawn >= set(range(self._n_min_trials))

    return GridSampler


def _GridSampler(*args, **kwargs):
    return _grid_sampler_cls()(*args, **kwargs)


# ---- opening a study for a run ------------------------------------------------------------------

@dataclass
class Opened:
    study: Any  # optuna.Study
    storage: Any  # optuna.storages.RDBStorage
    url: str
    created: bool
    requeued: list[int]  # numbers of the trials found running (marked interrupted, re-queued)
    done: int  # trials that count against the budget


def open_for_run(space: Space, name: str, url: str, resume: bool) -> Opened:
    """Create the study, or continue it: check it was made from the same space, take the driver
    lock, and mark trials left running by a dead driver as interrupted and re-queue them."""
    import optuna

    _hold_host_lock(url, name)  # before anything is read: creating and taking over are one step
    storage = open_storage(url)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    created = name not in existing
    if created and resume:
        raise StudyError(f"--resume: there is no study {name!r} in {masked(url)} to resume "
                         f"(studies there: {', '.join(sorted(existing)) or 'none'})")
    if created:
        study = optuna.create_study(study_name=name, storage=storage, directions=directions(space))
        study.set_user_attr("space_yaml", Path(space.source).read_text() if Path(space.source).is_file() else "")
        study.set_user_attr("space_source", space.source)
        study.set_user_attr("fingerprint", space.fingerprint())
        study.set_user_attr("train", space.train.to_dict())  # the recipe, readable in the dashboard
        study.set_user_attr("objectives", list(space.search.objectives))
        _name_objectives(study, space)
    else:
        study = optuna.load_study(study_name=name, storage=storage)
        check_same_space(study, space, name)
    _take_driver_lock(study, name)
    requeued = requeue_interrupted(study, storage, reason="the search process stopped while the trial was running")
    done = sum(1 for t in study.get_trials(deepcopy=False)
               if t.user_attrs.get(ATTR_STATUS) in TRAINED_STATUSES)
    return Opened(study, storage, url, created, requeued, done)


def _name_objectives(study, space: Space) -> None:
    """Let optuna-dashboard label the axes (val_top1, flops) instead of "Objective 0/1"."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([RESULT_KEYS[o] for o in space.search.objectives])


def check_same_space(study, space: Space, name: str) -> None:
    """StudyError unless ``study`` was made from ``space`` (its fingerprint and objectives)."""
    old = study.user_attrs.get("fingerprint")
    if old is not None and old != space.fingerprint():
        raise StudyError(
            f"study {name!r} was made from a different space (its architectures, training, data, "
            f"objectives or constraints differ from {space.source}); continue it with the same "
            f"file, or start a new study with --study NAME")
    if [d.name.lower() for d in study.directions] != directions(space):
        raise StudyError(f"study {name!r} optimises {study.user_attrs.get('objectives')}, not "
                         f"{list(space.search.objectives)}")


def requeue_interrupted(study, storage, reason: str) -> list[int]:
    """Mark every RUNNING trial interrupted (FAIL + reason); re-queue (enqueue its parameters
    again) those that were training. One caught while being drawn never trained: a new draw
    replaces it."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        training = t.user_attrs.get(ATTR_STATUS) == "running"
        mark_interrupted(study, storage, t.number,
                         reason if training else "the search process stopped while the trial was being drawn",
                         requeue=training)
        if training:
            out.append(t.number)
    return out


def trial_id(study, storage, number: int) -> int:
    """The storage's id of trial ``number`` (what the storage's setters take)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def mark_interrupted(study, storage, number: int, reason: str, requeue: bool = True) -> None:
    """FAIL trial ``number`` as interrupted and (by default) enqueue its parameters for the next ask."""
    from optuna.trial import TrialState

    tid = trial_id(study, storage, number)
    frozen = storage.get_trial(tid)
    storage.set_trial_user_attr(tid, ATTR_STATUS, "interrupted")
    storage.set_trial_user_attr(tid, ATTR_REASON, reason)
    storage.set_trial_state_values(tid, TrialState.FAIL)
    if requeue and frozen.params:
        study.enqueue_trial(frozen.params, user_attrs={ATTR_REQUEUED_FROM: number}, skip_if_exists=False)


# ---- one driver per study -----------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


#: lock key -> the open file this process holds an exclusive ``flock`` on (see _hold_host_lock)
_HOST_LOCKS: dict[str, int] = {}


def _host_lock_path(url: str, name: str) -> Path:
    """One lock file per (storage, study) in a per-user folder of the temporary directory; an
    SQLite storage is keyed by its absolute path (two working folders, two databases)."""
    import hashlib
    import tempfile

    key = url
    if url.startswith("sqlite:///"):
        key = "sqlite:///" + str(Path(url[len("sqlite:///"):]).resolve())
    digest = hashlib.sha256(f"{key}\0{name}".encode()).hexdigest()[:20]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"hvsearch-{uid}-locks" / f"{digest}.lock"


def _hold_host_lock(url: str, name: str) -> None:
    """An exclusive ``flock`` on the study's lock file, held until :func:`release_host_lock` or
    the process ends (the kernel releases it even after ``kill -9``): a second driver of the
    study on this machine is refused at once, even while the first is stopped (Ctrl-Z) or
    between its check and its claim of the study's driver lock (which alone is a read, then a
    write: two drivers starting together both won it). Drivers on other machines sharing a
    database are kept apart by the heartbeat alone (:func:`_take_driver_lock`)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the heartbeat alone
        return
    path = _host_lock_path(url, name)
    if str(path) in _HOST_LOCKS:
        return  # this process holds it already (a study continued in the same process)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise StudyError(f"study {name!r} is being run by {holder} on this machine; wait for it or stop it") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}".encode())
    _HOST_LOCKS[str(path)] = fd


def release_host_lock(url: str, name: str) -> None:
    """Let another driver run the study (the end of a run)."""
    fd = _HOST_LOCKS.pop(str(_host_lock_path(url, name)), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor releases the flock


def _take_driver_lock(study, name: str) -> None:
    held = study.user_attrs.get("driver")
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    if held and (held.get("host"), held.get("pid")) != (me["host"], me["pid"]):
        fresh = time.time() - float(held.get("beat", 0)) < STALE_AFTER_S
        live = _alive(int(held["pid"])) if held.get("host") == me["host"] else fresh
        if live and fresh:
            raise StudyError(f"study {name!r} is being run by pid {held['pid']} on {held['host']} "
                             f"(heartbeat {time.time() - held['beat']:.0f} s ago); wait for it or stop it")
    study.set_user_attr("driver", {**me, "beat": time.time()})


class Heartbeat:
    """Refresh the study's driver lock every HEARTBEAT_S seconds until stopped; then clear it and
    release this machine's lock on the study (``opened``)."""

    def __init__(self, opened: "Opened"):
        self.opened = opened
        self.study = opened.study
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hvsearch-heartbeat", daemon=True)

    def _beat(self) -> None:
        self.study.set_user_attr("driver", {"host": socket.gethostname(), "pid": os.getpid(),
                                            "beat": time.time()})

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._beat()
            except Exception:  # a storage hiccup must not kill the search; the next beat retries
                pass

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.study.set_user_attr("driver", None)
        except Exception:
            pass
        finally:
            release_host_lock(self.opened.url, self.opened.study.study_name)


def arch_json(spec) -> str:
    return json.dumps(spec.to_dict(), separators=(",", ":"))
