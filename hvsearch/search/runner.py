"""The search driver: an Optuna sampler driving Ray Tune, in Ray's own example style.

    searcher = StudySearcher(...)                      # OptunaSearch + persistent storage
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": c, "gpu": g}),
        tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, search_alg=searcher,
                                    scheduler=ASHA(...), num_samples=..., max_concurrent_trials=...),
        run_config=tune.RunConfig(name=..., storage_path=...),
    )
    tuner.fit()

Resume needs no ``Tuner.restore``: the Optuna study is the truth (it is written as each event
happens, while Tune's experiment state is a periodic snapshot), so every run of a study opens it,
marks the trials a dead driver left running as interrupted, re-queues them, and trains only what
the trial budget still allows. A re-queued trial continues from its own checkpoint.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from hvsearch.errors import RayStartError, StudyError
from hvsearch.search import study as st
from hvsearch.space import Space, human

MODE = "max"  # the scheduler ranks trials by st.METRIC, higher is better


@dataclass
class RunSummary:
    study: str
    storage: str
    wall_time_s: float
    counts: dict[str, int]
    best: tuple[float, int] | None
    results_dir: Path | None
    stopped_because: str | None = None
    trials_started: int = 0
    train_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def ray_temp_dir() -> str:
    """A short folder for Ray's session files: its Unix sockets live there, and socket paths
    are limited to ~107 bytes."""
    return os.environ.get("HVSEARCH_RAY_TMP") or os.path.join(tempfile.gettempdir(), f"hvs-{os.getuid()}")


def ray_env(local: bool = True) -> None:
    """Ray's settings that must be in the environment before Ray starts.

    A local instance (``local``) is private to this machine and this user: every server it
    starts (GCS, raylet, workers, dashboard and runtime-env agents) binds to the loopback
    address, and Ray's token authentication is on, with a random token kept in a file only this
    user can read (:func:`ray_token_file`). Settings already in the environment win. Joining a
    cluster (``local=False``) leaves address and authentication to the cluster's own settings:
    see the README's security section."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # A trial's error is recorded in the study with its reason; no traceback on the console
    # (it stays in the trial's error.txt under studies/<study>/tune/).
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    # The progress lines below replace Tune's console output (verbose=0 silences the legacy one).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune's default result loggers: the search adds the CSV and JSON ones itself (each trial's
    # progress.csv and result.json under studies/<study>/tune/) and leaves out TensorBoard's,
    # whose tensorboardX imports torch into the driver (1.6 s of a search's start on 2 cores).
    # "0" brings the TensorBoard logs back.
    os.environ.setdefault(TUNE_AUTO_LOGGERS_ENV, "1")
    # Tune hands a finished trial's worker to the next trial after giving the old training
    # thread this long to end (Tune's default: 2 s); on a loaded machine the thread can take
    # longer, and Tune then ends the new trial unstarted (the search re-queues it, and the next
    # try pays for a new worker). The thread normally ends in well under a second: waiting up
    # to 30 s costs nothing then.
    os.environ.setdefault(TUNE_THREAD_TIMEOUT_ENV, "30")
    if not local:
        # an earlier local run in this process must not hand its settings to a cluster join
        for key in _SET_FOR_LOCAL:
            os.environ.pop(key, None)
        _SET_FOR_LOCAL.clear()
        return

    def default(key: str, value: str) -> None:
        if key not in os.environ:
            os.environ[key] = value
            _SET_FOR_LOCAL.add(key)

    # Ray's switch for "a single-machine instance": its node address becomes the loopback one,
    # and since Ray 2.5x every server binds to the node address instead of 0.0.0.0.
    default(LOOPBACK_ENV, "0")
    default("RAY_AUTH_MODE", "token")
    if (os.environ["RAY_AUTH_MODE"] == "token" and not os.environ.get("RAY_AUTH_TOKEN")
            and not os.environ.get("RAY_AUTH_TOKEN_PATH")):
        default("RAY_AUTH_TOKEN_PATH", str(ray_token_file()))


_SET_FOR_LOCAL: set[str] = set()  # the variables ray_env set for a local instance (not the user)


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
TUNE_AUTO_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
TUNE_THREAD_TIMEOUT_ENV = "TUNE_FUNCTION_THREAD_TIMEOUT_S"
#: The driver's variables a trial's worker needs too: a local instance's workers inherit the
#: driver's environment, a cluster's get them through the job's runtime environment.
WORKER_ENV = ("HVSEARCH_CACHE", TUNE_THREAD_TIMEOUT_ENV)


def _private_dir(path: Path) -> Path:
    """``path`` as a folder only this user can enter; refuses one someone else owns (a folder
    under a shared /tmp made in advance by another user)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise StudyError(f"{path}: owned by user id {info.st_uid}, not by this user ({os.getuid()}); "
                         "set HVSEARCH_RAY_TMP to a folder of your own")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path


def ray_token_file() -> Path:
    """The token of this user's local Ray instances: 32 random bytes (hex) in a file readable by
    this user only, under :func:`ray_temp_dir`; made on first use and kept (a token never leaves
    the machine, and every worker of the instance reads it from there)."""
    import secrets

    folder = _private_dir(Path(ray_temp_dir()))
    path = folder / "auth_token"
    if not path.exists():
        # written whole under a private name, then linked into place: two runs starting at once
        # agree on one token (the second link fails and that run reads the first's)
        tmp = folder / f".auth_token.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    if not path.read_text().strip():
        raise StudyError(f"{path}: Ray's token file is empty; delete it and run again")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path


class _DropTuneAdvice(logging.Filter):
    """Tune logs "Trials did not complete: [...]" for failed trials (the study records each
    failure with its reason, and the progress lines say so) and, after Ctrl-C, how to resume
    with ``Tuner.restore`` (hvsearch resumes from the study: ``hvsearch run SPACE``)."""

    DROP = ("Trials did not complete", "Experiment has been interrupted", "Resume experiment with",
            "Stop signal received",  # our closing lines say what was stopped and how to go on
            # the result grid built after fit() lists trials that died before their first
            # result; each is in the study with the reason it died
            "Failed to fetch metrics",
            # a re-used worker that could not be reset: the progress line says what happens
            "Could not re-use actor")

    def __init__(self):
        super().__init__()
        self.interrupted = False  # Tune said the run was stopped by SIGINT (Ctrl-C)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if msg.startswith(("Stop signal received", "Experiment has been interrupted")):
            self.interrupted = True
        return not msg.startswith(self.DROP)


_TUNE_ADVICE = _DropTuneAdvice()


# Ray starts one idle worker per CPU for the driver's tasks as it starts; a search runs no tasks,
# and Tune's trial actors never take those workers (their runtime_env differs from the job's, so
# each gets a process of its own): on 2 cores the idle ones only delay the start (ray.init 4.5 s
# instead of 4.9 s, the first two trial actors ready 0.9 s sooner: means of 3 runs each, with the
# driver's imports running alongside as in a search)
_LOCAL_RAY_CONFIG = {"prestart_worker_first_driver": False, "enable_worker_prestart": False}

RAY_PROCESSES = "ray-processes.json"  # in a run's folder while its local Ray instance is up


def worker_env() -> dict[str, str]:
    """The environment variables of :data:`WORKER_ENV` that are set here, for the job's runtime
    environment (after :func:`ray_env`)."""
    return {k: os.environ[k] for k in WORKER_ENV if k in os.environ}


def init_ray(address: str | None, num_cpus: int | None, owner: Path | None = None) -> bool:
    """Start a local Ray (or join ``address``); False if Ray was already initialised by the
    caller, who then also owns its shutdown.

    With ``owner`` (the folder of the study or calibration the instance serves), the instance's
    processes are written to ``owner/ray-processes.json`` and :func:`stop_ray` removes the file;
    a file still there at the next start means that a driver was killed (``kill -9``, the OOM
    killer) and its processes are ended first (:func:`end_orphans`)."""
    ray_env(local=not address)
    import ray

    if ray.is_initialized():
        return False
    kw: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    env = worker_env()
    if env:
        kw["runtime_env"] = {"env_vars": env}
    _refresh_ray_settings()
    if address:
        try:
            ray.init(address=address, **kw)
        except Exception as e:  # connection refused, version mismatch, ...
            raise RayStartError(f"cannot join the Ray cluster at {address}: {type(e).__name__}: {e}") from None
        return True
    if owner is not None:
        end_orphans(owner)
    # "local": always a new instance of our own, never one found through RAY_ADDRESS or
    # /tmp/ray/ray_current_cluster (someone else's cluster on a shared machine).
    for attempt in (1, 2):
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _temp_dir=ray_temp_dir(),
                     object_store_memory=256 * 1024 * 1024, _system_config=_LOCAL_RAY_CONFIG, **kw)
            break
        except Exception as e:  # processes not up within Ray's 30 s start-up limit, an unusable folder, ...
            if ray.is_initialized():
                ray.shutdown()
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            first = lines[0][:300] if lines else ""
            if attempt == 1 and "timed out during startup" in first:
                # Ray gives its processes a fixed 30 s to register; on a loaded machine a second
                # try usually makes it
                print(f"note: Ray did not start within its 30 s limit ({first}); trying once more",
                      file=sys.stderr, flush=True)
                continue
            raise RayStartError(
                f"could not start a local Ray instance ({type(e).__name__}: {first}); on a busy machine "
                "run again when the load is lower (Ray's processes must register within 30 s); its logs "
                f"are under {ray_temp_dir()}/session_latest/logs") from None
    if owner is not None:
        _record_processes(owner)
    return True


def _refresh_ray_settings() -> None:
    """Make Ray see the environment ray_env() just set. Both settings are read by Ray when it is
    imported, which may have happened before: the single-machine switch, and authentication
    (RayConfig and the token cache; refreshed the way ray.init itself does when it turns token
    mode on)."""
    from ray._private import ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config

    on = os.environ.get(LOOPBACK_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = (not ray_constants.IS_WINDOWS_OR_OSX if on is None
                                        else on.lower() in ("1", "true"))
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def stop_ray(started: bool, owner: Path | None = None) -> None:
    """Shut down the Ray instance :func:`init_ray` started (``started``), and forget its
    processes. (In the calling thread: shutting Ray down in another while this one goes on was
    tried, and Ray's core worker ends the process when a Ray object is released during the
    shutdown.)"""
    if not started:
        return
    import ray

    _end_autoscaler_monitor()
    ray.shutdown()
    if owner is not None:
        (owner / RAY_PROCESSES).unlink(missing_ok=True)


def _end_autoscaler_monitor() -> list[int]:
    """End the autoscaler monitor of the local instance this process started, before
    ``ray.shutdown``. A local instance has nothing to autoscale; at shutdown Ray ends the GCS
    first and then sends the monitor SIGTERM, whose handler tries to tell the (gone) GCS that
    the autoscaler failed and hangs until Ray's SIGKILL one second later: 1.0 of the 1.2 s
    ``ray.shutdown`` takes (``benchmarks/startup_cpu.py`` times both). Killed first, it is
    reaped here and Ray's shutdown skips it. The process is taken from Ray's own table of the
    processes this node started (either autoscaler's monitor), so a joined cluster's (not
    started here) is never touched. Returns the pids ended."""
    try:
        from ray._private import ray_constants
        from ray._private import worker as ray_worker

        node = ray_worker._global_node
        infos = list(node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, [])) if node is not None else []
    except (ImportError, AttributeError):  # another Ray layout: leave it to ray.shutdown
        return []
    ended = []
    for info in infos:
        proc = info.process
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(timeout=5)
            except Exception:  # a process that SIGKILL cannot reap now: Ray's shutdown logs it
                continue
            ended.append(proc.pid)
    return ended


def _record_processes(owner: Path) -> None:
    """Write the driver and the Ray processes it started (GCS, raylet, agents) to
    ``owner/ray-processes.json``: pid, start time and name, so that a later run can tell them
    from unrelated processes that reuse a pid."""
    import json
    import socket

    import psutil

    try:
        me = psutil.Process()
        procs = []
        for p in me.children(recursive=True):
            try:  # a child may end between the listing and this look (a data loader worker)
                procs.append({"pid": p.pid, "started": p.create_time(), "name": p.name()})
            except psutil.Error:
                pass
        record = {"host": socket.gethostname(), "driver": {"pid": me.pid, "started": me.create_time()},
                  "processes": procs}
        owner.mkdir(parents=True, exist_ok=True)
        tmp = owner / f".{RAY_PROCESSES}.{me.pid}"
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, owner / RAY_PROCESSES)  # whole or not at all
    except (OSError, psutil.Error) as e:  # bookkeeping for a later cleanup: never worth a search
        print(f"note: could not record this run's Ray processes in {owner}: {e}", file=sys.stderr, flush=True)


def _alive(p) -> bool:
    import psutil

    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def end_orphans(owner: Path, wait_s: float = 5.0) -> list[int]:
    """End the Ray processes a killed driver of ``owner``'s run left behind (its
    ``ray-processes.json``); returns their pids. Nothing is touched while that driver still
    runs, nor a process whose start time differs from the recorded one (a reused pid)."""
    import json

    import psutil

    path = owner / RAY_PROCESSES
    import socket

    try:
        record = json.loads(path.read_text())
        driver = record["driver"]
        procs = record["processes"]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)  # unreadable: a driver killed while writing it
        return []

    def same(entry):
        try:
            p = psutil.Process(int(entry["pid"]))
            return p if abs(p.create_time() - float(entry["started"])) < 0.5 and _alive(p) else None
        except (psutil.Error, KeyError, TypeError, ValueError):
            return None

    if record.get("host", socket.gethostname()) != socket.gethostname():
        return []  # a driver on another machine sharing the folder: its pids mean nothing here
    if same(driver) is not None:
        return []  # its driver is alive (another run of this study): not ours to end
    left = [p for p in (same(e) for e in procs) if p is not None]
    names = {p.pid: _name(p) for p in left}
    for p in left:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, still = psutil.wait_procs(left, timeout=wait_s)
    for p in still:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(still, timeout=wait_s)
    path.unlink(missing_ok=True)
    if left:
        print(f"ended {len(left)} Ray process(es) that a killed run left in {owner}: "
              + ", ".join(f"{p.pid} ({names[p.pid]})" for p in left), file=sys.stderr, flush=True)
    return [p.pid for p in left]


def _name(p) -> str:
    try:
        return p.name()
    except Exception:
        return "?"


def _import_search(space: Space) -> None:
    """Import what the driver needs once Ray is up: Ray Tune, the searcher and the trainable
    (~2 s on an idle 2-core machine), run while Ray's processes start. The driver counts costs
    from the spec (:mod:`hvsearch.cost.analytic`), so torch and the models (~4 s more, CPU-bound)
    are imported only for a space that measures latency or pre-screens with a zero-cost score in
    the driver."""
    import ray.tune  # noqa: F401

    import hvsearch.cost  # noqa: F401
    import hvsearch.search.searcher  # noqa: F401
    import hvsearch.search.trainable  # noqa: F401
    import hvsearch.search.tune_parts  # noqa: F401

    if space.latency is not None or space.search.prescreen:
        import hvsearch.models  # noqa: F401

        _driver_threads()


def _driver_threads() -> None:
    """One torch thread in the driver, once it has torch: the cores belong to the trials."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _cost_fn(space: Space):
    def cost(spec) -> tuple[int, int, int]:
        from hvsearch.cost import count_spec

        res = space.constraints.resolution or spec.resolution
        # from the spec; a part without a formula (another package's family) is counted on its
        # model, which imports torch here
        c = count_spec(spec, resolution=res)
        _driver_threads()
        return c.params, c.flops, res

    return cost


def _latency_fn(space: Space, studies_dir: str | Path):
    """spec -> its measured latency (hvsearch.latency, cached in ``studies_dir/latency.db``), or
    None when the space neither optimises nor constrains latency."""
    settings = space.latency
    if settings is None:
        return None
    store = Path(studies_dir) / "latency.db"

    def measure(spec):
        from hvsearch.latency import latency

        return latency(spec, device=settings.device, runtime=settings.runtime, batch=settings.batch,
                       resolution=settings.resolution, threads=settings.threads, repeats=settings.repeats,
                       warmup=settings.warmup, store=store)

    return measure


def run_search(space: Space, *, study: str | None = None, storage: str | None = None,
               address: str | None = None, resume: bool = False, num_cpus: int | None = None,
               studies_dir: str | Path = "studies", results_dir: str | Path | None = "results",
               out: IO[str] | None = None) -> RunSummary:
    """Run (or continue) the search a space describes; see the module docstring.

    Raises :class:`~hvsearch.errors.DataError` before any study is opened or created when the
    space's data cannot be found (instead of every trial failing on it)."""
    import optuna

    from hvsearch.train.sources import check_data

    check_data(space.data)
    st.make_sampler(space)  # bad search.sampler_options: refused before any study is created
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for logger in ("ray.tune.tune", "ray.tune.analysis.experiment_analysis", "ray.tune.execution.tune_controller"):
        logging.getLogger(logger).addFilter(_TUNE_ADVICE)  # once: the same object is not added twice
    out = out or sys.stdout
    _TUNE_ADVICE.interrupted = False
    t0 = time.monotonic()
    name = study or space.name
    url = st.storage_url(name, storage, studies_dir, create=not resume)
    opened = st.open_for_run(space, name, url, resume)
    budget = space.search.trials
    remaining = budget - opened.done
    say = _Say(out, t0)
    say(f"study {name!r} in {st.masked(url)}: {opened.done} of {budget} trials trained"
        + (f"; {len(opened.requeued)} interrupted trial(s) re-queued: {opened.requeued}" if opened.requeued else ""))
    study_dir = Path(studies_dir).resolve() / name
    summary = RunSummary(name, url, 0.0, {}, None, None)
    try:
        with st.Heartbeat(opened):
            # Made before Ray starts, so that bad search.sampler_options fail at once; a continued
            # study reseeds past its trials (the same seed would replay proposals already trained).
            sampler = st.make_sampler(space, seed_offset=len(opened.study.trials))
            if remaining > 0:
                summary = _fit(space, opened, sampler, name, remaining, address, num_cpus, study_dir, say)
            else:
                say(f"the trial budget ({budget}) is spent; raise it with --trials to search further")
            leftover = st.requeue_interrupted(opened.study, opened.storage,
                                              reason="the search was stopped while the trial was running")
            if leftover:
                # a calibration's or a benchmark's studies have no space file of their own: the
                # command that made them continues them
                again = (f"`hvsearch run {space.source} --study {name}`" if Path(space.source).is_file()
                         else "the same command")
                say(f"stopped with {len(leftover)} trial(s) running: {leftover}, marked interrupted and "
                    f"re-queued; continue with {again}")
    except BaseException:
        # Ray not started, the cluster unfit for the space's resources (_check_cluster), Ctrl-C:
        # a study this command created and nothing ran in is not left behind (it would hold the
        # space's fingerprint and refuse an edited space for trials that never ran)
        if opened.created and not opened.study.get_trials(deepcopy=False):
            optuna.delete_study(study_name=name, storage=opened.storage)
        raise
    summary.wall_time_s = time.monotonic() - t0
    summary.study, summary.storage = name, url
    from hvsearch.search.results import best_trial, write_results

    best = best_trial(opened.study)
    summary.best = (best.values[0], best.number) if best is not None else None
    if results_dir is not None:
        summary.results_dir = write_results(opened.study, Path(results_dir) / name)
        say(f"results in {summary.results_dir}/")
    if best is not None:
        say(best_line(best, summary.results_dir))
    if _TUNE_ADVICE.interrupted:
        # Ctrl-C: Tune ended the run and the study is saved (trials re-queued, results written);
        # the caller stops too (a calibration does not go on to its next training)
        raise KeyboardInterrupt
    return summary


def best_line(trial, results_dir: Path | None) -> str:
    """The closing line: the best trial's architecture, cost and accuracy, and its YAML."""
    import json

    arch = json.loads(trial.user_attrs[st.ATTR_ARCH])
    mixers = "/".join(s["mixer"]["type"] for s in arch["stages"])
    depths = "-".join(str(s["depth"]) for s in arch["stages"])
    widths = "-".join(str(s["width"]) for s in arch["stages"])
    where = f": {results_dir}/best.yaml" if results_dir is not None else ""
    return (f"best: trial {trial.number}, {mixers} (depths {depths}, widths {widths}), "
            f"{human(trial.user_attrs.get(st.ATTR_PARAMS) or 0)} params, "
            f"{human(trial.user_attrs.get(st.ATTR_FLOPS) or 0)} FLOPs, val top-1 {trial.values[0]:.2f}%{where}")


def _fit(space: Space, opened: st.Opened, sampler, name: str, remaining: int, address: str | None,
         num_cpus: int | None, study_dir: Path, say) -> RunSummary:
    # Import Ray Tune and the searcher (seconds) while Ray starts (mostly waiting on its
    # processes).
    warm = threading.Thread(target=_import_search, args=(space,), name="hvsearch-import", daemon=True)
    warm.start()
    try:
        started = init_ray(address, num_cpus, owner=study_dir)
    finally:
        warm.join()
    import ray
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.search import ConcurrencyLimiter

    from hvsearch.search.results import prepare_results
    from hvsearch.search.searcher import StudySearcher
    from hvsearch.search.trainable import train_trial
    from hvsearch.search.tune_parts import Progress, TellingASHA, counts_line

    try:
        res = space.resources
        total = ray.cluster_resources()
        _check_cluster(total, res, say)
        # Ask the sampler only for trials that can start: TPE learns from every result before
        # the next draw, instead of drawing a queue of pending trials blind.
        concurrent = res.max_concurrent or _fits(total, res)
        epochs = int(space.train.epochs)
        # counted from the command's start, as a user reads "10m"
        deadline = (say.t0 + space.search.time_budget) if space.search.time_budget else None
        ckpt_root = study_dir / "checkpoints"
        searcher = StudySearcher(space, opened, sampler, _cost_fn(space), epochs, checkpoint_root=ckpt_root,
                                 deadline=deadline, slots=remaining, say=say,
                                 latency_fn=_latency_fn(space, study_dir.parent),
                                 on_idle=prepare_results)
        scheduler = TellingASHA(searcher.asha_stopped, time_attr="epoch", max_t=epochs,
                                grace_period=space.search.grace_period,
                                reduction_factor=space.search.reduction_factor)
        trainable = tune.with_parameters(train_trial, train=space.train.to_dict(), data=space.data.to_dict(),
                                         checkpoint_root=str(ckpt_root))
        resources = {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial}
        # a local instance's processes recorded again as workers start (init_ray's record has
        # only those up when it returned): what a killed driver leaves is ended by the next run
        record = (lambda: _record_processes(study_dir)) if started and not address else None
        # the limiter Tune would wrap the searcher in for max_concurrent_trials, made here so
        # that Progress can tell it of a trial Tune ended silently (on_step_end)
        limited = ConcurrencyLimiter(searcher, max_concurrent=concurrent)
        progress = Progress(searcher, epochs=epochs, say=say, on_start=record, search_alg=limited)
        say(f"searching: {remaining} trial(s) to train, {space.search.sampler} sampler"
            f"{'' if space.search.seed is None else f' (seed {space.search.seed})'}, ASHA over {epochs} "
            f"epoch(s), {res.cpus_per_trial} CPU / {res.gpus_per_trial} GPU per trial, "
            f"{concurrent} at a time"
            + (f", time budget {space.search.time_budget:.0f} s" if space.search.time_budget else "")
            + (_prescreen_line(space.search.prescreen) if space.search.prescreen else ""))
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            tune_config=tune.TuneConfig(
                metric=st.METRIC, mode=MODE, search_alg=limited, scheduler=scheduler,
                # the searcher ends the search (the budget, its time, a re-queued trial retried)
                num_samples=-1, reuse_actors=True,
                trial_name_creator=_trial_name(searcher), trial_dirname_creator=_trial_name(searcher)),
            run_config=tune.RunConfig(
                name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(study_dir / "tune"),
                verbose=0, callbacks=[progress, CSVLoggerCallback(), JsonLoggerCallback()],
                failure_config=tune.FailureConfig(max_failures=0)),
        )
        # Tune installs its own SIGINT/SIGUSR1 handlers and restores them only when a signal
        # arrives: put ours back, so that Ctrl-C between two searches of one command
        # (calibrate, the benchmarks) is an ordinary KeyboardInterrupt
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, getattr(signal, "SIGUSR1", None))
                 if sig is not None}
        try:
            tuner.fit()
        finally:
            if threading.current_thread() is threading.main_thread():
                for sig, handler in saved.items():
                    if handler is not None:
                        signal.signal(sig, handler)
        if not searcher.finished:
            # Tune ends a search without the searcher's FINISHED only when it is stopped from
            # outside (SIGINT, SIGUSR1); its log line says so too (_TUNE_ADVICE)
            _TUNE_ADVICE.interrupted = True
        held = searcher.release_queue("kept by the pre-screen, but the search stopped before it started")
        if held:
            say(f"{len(held)} pre-screened candidate(s) never started: {held}, re-queued for a continued run")
    finally:
        # the results' import thread (searcher.on_idle) ends before Ray's shutdown begins: no
        # Ray object is released in another thread during it (see stop_ray)
        from hvsearch.search.results import join_prepared

        join_prepared()
        stop_ray(started, study_dir)
    c = dict(searcher.counts)
    best = searcher.best
    say(f"done: {counts_line(searcher.counts)}"
        + (f"; best val top-1 {best[0]:.2f}% (trial {best[1]})" if best else "")
        + (f"; stopped: {searcher.exhausted}" if searcher.exhausted else ""))
    first = progress.first_start - say.t0 if progress.first_start is not None else None
    return RunSummary(name, opened.url, 0.0, c, best, None, stopped_because=searcher.exhausted,
                      trials_started=progress.started, train_time_s=progress.train_time,
                      extra={"first_trial_s": first})


def _prescreen_line(p) -> str:
    return (f"; pre-screen: {p.score} ranks each pool of {p.pool} draws, the best {p.kept} train, "
            f"the others are recorded as skipped")


def _fits(total: dict[str, float], res) -> int:
    """How many trials the cluster's CPUs (and GPUs) hold at once."""
    n = int(total.get("CPU", 0) // res.cpus_per_trial)
    if res.gpus_per_trial > 0:
        n = min(n, int(total.get("GPU", 0) // res.gpus_per_trial))
    return max(1, n)


def smoke_space(space: Space) -> Space:
    """A smoke-size version of a space: 2 trials of 1 epoch of at most 3 batches, one at a time."""
    import dataclasses

    train = space.train.replace(epochs=1, max_steps_per_epoch=3)
    search = dataclasses.replace(space.search, trials=2, grace_period=1, time_budget=None)
    return dataclasses.replace(space, train=train, search=search,
                               resources=dataclasses.replace(space.resources, max_concurrent=1))


def _trial_name(searcher):
    def name(trial) -> str:
        return f"trial_{searcher.number(trial.trial_id)}_{trial.trial_id}"

    return name


def _check_cluster(total: dict[str, float], res, say) -> None:
    if res.gpus_per_trial > 0 and total.get("GPU", 0) < res.gpus_per_trial:
        raise StudyError(f"resources.gpus_per_trial is {res.gpus_per_trial} but the Ray cluster has "
                         f"{total.get('GPU', 0):g} GPU(s); set it to 0 or join a cluster with GPUs (--address)")
    if total.get("CPU", 0) < res.cpus_per_trial:
        raise StudyError(f"resources.cpus_per_trial is {res.cpus_per_trial} but the Ray cluster has "
                         f"{total.get('CPU', 0):g} CPU(s)")
    nodes = total.get("node_count")
    say(f"ray cluster: {total.get('CPU', 0):g} CPU(s), {total.get('GPU', 0):g} GPU(s)"
        + (f", {nodes} node(s)" if nodes else ""))


# ---- progress -----------------------------------------------------------------------------------

class _Say:
    def __init__(self, out: IO[str], t0: float):
        self.out, self.t0 = out, t0

    def __call__(self, msg: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.0f}s] {msg}", file=self.out, flush=True)
