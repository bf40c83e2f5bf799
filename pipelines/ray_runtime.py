"""Starting or joining Ray, the same way for every stage.

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


@contextmanager
def session(params: RayParams, address: str | None = None):
    """Ray for the block; shut down on the way out, whether the block ends, fails or is interrupted."""
    import ray

    started = init(params, address)
    try:
        yield
    finally:
        if started:
            with _sigint_ignored():
                ray.shutdown()
