"""Per-sample metrics for V-ICL predictions, chosen by the node type of the target cell.

Every metric takes two H x W x 3 uint8 images (prediction, ground truth at the same size)
and returns a dict of named floats. The implementations are torchmetrics' (IoU / Jaccard,
confusion matrices, PSNR, SSIM, MAPE) and scipy / scikit-image's (distance transforms,
connected components, Hungarian matching); only the glue is here.

| kind | target node types | metrics (best) | definition |
|---|---|---|---|
| mask | foreground_mask, interactive_seg_mask | iou (1) | Jaccard of the two masks at grey >= 128 (both empty: 1) |
| segments | sam2_mask, entity_seg, mask | miou (1) | colours are arbitrary ids: prediction colours binned (RGB // 64), each target segment matched one-to-one to a predicted bin by IoU (Hungarian), mean over target segments |
| semantic | uniformer | miou (1) | fixed palette: each predicted pixel takes the nearest target colour, Jaccard per target class, mean |
| boxes | detection_target, bbox | box_iou (1) | boxes = bounding boxes of the connected components (grey >= 128, area >= 0.2 % of the cell); one-to-one matching by IoU; sum of matched IoU / max(#target, #predicted) |
| edges | canny, hed, pidinet, lineart, lineart_anime, mlsd, teed, openpose | edge_f (1), edge_precision, edge_recall, edge_ois (1); edge_ods (1) per group | both maps thinned to one-pixel lines (as BSDS) and compared with BSDS's distance tolerance (0.0075 x the cell diagonal, >= 1 px): a predicted edge pixel is correct when a target edge lies within it, and the reverse for recall. edge_f: the prediction at grey >= 128. OIS: best F over the thresholds 0.1..0.9 per image; ODS: best F of the counts summed over a group. Distance-based, not BSDS's one-to-one pixel matching |
| depth | depth | abs_rel (0), delta1 (1) | maps are relative (near = bright): the prediction is aligned to the target by least-squares scale and shift, then AbsRel = mean |p - g| / g and delta1 = share of pixels with max(p/g, g/p) < 1.25, over pixels with g >= 0.05 |
| normal | normal | angle_deg (0), within_11_25 (1) | RGB -> unit vectors (v / 127.5 - 1); mean angle between them, share of pixels within 11.25 deg |
| image | every other target (image, restorations, colorisation, degradations, styles) | psnr (inf, capped at 100 dB), ssim (1) | torchmetrics PSNR (data range 255) and SSIM (Gaussian 11 x 11, sigma 1.5) on RGB |
| edit | synthetic edits (edit_*), mined edits | task_vector_cos (1) + psnr, ssim | cosine of E(B'_pred) - E(B) with the exemplar's E(A') - E(A), E the configured image embedder (weight-free colour_gradient_stats by default) |

Pose targets are scored as rendered skeletons (edges): the shards carry no keypoints, so PCK
needs the store's keypoint meta and a keypoint reader for rendered skeletons (not done).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

import training  # noqa: F401  - torchvision shim before torchmetrics imports torchvision

MASK_NODES = ("foreground_mask", "interactive_seg_mask")
SEGMENT_NODES = ("sam2_mask", "entity_seg", "mask")
SEMANTIC_NODES = ("uniformer",)
BOX_NODES = ("detection_target", "bbox")
EDGE_NODES = ("canny", "hed", "pidinet", "lineart", "lineart_anime", "mlsd", "teed", "openpose")
EDIT_GROUPS = ("synthetic_edit", "mined")

PSNR_CAP_DB = 100.0
BOX_MIN_AREA = 0.002  # of the cell: smaller components are specks, not boxes
EDGE_TOLERANCE = 0.0075  # of the diagonal (BSDS benchmark's maxDist)
DEPTH_MIN_TARGET = 0.05

# metric -> True when higher is better; the first metric of each kind is its primary one.
HIGHER_IS_BETTER = {"iou": True, "miou": True, "box_iou": True, "edge_f": True, "edge_precision": True,
                    "edge_recall": True, "edge_ois": True, "edge_ods": True, "abs_rel": False, "delta1": True, "angle_deg": False, "within_11_25": True,
                    "psnr": True, "ssim": True, "task_vector_cos": True, "clip_cos": True}
PRIMARY = {"mask": "iou", "segments": "miou", "semantic": "miou", "boxes": "box_iou", "edges": "edge_f",
           "depth": "delta1", "normal": "angle_deg", "image": "psnr", "edit": "task_vector_cos"}


def metric_kind(node: str) -> str:
    """Which metric family scores a target of node type `node`."""
    for kind, nodes in (("mask", MASK_NODES), ("segments", SEGMENT_NODES), ("semantic", SEMANTIC_NODES),
                        ("boxes", BOX_NODES), ("edges", EDGE_NODES)):
        if node in nodes:
            return kind
    if node in ("depth", "normal"):
        return node
    from core.node_types import NODE_TYPES

    nt = NODE_TYPES.get(node)
    if node.startswith("edit_") or (nt is not None and nt.group in EDIT_GROUPS):
        return "edit"
    return "image"


# -- conversions -----------------------------------------------------------------------------

def grey(a: np.ndarray) -> np.ndarray:
    """H x W float in [0, 1] (the channel mean)."""
    return a[..., :3].astype(np.float64).mean(-1) / 255.0


def binary(a: np.ndarray) -> np.ndarray:
    return grey(a) >= 0.5


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def _chw(a: np.ndarray) -> torch.Tensor:
    return _t(a[..., :3]).permute(2, 0, 1).unsqueeze(0).float()


# -- masks and segments ----------------------------------------------------------------------

def mask_iou(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    from torchmetrics.functional.classification import binary_jaccard_index

    p, g = binary(pred), binary(target)
    if not p.any() and not g.any():
        return {"iou": 1.0}
    return {"iou": float(binary_jaccard_index(_t(p).long(), _t(g).long()))}


def _labels(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H x W label ids, K x 3 colours) of the distinct colours of a label map."""
    flat = a[..., :3].reshape(-1, 3)
    colours, inverse = np.unique(flat, axis=0, return_inverse=True)
    return inverse.reshape(a.shape[:2]), colours


def _iou_matrix(pred_labels: np.ndarray, target_labels: np.ndarray, n_pred: int, n_target: int) -> np.ndarray:
    """IoU of every (target segment, predicted segment) pair from torchmetrics' confusion matrix."""
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    n = max(n_pred, n_target)
    cm = multiclass_confusion_matrix(_t(pred_labels.ravel()).long(), _t(target_labels.ravel()).long(),
                                     num_classes=n).double().numpy()[:n_target, :n_pred]  # rows: target
    union = cm.sum(1, keepdims=True) + cm.sum(0, keepdims=True) - cm
    return np.divide(cm, union, out=np.zeros_like(cm), where=union > 0)


def segments_miou(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Colour-permutation-invariant mIoU for instance/entity maps (colours are random ids)."""
    from scipy.optimize import linear_sum_assignment

    tl, tcol = _labels(target)
    q = pred[..., :3] // 64
    pl = (q[..., 0].astype(np.int64) * 16 + q[..., 1] * 4 + q[..., 2])
    _, pl = np.unique(pl.ravel(), return_inverse=True)
    pl = pl.reshape(tl.shape)
    iou = _iou_matrix(pl, tl, int(pl.max()) + 1, len(tcol))
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return {"miou": float(iou[rows, cols].sum() / len(tcol))}


def semantic_miou(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Palette mIoU: each predicted pixel takes the nearest target class colour."""
    from torchmetrics.functional.classification import multiclass_jaccard_index

    tl, tcol = _labels(target)
    flat, pal = pred[..., :3].reshape(-1, 3).astype(np.int32), tcol.astype(np.int32)
    step = max(1, 2**22 // (3 * len(pal)))  # pixels per chunk: the distance table stays ~50 MB
    pl = np.concatenate([((flat[i:i + step, None] - pal[None]) ** 2).sum(-1).argmin(1)
                         for i in range(0, len(flat), step)]).reshape(tl.shape)
    if len(tcol) == 1:
        return {"miou": float((pl == tl).mean())}
    per_class = multiclass_jaccard_index(_t(pl).long(), _t(tl).long(), num_classes=len(tcol), average="none")
    return {"miou": float(per_class.mean())}


# -- boxes -----------------------------------------------------------------------------------

def boxes_of(a: np.ndarray) -> np.ndarray:
    """(N, 4) [x0, y0, x1, y1] of the connected components of a binary rendering (filled or outlined)."""
    from skimage.measure import label, regionprops

    min_area = BOX_MIN_AREA * a.shape[0] * a.shape[1]
    out = []
    for r in regionprops(label(binary(a), connectivity=2)):
        y0, x0, y1, x1 = r.bbox
        if (y1 - y0) * (x1 - x0) >= min_area:
            out.append([x0, y0, x1, y1])
    return np.asarray(sorted(out), dtype=np.float64).reshape(-1, 4)


def box_iou(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_iou as tv_box_iou

    pb, tb = boxes_of(pred), boxes_of(target)
    if len(pb) == 0 and len(tb) == 0:
        return {"box_iou": 1.0}
    if len(pb) == 0 or len(tb) == 0:
        return {"box_iou": 0.0}
    iou = tv_box_iou(_t(tb), _t(pb)).numpy()
    rows, cols = linear_sum_assignment(iou, maximize=True)
    return {"box_iou": float(iou[rows, cols].sum() / max(len(pb), len(tb)))}


# -- edges -----------------------------------------------------------------------------------

EDGE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # of the prediction's grey level (ODS/OIS sweep)


def edge_counts(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(len(EDGE_THRESHOLDS), 4) counts [predicted edges near a target edge, predicted edges,
    target edges near a predicted edge, target edges] with the prediction thresholded at each
    level (target at 0.5), both thinned, BSDS tolerance. Summed over a set they give ODS."""
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize as thin  # Zhang's thinning; 15x faster than `thin` on solid regions

    g = thin(binary(target))
    tol = max(1.0, EDGE_TOLERANCE * math.hypot(*g.shape))
    to_target = distance_transform_edt(~g) if g.any() else np.full(g.shape, np.inf)
    level = grey(pred)
    out = np.zeros((len(EDGE_THRESHOLDS), 4), dtype=np.int64)
    for i, t in enumerate(EDGE_THRESHOLDS):
        p = thin(level >= t)
        to_pred = distance_transform_edt(~p) if p.any() else np.full(p.shape, np.inf)
        out[i] = [(to_target[p] <= tol).sum(), p.sum(), (to_pred[g] <= tol).sum(), g.sum()]
    return out


def f_from_counts(counts: np.ndarray) -> np.ndarray:
    """F per threshold from summed edge counts (precision 1 when nothing is predicted, recall 1
    when there is no target edge; F 1 when both are empty)."""
    c = np.asarray(counts, dtype=np.float64)
    precision = np.divide(c[:, 0], c[:, 1], out=np.ones(len(c)), where=c[:, 1] > 0)
    recall = np.divide(c[:, 2], c[:, 3], out=np.ones(len(c)), where=c[:, 3] > 0)
    denom = precision + recall
    return np.divide(2 * precision * recall, denom, out=np.zeros(len(c)), where=denom > 0)


def ods(counts_per_sample: list[np.ndarray]) -> float:
    """Optimal dataset scale: the best F over thresholds of the counts summed over the set."""
    return float(f_from_counts(np.sum(counts_per_sample, axis=0)).max())


def edge_f(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize as thin  # Zhang's thinning; 15x faster than `thin` on solid regions

    p, g = thin(binary(pred)), thin(binary(target))  # one-pixel-wide edges, as BSDS thins before matching
    if not p.any() and not g.any():
        return {"edge_f": 1.0, "edge_precision": 1.0, "edge_recall": 1.0}
    if not p.any() or not g.any():
        return {"edge_f": 0.0, "edge_precision": float(not p.any()), "edge_recall": float(not g.any())}
    tol = max(1.0, EDGE_TOLERANCE * math.hypot(*g.shape))
    to_target = distance_transform_edt(~g)  # distance of every pixel to the nearest target edge
    to_pred = distance_transform_edt(~p)
    precision = float((to_target[p] <= tol).mean())
    recall = float((to_pred[g] <= tol).mean())
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {"edge_f": f, "edge_precision": precision, "edge_recall": recall}


def edge_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """F at the fixed threshold 0.5 and OIS (the best F over EDGE_THRESHOLDS for this image)."""
    return {**edge_f(pred, target), "edge_ois": float(f_from_counts(edge_counts(pred, target)).max())}


# -- depth, normals --------------------------------------------------------------------------

def align_scale_shift(pred: np.ndarray, target: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """s * pred + t with (s, t) least squares against target over `valid` pixels."""
    a = np.stack([pred[valid], np.ones(int(valid.sum()))], 1)
    (s, t), *_ = np.linalg.lstsq(a, target[valid], rcond=None)
    return s * pred + t


def depth_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    from torchmetrics.functional import mean_absolute_percentage_error

    g, p = grey(target), grey(pred)
    valid = g >= DEPTH_MIN_TARGET
    if valid.sum() < 2:
        return {"abs_rel": float("nan"), "delta1": float("nan")}
    aligned = np.clip(align_scale_shift(p, g, valid), 1e-3, None)
    pv, gv = aligned[valid], g[valid]
    abs_rel = float(mean_absolute_percentage_error(_t(pv), _t(gv)))
    delta1 = float((np.maximum(pv / gv, gv / pv) < 1.25).mean())
    return {"abs_rel": abs_rel, "delta1": delta1}


def normal_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    vp = _t(pred[..., :3].astype(np.float64) / 127.5 - 1.0)
    vg = _t(target[..., :3].astype(np.float64) / 127.5 - 1.0)
    valid = vg.norm(dim=-1) > 0.5  # black (0, 0, 0) = no normal
    if not valid.any():
        return {"angle_deg": float("nan"), "within_11_25": float("nan")}
    cos = torch.nn.functional.cosine_similarity(vp[valid], vg[valid], dim=-1, eps=1e-8).clamp(-1, 1)
    angle = torch.rad2deg(torch.arccos(cos))
    return {"angle_deg": float(angle.mean()), "within_11_25": float((angle < 11.25).double().mean())}


# -- images ----------------------------------------------------------------------------------

def image_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    p, g = _chw(pred), _chw(target)
    psnr = min(PSNR_CAP_DB, float(peak_signal_noise_ratio(p, g, data_range=255.0)))  # identical: inf -> cap
    if min(p.shape[-2:]) >= 11:
        ssim = float(structural_similarity_index_measure(p, g, data_range=255.0))
    else:  # SSIM's 11 x 11 window does not fit
        ssim = float("nan")
    return {"psnr": psnr, "ssim": ssim}


def task_vector_cos(embedder, pred: np.ndarray, query: np.ndarray, exemplar_src: np.ndarray,
                    exemplar_tgt: np.ndarray) -> float:
    """cos(E(B'_pred) - E(B), E(A') - E(A)): does the prediction apply the exemplar's edit?"""
    e = embedder.embed_images([pred, query, exemplar_src, exemplar_tgt]).astype(np.float64)
    u, v = e[0] - e[1], e[3] - e[2]
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    return float(u @ v / (nu * nv)) if nu > 1e-12 and nv > 1e-12 else 0.0


@dataclass
class Context:
    """The other cells a metric may need (edit metrics: A, A', B)."""

    query: np.ndarray | None = None
    exemplar_src: np.ndarray | None = None
    exemplar_tgt: np.ndarray | None = None


KIND_FUNCTIONS = {"mask": mask_iou, "segments": segments_miou, "semantic": semantic_miou, "boxes": box_iou,
                  "edges": edge_metrics, "depth": depth_metrics, "normal": normal_metrics, "image": image_metrics}


def score(node: str, pred: np.ndarray, target: np.ndarray, *, context: Context | None = None,
          embedder=None, perceptual=None) -> dict[str, float]:
    """All metrics of the target's kind for one prediction (resized to the target first)."""
    pred = fit_to(pred, target.shape[:2])
    kind = metric_kind(node)
    if kind == "edit":
        out = image_metrics(pred, target)
        c = context or Context()
        if embedder is not None and c.query is not None and c.exemplar_src is not None and c.exemplar_tgt is not None:
            out = {"task_vector_cos": task_vector_cos(embedder, pred, c.query, c.exemplar_src, c.exemplar_tgt), **out}
    else:
        out = KIND_FUNCTIONS[kind](pred, target)
    if perceptual is not None and kind in ("image", "edit"):
        e = perceptual.embed_images([pred, target]).astype(np.float64)
        out["clip_cos"] = float(e[0] @ e[1] / max(np.linalg.norm(e[0]) * np.linalg.norm(e[1]), 1e-12))
    return out


def fit_to(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 array at (H, W): predictions from other models may come at any size."""
    from PIL import Image

    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, -1)
    a = a[..., :3]
    if a.shape[:2] == tuple(hw):
        return a
    return np.asarray(Image.fromarray(a).resize((hw[1], hw[0]), Image.Resampling.BICUBIC))


def better(metric: str, a: float, b: float) -> bool:
    """a is strictly better than b for `metric`."""
    return a > b if HIGHER_IS_BETTER.get(metric, True) else a < b
