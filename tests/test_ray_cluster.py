"""Done-when 5: a two-node Ray cluster on this machine gives the same shards as local mode."""

from pathlib import Path

import pytest

from pipelines.cli import run_stages
from tests.pipeline_fixtures import small_params

ALL = ("ingest", "annotate", "sample", "export")


def _shards(out: str) -> dict[str, bytes]:
    root = Path(out)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("shards/*/*.tar"))}


@pytest.fixture
def no_ray():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    ray.shutdown()


def test_two_node_cluster_matches_local_mode(tmp_path, no_ray):
    import ray
    from ray.cluster_utils import Cluster

    local = small_params(tmp_path / "local", count=16)
    run_stages(ALL, local, log=lambda *_: None)  # starts and stops its own local instance
    assert not ray.is_initialized()

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
        remote = small_params(tmp_path / "cluster", count=16)
        run_stages(ALL, remote, log=lambda *_: None)
    finally:
        ray.shutdown()
        cluster.shutdown()
    expected = _shards(local.paths.out)
    assert expected and _shards(remote.paths.out) == expected
