"""Starting or joining Ray, the same way for every stage, and only when a stage has work for it.

A command opens a `session`; Ray starts (or is joined) the first time a stage hands it work
(`ray_module`), not when the session opens: a run with nothing to do, or with only a part or
two of work on a local machine (`inline`: `ray.inline_max_tasks`), never pays Ray's start and
shutdown (about 5 s on 2 cores, more than a part's work) and runs the same task functions in
this process. On a cluster (`--ray-address`, RAY_ADDRESS, `ray.address`) work always goes to Ray.

Local by default (`address="local"` always starts a fresh instance, so a stale
/tmp/ray/ray_current_cluster from a dead run is never joined by accident);
`--ray-address` or RAY_ADDRESS joins an existing cluster. Workers import vicl by
module name, so on a cluster vicl must be installed on every node (or shipped as a
runtime_env working_dir); no stage passes driver-local objects to workers, only paths
under the (shared) store and plain data.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager

from pipelines.params import RayParams


def _quiet_data_context(preserve_order: bool) -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = preserve_order
    ctx.enable_progress_bars = os.environ.get("VICL_RAY_PROGRESS", "0") == "1"
    ctx.enable_operator_progress_bars = ctx.enable_progress_bars
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False


def init(params: RayParams, address: str | None = None) -> bool:
    """Initialise Ray unless already initialised; returns True if this call started it."""
    import ray

    if ray.is_initialized():
        _quiet_data_context(params.preserve_order)
        return False
    address = address or os.environ.get("RAY_ADDRESS") or params.address
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                  logging_level="ERROR")
    if address and address != "local":
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=params.num_cpus, **kwargs)
    _quiet_data_context(params.preserve_order)
    return True


@contextmanager
def _sigint_ignored():
    """Ctrl-C pressed again while Ray shuts down would cut the shutdown short and leave its
    processes running: the shutdown finishes first (it is short)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread, which alone receives SIGINT
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler set outside Python, which cannot be put back
            signal.signal(signal.SIGINT, previous)


class _Session:
    def __init__(self, params: RayParams, address: str | None):
        self.params, self.address, self.started = params, address, False

    def cluster(self) -> bool:
        address = self.address or os.environ.get("RAY_ADDRESS") or self.params.address
        return bool(address) and address != "local"


_sessions: list[_Session] = []


def _current() -> _Session:
    return _sessions[-1] if _sessions else _Session(RayParams(), None)


def _ray_running() -> bool:
    ray = sys.modules.get("ray")  # never imported: certainly not running (and not worth importing to ask)
    return ray is not None and ray.is_initialized()


def inline(tasks: int) -> bool:
    """Whether `tasks` pending tasks run here, in this process, instead of on Ray: only on a local
    machine, with Ray not already running, and no more than `ray.inline_max_tasks` of them."""
    session = _current()
    return not _ray_running() and not session.cluster() and tasks <= session.params.inline_max_tasks


def ray_module():
    """The `ray` module, started (or joined) for the current session if it is not running yet."""
    import ray

    if not ray.is_initialized():
        session = _current()
        started = init(session.params, session.address)
        if _sessions:
            session.started = session.started or started  # shut down when the session ends
    else:
        _quiet_data_context(_current().params.preserve_order)
    return ray


@contextmanager
def session(params: RayParams, address: str | None = None):
    """Ray for the block, started on first use (`ray_module`); shut down on the way out if this
    session started it, whether the block ends, fails or is interrupted."""
    current = _Session(params, address)
    _sessions.append(current)
    try:
        yield
    finally:
        _sessions.remove(current)
        if current.started:
            import ray

            with _sigint_ignored():
                ray.shutdown()
