"""Failure policy: transient errors retried, persistent ones leave the part for a later run, a bad
image is one `annotator_error` row, and a code bug stops the stage instead of filling the store."""

import os
import sys

import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.cli import EXIT_UNFINISHED, main, run_stages
from pipelines.stages.annotate import AnnotatorBug
from pipelines.store import NodeStore
from tests.pipeline_fixtures import small_params

PLUGIN = '''
import os
from annotators.base import Annotator, NodeOutput
from annotators.registry import register

CALLS = {"n": 0}


def _mask(inputs):
    return [x["image"][..., 0] for x in inputs]


@register
class FlakyOOM(Annotator):
    """Out of memory on its first two calls in each worker, then fine."""
    name = "policy_flaky_oom"
    produces = ("foreground_mask",)

    def annotate(self, inputs, image_ids):
        CALLS["n"] += 1
        if CALLS["n"] <= 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [{"foreground_mask": NodeOutput(m)} for m in _mask(inputs)]


@register
class AlwaysOOM(Annotator):
    name = "policy_always_oom"
    produces = ("uniformer",)

    def annotate(self, inputs, image_ids):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")


@register
class Picky(Annotator):
    """Fails on one image (a deterministic, per-image error)."""
    name = "policy_picky"
    produces = ("sam2_mask",)

    def annotate(self, inputs, image_ids):
        for image_id in image_ids:
            if image_id == os.environ["POLICY_BAD_ID"]:
                raise ValueError(f"cannot handle {image_id}")
        return [{"sam2_mask": NodeOutput(m)} for m in _mask(inputs)]


@register
class Broken(Annotator):
    """A bug: the same exception on every image."""
    name = "policy_broken"
    produces = ("entity_seg",)

    def annotate(self, inputs, image_ids):
        return [{"entity_seg": NodeOutput(x["image"]["oops"])} for x in inputs]
'''


@pytest.fixture(scope="module")
def plugin_ray(tmp_path_factory):
    """A local Ray whose workers can import the plugin module, and the id of the picky image."""
    import ray

    from pipelines import executor
    from core.images import content_id
    from pipelines.params import RayParams
    from pipelines.sources import embedded_refs, render_embedded

    folder = tmp_path_factory.mktemp("plugins")
    (folder / "policy_plugins.py").write_text(PLUGIN)
    bad = sorted(content_id(render_embedded(r)) for r in embedded_refs(12, 96))[3]
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "POLICY_BAD_ID")}
    os.environ["PYTHONPATH"] = f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    os.environ["POLICY_BAD_ID"] = bad
    sys.path.insert(0, str(folder))
    if ray.is_initialized():
        ray.shutdown()
    executor.init(RayParams(num_cpus=2))
    yield bad
    ray.shutdown()
    sys.path.remove(str(folder))
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def params_for(root, annotators, **annotate):
    return small_params(root, count=12, annotators=annotators, mine={"enabled": False},
                        annotate={"plugins": ["policy_plugins"], "retry_backoff_s": 0.0, **annotate},
                        ingest={"part_size": 6})


def test_transient_errors_are_retried_and_bad_images_are_one_row_each(tmp_path, plugin_ray):
    params = params_for(tmp_path, {"policy_flaky_oom": {"batch_size": 4}, "policy_picky": {"batch_size": 4}})
    results = run_stages(("ingest", "annotate"), params, log=lambda *_: None)["annotate"]
    assert {r["annotator"]: (r["computed_parts"], r["unfinished_parts"]) for r in results
            if r["annotator"].startswith("policy")} == {"policy_flaky_oom": (2, 0), "policy_picky": (2, 0)}
    store = NodeStore(params.paths.store)
    rows = [r for p in sorted(store.nodes_dir.glob("policy_*/*/part-*.parquet"))
            for r in pq.read_table(p, columns=["image_id", "annotator", "error"]).to_pylist()]
    assert len(rows) == 24 and all(r["error"] is None for r in rows if r["annotator"] == "policy_flaky_oom")
    errors = [r for r in rows if r["error"]]
    assert [(r["image_id"], r["annotator"]) for r in errors] == [(plugin_ray, "policy_picky")]
    assert errors[0]["error"].startswith("annotator_error: ValueError: cannot handle")
    failures = [f for f in store.failures().to_pylist() if f["stage"] == "annotate"]
    assert [(f["reason"], f["source"]) for f in failures] == [("annotator_error", plugin_ray)]


def test_persistent_transient_errors_leave_the_part_for_a_later_run(tmp_path, plugin_ray):
    params = params_for(tmp_path, {"policy_always_oom": {"batch_size": 4}}, max_retries=1)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    assert main(["annotate", "--params", str(params_file)]) == 2  # before ingest: one line, exit 2
    assert main(["ingest", "--params", str(params_file)]) == 0
    assert main(["annotate", "--params", str(params_file)]) == EXIT_UNFINISHED
    store = NodeStore(params.paths.store)
    assert not list(store.nodes_dir.glob("policy_always_oom/*/part-*.parquet"))  # not marked done


def test_the_same_error_on_every_image_stops_the_stage(tmp_path, plugin_ray):
    params = params_for(tmp_path, {"policy_broken": {"batch_size": 3}})
    run_stages(("ingest",), params, log=lambda *_: None)
    with pytest.raises(AnnotatorBug, match="every image of a batch of 3 raised annotator_error: IndexError"):
        run_stages(("annotate",), params, log=lambda *_: None)
    assert not list(NodeStore(params.paths.store).nodes_dir.glob("policy_broken/*/part-*.parquet"))
