"""The one registry of node types: every kind of image (or record) a graph node can hold.

Names follow Graph200K where it has the node (anchors.md §1.1) so its exports line up,
and VIRAL (§1.3) for the rest. `group` is the meta-task group the sampler and the
task taxonomy key on. Plugins add their own with `register_node_type`.
"""

from __future__ import annotations

from dataclasses import dataclass


RESAMPLE_KINDS = ("continuous", "lines", "labels")


@dataclass(frozen=True)
class NodeType:
    name: str
    # image | condition | degradation | restoration_source | edit | synthetic_edit | style | reference | viral |
    # mined | text | generative_variant (further generative outputs) | synthetic_pair (VIRAL's generated pairs)
    group: str
    description: str
    stored_as: str = "png"  # png (lossless map/mask) | photo (codec from params) | json (metadata only)
    # How a map of this type is resized (export cells, core/map_resize.py): "lines" keeps
    # one-pixel lines (max over each footprint), "labels" keeps only original values (nearest),
    # "continuous" (photos, depth, normals) Lanczos / area.
    resample: str = "continuous"


NODE_TYPES: dict[str, NodeType] = {}


def register_node_type(name: str, group: str, description: str, stored_as: str = "png",
                       resample: str = "continuous") -> NodeType:
    if resample not in RESAMPLE_KINDS:
        raise ValueError(f"node type {name!r}: resample must be one of {', '.join(RESAMPLE_KINDS)}, got {resample!r}")
    node = NodeType(name, group, description, stored_as, resample)
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


def resample_kind(name: str) -> str:
    """The resample kind of a node type; "continuous" for names not registered (plugins' photos)."""
    node = NODE_TYPES.get(name)
    return node.resample if node is not None else "continuous"


def names_in_group(group: str) -> list[str]:
    return [n for n, t in NODE_TYPES.items() if t.group == group]


register_node_type("image", "image", "the normalised source photograph (centre of the graph)", "photo")

# Graph200K's 12 conditions, with the resample kind of each map.
for _name, _desc, _kind in [
    ("canny", "Canny edges (100/200 at 512 px)", "lines"),
    ("hed", "HED soft edges", "lines"),
    ("mlsd", "M-LSD straight line segments", "lines"),
    ("depth", "relative depth (Depth Anything V2 by default)", "continuous"),
    ("normal", "surface normals", "continuous"),
    ("openpose", "rendered OpenPose body skeleton (keypoints in meta)", "lines"),
    ("sam2_mask", "automatic SAM masks, each in a distinct colour", "labels"),
    ("uniformer", "semantic segmentation with a fixed palette", "labels"),
    ("mask", "open-world masks: VLM grounding boxes then SAM, coloured per object", "labels"),
    ("bbox", "grounding boxes drawn on black (boxes and labels in meta)", "lines"),
    ("foreground", "image x foreground mask", "continuous"),
    ("background", "image x (1 - foreground mask)", "continuous"),
]:
    register_node_type(_name, "condition", _desc, resample=_kind)

# Further conditions the annotators produce beyond Graph200K's twelve.
for _name, _desc, _kind in [
    ("pidinet", "PiDiNet soft edges", "lines"),
    ("lineart", "line art (standard)", "lines"),
    ("lineart_anime", "line art (anime model)", "lines"),
    ("teed", "TEED edges", "lines"),
    ("foreground_mask", "binary foreground mask", "labels"),
]:
    register_node_type(_name, "condition", _desc, resample=_kind)

# Graph200K's 32 degradations (restoration sources).
for _name in [
    "blur", "compression", "SRx2", "SRx4", "pixelate", "Defocus", "GaussianBlur", "oversharpen",
    "GaussianNoise", "PoissonNoise", "SPNoise", "mosaic", "contrast_strengthen", "contrast_weaken",
    "quantization", "JPEG", "brighten", "darken", "LowLight", "saturate_strengthen", "saturate_weaken",
    "gray", "ColorDistortion", "Inpainting", "rotate90", "rotate180", "rotate270", "Barrel", "Pincushion",
    "Elastic", "Rain", "Frost",
]:
    register_node_type(_name, "degradation", f"Graph200K degradation {_name}")

# Graph200K's edits, styles and reference (the edits and styles are made by annotators/generative;
# a user's own can be ingested as nodes instead).
register_node_type("FillEdit", "edit", "subject replaced by inpainting, background kept")
register_node_type("DepthEdit", "edit", "background changed by depth-conditioned regeneration")
register_node_type("InstantStyle", "style", "stylised image, semantics kept")
register_node_type("ReduxStyle", "style", "stylised image, semantics changed")
register_node_type("reference", "reference", "the subject image, for identity preservation")

# Further outputs of the generative annotators (annotators/generative/nodes.py): the store keeps
# one row per (image, node type), so output k of a node is `<Node>_k` and a style output's
# reference is `<Node>_ref(_k)`. Only output 0 is in the edit/style group the task families select.
for _base, _n in (("FillEdit", 5), ("InstantStyle", 3), ("ReduxStyle", 3)):
    for _i in range(1, _n):
        register_node_type(f"{_base}_{_i}", "generative_variant",
                           f"{_base} output {_i} (further generation of the image)")
for _base in ("InstantStyle", "ReduxStyle"):
    for _i in range(3):
        _ref, _of = (f"{_base}_ref", _base) if _i == 0 else (f"{_base}_ref_{_i}", f"{_base}_{_i}")
        register_node_type(_ref, "generative_variant", f"style reference of {_of}")
# VIRAL's synthesised stream (annotators/generative/analogous_pairs.py): K generated (A, A') pairs per slot.
for _i in range(2):
    _k = "" if _i == 0 else f"_{_i}"
    register_node_type(f"analogous_source{_k}", "synthetic_pair",
                       f"generated scene A of analogous pair {_i} (VIRAL's synthesised stream)")
    register_node_type(f"analogous_edit{_k}", "synthetic_pair",
                       f"A' of analogous pair {_i}: the instruction applied to A by an editing model")

# VIRAL's standard-task targets and restoration sources.
for _name, _group, _desc, _kind in [
    ("detection_target", "viral", "filled white rectangle on black around one category", "labels"),
    ("interactive_seg_source", "viral", "the image with a visible red box around one object", "continuous"),
    ("interactive_seg_mask", "viral", "the SAM mask of the boxed object", "labels"),
    ("entity_seg", "viral", "each entity mask in a random distinct colour", "labels"),
    ("watermark", "restoration_source", "the image with a procedurally drawn logo/text overlaid", "continuous"),
    ("rain_streaks", "restoration_source", "the image with rendered rain streaks", "continuous"),
    ("low_light", "restoration_source", "the image darkened as a low-light capture", "continuous"),
]:
    register_node_type(_name, _group, _desc, resample=_kind)

# Mined open-domain edit pairs, keyed by pair id (the mine stage, pipelines/stages/mine.py).
MINED_SOURCE = register_node_type("mined_source", "mined", "source image A of a mined edit pair", "photo").name
MINED_EDIT = register_node_type("mined_edit", "mined", "edited image A' of a mined edit pair", "photo").name

register_node_type("caption", "text", "a VLM caption of the image (text in meta)", "json")
register_node_type("bbox_json", "text", "grounding boxes and labels only (meta)", "json")
register_node_type("image_quality", "text", "weight-free quality scores of the source photo (meta only)", "json")
register_node_type("image_quality_clip", "text", "CLIP-IQA score of the source photo (meta only)", "json")


# --- VisRel's two axes (anchors.md §1.2) ------------------------------------------------------
# Every node type sits on semantic complexity (pixel -> structure -> object) and spatial
# locality (local -> regional -> global). A task takes the axes of the node that carries its
# transformation (see pipelines/tasks.py). Node types without an entry take their group's.
SEMANTIC_LEVELS = ("pixel", "structure", "object")
LOCALITY_LEVELS = ("local", "regional", "global")

_GROUP_AXES = {
    "image": ("pixel", "global"), "condition": ("structure", "local"), "degradation": ("pixel", "local"),
    "restoration_source": ("pixel", "regional"), "edit": ("object", "regional"), "style": ("structure", "global"),
    "reference": ("object", "global"), "viral": ("object", "regional"), "synthetic_edit": ("pixel", "global"),
    "mined": ("object", "global"), "text": ("object", "global"),
    "generative_variant": ("object", "regional"), "synthetic_pair": ("object", "global"),
}

NODE_AXES: dict[str, tuple[str, str]] = {
    # conditions: edges are local structure, geometry maps global structure, masks objects
    **dict.fromkeys(["canny", "hed", "mlsd", "pidinet", "lineart", "lineart_anime", "teed"], ("structure", "local")),
    "depth": ("structure", "global"), "normal": ("structure", "global"),
    "openpose": ("object", "regional"), "sam2_mask": ("object", "regional"), "uniformer": ("object", "global"),
    **dict.fromkeys(["mask", "bbox", "foreground", "background", "foreground_mask"], ("object", "regional")),
    # degradations: per-pixel noise/blur/codec are local; photometric and geometric ones global
    **dict.fromkeys(["blur", "compression", "SRx2", "SRx4", "pixelate", "Defocus", "GaussianBlur", "oversharpen",
                     "GaussianNoise", "PoissonNoise", "SPNoise", "mosaic", "JPEG"], ("pixel", "local")),
    **dict.fromkeys(["contrast_strengthen", "contrast_weaken", "quantization", "brighten", "darken", "LowLight",
                     "saturate_strengthen", "saturate_weaken", "gray", "ColorDistortion"], ("pixel", "global")),
    **dict.fromkeys(["rotate90", "rotate180", "rotate270", "Barrel", "Pincushion", "Elastic"],
                    ("structure", "global")),
    **dict.fromkeys(["Inpainting", "Rain", "Frost"], ("pixel", "regional")),
    "FillEdit": ("object", "regional"), "DepthEdit": ("object", "global"),
    "InstantStyle": ("structure", "global"), "ReduxStyle": ("object", "global"), "reference": ("object", "global"),
    "detection_target": ("object", "regional"), "interactive_seg_source": ("object", "local"),
    "interactive_seg_mask": ("object", "local"), "entity_seg": ("object", "global"),
    "watermark": ("pixel", "regional"), "rain_streaks": ("pixel", "regional"), "low_light": ("pixel", "global"),
    # synthetic edits of annotators/synthetic_edits.py
    "edit_sepia": ("pixel", "global"), "edit_hue_rotate": ("pixel", "global"), "edit_vignette": ("pixel", "global"),
    "edit_flip": ("structure", "global"), "edit_pencil_sketch": ("structure", "global"),
    "edit_add_shape": ("object", "regional"),
}


def axes_of(name: str) -> tuple[str, str]:
    """(semantic level, locality level) of a node type (its group's default when not listed)."""
    if name in NODE_AXES:
        return NODE_AXES[name]
    node = NODE_TYPES.get(name)
    return _GROUP_AXES.get(node.group if node else "", ("pixel", "global"))


def set_axes(name: str, semantic: str, locality: str) -> None:
    """For plugins: place a node type of their own on the two axes."""
    if semantic not in SEMANTIC_LEVELS or locality not in LOCALITY_LEVELS:
        raise ValueError(f"axes must be one of {SEMANTIC_LEVELS} x {LOCALITY_LEVELS}")
    NODE_AXES[name] = (semantic, locality)
