"""Where a stage's tasks run: in this process, as Ray tasks, or in a Ray Data actor pool; and
starting or joining Ray, the same way for every stage, only when a stage has work for it.

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


# --- running a stage's tasks: here, as Ray tasks, or in a Ray Data actor pool ------------------

def resolve_device(device: str, num_gpus: float) -> str:
    """The torch device a model runs on: `device` as configured, or for `auto` CUDA when the model
    asks for a GPU and one is there (a CPU model never imports torch just to ask: 2 s)."""
    if device != "auto":
        return device
    if num_gpus == 0:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def map_tasks(fn, items: list, progress=None, desc: str = ""):
    """`fn` over `items` (plain data), results in item order: here for a task or two (`inline`),
    else one Ray Data task per item. Ingest's parts and export's shards go through it."""
    if not items:
        return iter(())
    if inline(len(items)):
        results = map(fn, items)
    else:
        ray = ray_module()
        results = ray.data.from_items(items, override_num_blocks=len(items)).map(fn).iter_rows()
    return progress(results, total=len(items), desc=desc) if progress else results


def bounded_tasks(fn, shared, items: list, *, num_cpus: float, on_done=None) -> list:
    """`fn(shared, item)` as one Ray task per item, with at most 2 x (CPUs / num_cpus) pending (every
    CPU busy, yet not one pending task per part of a large corpus); `shared` goes to the object
    store once. Results in item order; `on_done(n)` after each batch of finished tasks."""
    import itertools

    ray = ray_module()
    task = ray.remote(num_cpus=num_cpus)(fn)
    shared_ref = ray.put(shared)
    queue = iter(enumerate(items))
    results: dict[int, object] = {}

    def submit(count: int) -> dict:
        return {task.remote(shared_ref, item): k for k, item in itertools.islice(queue, count)}

    pending = submit(max(2, 2 * int(ray.cluster_resources().get("CPU", 1) / num_cpus)))
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            results[pending.pop(ref)] = ray.get(ref)
        if on_done:
            on_done(len(done))
        pending.update(submit(len(done)))
    return [results[k] for k in range(len(items))]


def actor_pool(data, cls, *, size: int, num_cpus: float, num_gpus: float = 0, batch_size: int = 1,
               constructor_kwargs: dict | None = None, batch_format: str = "numpy"):
    """A Ray Data dataset of `cls(**constructor_kwargs)` (one per actor: a model loads once per actor)
    over `data` (a Ray Dataset, or rows as a list of dicts), `size` actors."""
    ray = ray_module()
    ds = data if isinstance(data, ray.data.Dataset) else ray.data.from_items(data, override_num_blocks=len(data))
    return ds.map_batches(cls, fn_constructor_kwargs=constructor_kwargs or {}, batch_size=batch_size,
                          batch_format=batch_format, compute=ray.data.ActorPoolStrategy(size=size),
                          num_cpus=num_cpus, **({"num_gpus": num_gpus} if num_gpus else {}))


def pool_size(concurrency: int, num_cpus: float, gpu: bool) -> tuple[int, float]:
    """(actors, CPUs per actor): GPU pools as configured; a CPU pool one actor per core of every node."""
    if gpu:
        return concurrency, num_cpus
    ray = ray_module()
    node_cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]]
    node_cpus = [c for c in node_cpus if c >= 1] or [1.0]
    return max(1, min(concurrency, sum(int(c) for c in node_cpus))), min([num_cpus] + [c / int(c) for c in node_cpus])
