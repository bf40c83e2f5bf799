"""The one registry of node types: every kind of image (or record) a graph node can hold.

Names follow Graph200K where it has the node (anchors.md §1.1) so its exports line up,
and VIRAL (§1.3) for the rest. `group` is the meta-task group the sampler and the
task taxonomy key on. Plugins add their own with `register_node_type`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeType:
    name: str
    group: str  # image | condition | degradation | restoration_source | edit | synthetic_edit | style | reference | viral | mined | text
    description: str
    stored_as: str = "png"  # png (lossless map/mask) | photo (codec from params) | json (metadata only)


NODE_TYPES: dict[str, NodeType] = {}


def register_node_type(name: str, group: str, description: str, stored_as: str = "png") -> NodeType:
    node = NodeType(name, group, description, stored_as)
    existing = NODE_TYPES.get(name)
    if existing is not None and existing != node:
        raise ValueError(f"node type {name!r} registered twice with different definitions")
    NODE_TYPES[name] = node
    return node


def get_node_type(name: str) -> NodeType:
    try:
        return NODE_TYPES[name]
    except KeyError:
        raise KeyError(f"unknown node type {name!r}") from None


def names_in_group(group: str) -> list[str]:
    return [n for n, t in NODE_TYPES.items() if t.group == group]


register_node_type("image", "image", "the normalised source photograph (centre of the graph)", "photo")

# Graph200K's 12 conditions.
for _name, _desc in [
    ("canny", "Canny edges (100/200 at 512 px)"),
    ("hed", "HED soft edges"),
    ("mlsd", "M-LSD straight line segments"),
    ("depth", "relative depth (Depth Anything V2 by default)"),
    ("normal", "surface normals"),
    ("openpose", "rendered OpenPose body skeleton (keypoints in meta)"),
    ("sam2_mask", "automatic SAM masks, each in a distinct colour"),
    ("uniformer", "semantic segmentation with a fixed palette"),
    ("mask", "open-world masks: VLM grounding boxes then SAM, coloured per object"),
    ("bbox", "grounding boxes drawn on black (boxes and labels in meta)"),
    ("foreground", "image x foreground mask"),
    ("background", "image x (1 - foreground mask)"),
]:
    register_node_type(_name, "condition", _desc)

# Further conditions the annotators produce beyond Graph200K's twelve.
for _name, _desc in [
    ("pidinet", "PiDiNet soft edges"),
    ("lineart", "line art (standard)"),
    ("lineart_anime", "line art (anime model)"),
    ("teed", "TEED edges"),
    ("foreground_mask", "binary foreground mask"),
]:
    register_node_type(_name, "condition", _desc)

# Graph200K's 32 degradations (restoration sources).
for _name in [
    "blur", "compression", "SRx2", "SRx4", "pixelate", "Defocus", "GaussianBlur", "oversharpen",
    "GaussianNoise", "PoissonNoise", "SPNoise", "mosaic", "contrast_strengthen", "contrast_weaken",
    "quantization", "JPEG", "brighten", "darken", "LowLight", "saturate_strengthen", "saturate_weaken",
    "gray", "ColorDistortion", "Inpainting", "rotate90", "rotate180", "rotate270", "Barrel", "Pincushion",
    "Elastic", "Rain", "Frost",
]:
    register_node_type(_name, "degradation", f"Graph200K degradation {_name}")

# Graph200K's edits, styles and reference (made by generative models outside this pipeline;
# ingested as nodes when a user has them).
register_node_type("FillEdit", "edit", "subject replaced by inpainting, background kept")
register_node_type("DepthEdit", "edit", "background changed by depth-conditioned regeneration")
register_node_type("InstantStyle", "style", "stylised image, semantics kept")
register_node_type("ReduxStyle", "style", "stylised image, semantics changed")
register_node_type("reference", "reference", "the subject image, for identity preservation")

# VIRAL's standard-task targets and restoration sources.
for _name, _group, _desc in [
    ("detection_target", "viral", "filled white rectangle on black around one category"),
    ("interactive_seg_source", "viral", "the image with a visible red box around one object"),
    ("interactive_seg_mask", "viral", "the SAM mask of the boxed object"),
    ("entity_seg", "viral", "each entity mask in a random distinct colour"),
    ("watermark", "restoration_source", "the image with a procedurally drawn logo/text overlaid"),
    ("rain_streaks", "restoration_source", "the image with rendered rain streaks"),
    ("low_light", "restoration_source", "the image darkened as a low-light capture"),
]:
    register_node_type(_name, _group, _desc)

register_node_type("caption", "text", "a VLM caption of the image (text in meta)", "json")
register_node_type("bbox_json", "text", "grounding boxes and labels only (meta)", "json")
