"""Task families -> tasks: Graph200K's node set, custom YAML families, VisRel axes, `cmd_tasks`."""

import pytest

from core.node_types import LOCALITY_LEVELS, NODE_TYPES, SEMANTIC_LEVELS, axes_of, names_in_group
from pipelines.tasks import auto_tasks
from pipelines.sampling_params import SamplerParams
from pipelines.tasks import TaskFamilyError, coverage_matrix, enumerate_tasks, format_tasks, load_families

GRAPH200K_CONDITIONS = ["canny", "hed", "mlsd", "depth", "normal", "openpose", "sam2_mask", "uniformer", "mask",
                        "bbox", "foreground", "background"]


def graph200k_nodes() -> list[str]:
    """Graph200K's 49 node types (12 conditions + 32 degradations + 2 edits + 2 styles + reference)
    plus the source image at the centre of the graph, and each style's reference image (Graph200K
    stores `<Style>_ref_i` beside `<Style>_image_i`; vicl makes it a node of its own)."""
    nodes = GRAPH200K_CONDITIONS + names_in_group("degradation") + names_in_group("edit") + \
        names_in_group("style") + ["reference"]
    assert len(nodes) == 49
    return ["image", *nodes, "InstantStyle_ref", "ReduxStyle_ref"]


def test_graph200k_node_set_enumerates_141_tasks():
    """Graph200K reports up to 134 tasks over these 49 node types; its exact path list is not
    published. Our 12 families give 141, each count following from §1.1's family definitions, a
    style cell always beside its reference (each image has a style of its own):
    12 conditional generation + 12 with reference + 24 with style (cond -> ref -> InstantStyle |
    ReduxStyle, as VisualCloze's list) + 1 reference -> image + 1 subject extraction + 3 style
    transfer (image -> 2 styles, reference -> InstantStyle) + 12 style transfer with condition +
    2 editing + 2 editing with reference + 8 dense prediction + 32 restoration + 32 restoration
    with reference = 141 (within 6 % of 134)."""
    tasks = enumerate_tasks(load_families(), graph200k_nodes())
    per_family = {}
    for t in tasks:
        per_family[t.family] = per_family.get(t.family, 0) + 1
    assert per_family == {
        "conditional_generation": 12, "generation_with_reference": 12, "generation_with_style": 24,
        "reference_to_image": 1, "subject_extraction": 1, "style_transfer": 3, "style_transfer_with_condition": 12,
        "editing": 2, "editing_with_reference": 2, "dense_prediction": 8, "restoration": 32,
        "restoration_with_reference": 32}
    assert len(tasks) == 141 and len({t.name for t in tasks}) == 141
    assert abs(len(tasks) - 134) / 134 < 0.06
    assert all("." not in t.name and "/" not in t.name for t in tasks)


def test_enumeration_follows_the_present_nodes():
    tasks = auto_tasks(["image", "canny", "depth", "JPEG", "watermark"])
    assert sorted(t.name for t in tasks) == sorted([
        "canny_to_image", "depth_to_image", "image_to_canny", "image_to_depth", "JPEG_to_image",
        "watermark_to_image"])
    assert auto_tasks(["image"]) == []
    # a family filter keeps only those families
    only = auto_tasks(["image", "canny", "JPEG"], SamplerParams(families=["restoration"]))
    assert [t.name for t in only] == ["JPEG_to_image"]


def test_custom_family_from_yaml_without_code(tmp_path):
    extra = tmp_path / "mine.yaml"
    extra.write_text("families:\n"
                     "  edge_to_depth:\n"
                     "    meta_task: perception\n"
                     "    weight: 2\n"
                     "    axes: {semantic: structure, locality: regional}\n"
                     "    paths:\n"
                     "      - [{group: condition, only: [canny, hed]}, depth]\n"
                     "      - [image, canny, depth]\n")
    params = SamplerParams(extra_task_families=[str(extra)])
    tasks = {t.name: t for t in auto_tasks(["image", "canny", "depth"], params)}
    assert {"canny_to_depth", "image_and_canny_to_depth"} <= set(tasks)
    t = tasks["canny_to_depth"]
    assert (t.family, t.meta_task, t.weight, t.semantic, t.locality) == ("edge_to_depth", "perception", 2.0,
                                                                          "structure", "regional")
    assert "canny_to_depth" not in {t.name for t in auto_tasks(["image", "canny", "depth"])}


@pytest.mark.parametrize("body, message", [
    ("families:\n  x:\n    paths: [[nonsense, image]]\n", "unknown node type 'nonsense'"),
    ("families:\n  x:\n    paths: [[image]]\n", "paths"),
    ("families:\n  x:\n    colour: red\n    paths: [[canny, image]]\n", "unknown keys"),
    ("families:\n  x:\n    paths: [[{grp: condition}, image]]\n", "selector needs `group`"),
])
def test_bad_family_files_name_the_problem(tmp_path, body, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(body)
    with pytest.raises(TaskFamilyError, match=message):
        load_families([bad])


def test_every_node_and_task_is_on_both_axes():
    for name in NODE_TYPES:
        semantic, locality = axes_of(name)
        assert semantic in SEMANTIC_LEVELS and locality in LOCALITY_LEVELS
    tasks = enumerate_tasks(load_families(), graph200k_nodes())
    matrix = coverage_matrix(tasks)
    assert sum(sum(row.values()) for row in matrix.values()) == len(tasks)
    by_name = {t.name: t for t in tasks}
    assert (by_name["image_to_canny"].semantic, by_name["image_to_canny"].locality) == ("structure", "local")
    assert by_name["uniformer_to_image"].semantic == "object"
    assert by_name["reference_and_JPEG_to_image"].semantic == "pixel"  # the reference is not the transformation
    text = format_tasks(tasks)
    assert text.startswith("141 tasks") and "coverage" in text
