"""Shared test settings: offline, quiet, and one small local Ray instance per test module that needs it."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pipelines  # noqa: E402,F401 - installs the torchvision CPU fallback before any test imports torchvision
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_torch_thread():
    # The test machine is shared: one intra-op thread avoids OpenMP spin contention (5-20x slower
    # with 2 threads under load). Restored afterwards for other modules in the same session.
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance with two CPUs, shut down after the module."""
    import ray

    from pipelines import executor
    from pipelines.params import RayParams

    if ray.is_initialized():
        ray.shutdown()
    executor.init(RayParams(num_cpus=2))
    yield
    ray.shutdown()
