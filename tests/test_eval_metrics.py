"""Each metric on hand-made cases with known answers."""

import numpy as np
import pytest

from training import metrics as M


def rgb(a) -> np.ndarray:
    a = np.asarray(a)
    return np.repeat(a[..., None], 3, -1).astype(np.uint8) if a.ndim == 2 else a.astype(np.uint8)


def square(h=64, w=64, box=(16, 16, 48, 48), fill=True) -> np.ndarray:
    x0, y0, x1, y1 = box
    a = np.zeros((h, w), np.uint8)
    if fill:
        a[y0:y1, x0:x1] = 255
    else:
        a[y0:y1, [x0, x1 - 1]] = 255
        a[[y0, y1 - 1], x0:x1] = 255
    return rgb(a)


def test_metric_kind_by_node():
    assert M.metric_kind("foreground_mask") == "mask" and M.metric_kind("entity_seg") == "segments"
    assert M.metric_kind("uniformer") == "semantic" and M.metric_kind("detection_target") == "boxes"
    assert M.metric_kind("canny") == "edges" and M.metric_kind("depth") == "depth"
    assert M.metric_kind("normal") == "normal" and M.metric_kind("image") == "image"
    assert M.metric_kind("GaussianBlur") == "image" and M.metric_kind("edit_brighten") == "edit"
    assert M.metric_kind("mined_edit") == "edit"


def test_mask_iou_perfect_inverted_half():
    m = square()
    assert M.mask_iou(m, m)["iou"] == 1.0
    assert M.mask_iou(255 - m, m)["iou"] == 0.0  # inverted mask
    half = square(box=(16, 16, 32, 48))
    assert M.mask_iou(half, m)["iou"] == pytest.approx(0.5)
    empty = np.zeros_like(m)
    assert M.mask_iou(empty, empty)["iou"] == 1.0


def test_box_iou_shifted_box():
    t = square(box=(10, 10, 30, 30))
    assert M.box_iou(t, t)["box_iou"] == 1.0
    shifted = square(box=(20, 10, 40, 30))  # half the width over: IoU = 200 / 600
    assert M.box_iou(shifted, t)["box_iou"] == pytest.approx(1 / 3)
    outline = square(box=(10, 10, 30, 30), fill=False)  # Graph200K's outlined boxes give the same box
    assert M.box_iou(outline, t)["box_iou"] == 1.0
    two = np.maximum(t, square(box=(40, 40, 60, 60)))  # an extra false box halves the score
    assert M.box_iou(two, t)["box_iou"] == pytest.approx(0.5)
    assert M.box_iou(np.zeros_like(t), t)["box_iou"] == 0.0


def test_segments_miou_is_colour_permutation_invariant():
    t = np.zeros((32, 32, 3), np.uint8)
    t[:, :16] = (200, 30, 30)
    t[:, 16:] = (30, 30, 200)
    swapped = t[:, ::-1].copy()[:, ::-1]
    swapped[:, :16], swapped[:, 16:] = (30, 220, 30), (220, 220, 30)  # same segments, other colours
    assert M.segments_miou(swapped, t)["miou"] == pytest.approx(1.0)
    assert M.segments_miou(np.full_like(t, 90), t)["miou"] == pytest.approx(0.5 / 2 * 2 / 2)  # one segment hit
    # semantic palette: colours mean classes, so swapping them is wrong
    assert M.semantic_miou(t, t)["miou"] == 1.0
    assert M.semantic_miou(t[:, ::-1], t)["miou"] == 0.0


def test_edge_f_tolerance():
    t = np.zeros((100, 100), np.uint8)
    t[50, 10:90] = 255
    t = rgb(t)
    assert M.edge_f(t, t)["edge_f"] == 1.0
    near = np.roll(t, 1, axis=0)  # one pixel off: inside the tolerance (0.0075 x 141 = 1.06 px)
    assert M.edge_f(near, t)["edge_f"] == 1.0
    far = np.roll(t, 10, axis=0)
    assert M.edge_f(far, t)["edge_f"] == 0.0
    r = M.edge_f(np.zeros_like(t), t)
    assert r["edge_f"] == 0.0 and r["edge_recall"] == 0.0


def test_depth_off_by_scale_and_shift_is_perfect():
    yy, xx = np.mgrid[0:48, 0:48]
    g = (60 + 3 * xx + yy).astype(np.uint8)
    pred = (0.5 * g.astype(np.float64) + 20).round().astype(np.uint8)  # affine: aligned away
    r = M.depth_metrics(rgb(pred), rgb(g))
    assert r["abs_rel"] < 0.01 and r["delta1"] == 1.0
    other = M.depth_metrics(rgb((255 - 4 * yy).astype(np.uint8)), rgb(g))  # another layout: not affine
    assert other["delta1"] < 0.9 and other["abs_rel"] > 0.1
    flat = M.depth_metrics(np.full_like(rgb(g), 128), rgb(g))  # a constant map aligns to the mean
    assert flat["abs_rel"] > 0.05 and flat["delta1"] < 1.0


def test_normal_angles():
    up = np.zeros((8, 8, 3), np.uint8)
    up[...] = (128, 128, 255)  # (0, 0, 1)
    side = up.copy()
    side[...] = (255, 128, 128)  # (1, 0, 0)
    assert M.normal_metrics(up, up)["angle_deg"] == pytest.approx(0.0, abs=0.5)
    r = M.normal_metrics(side, up)
    assert r["angle_deg"] == pytest.approx(90.0, abs=0.5) and r["within_11_25"] == 0.0


def test_image_metrics_perfect_and_constant():
    from skimage import data

    t = data.astronaut()[::8, ::8]
    r = M.image_metrics(t, t)
    assert r["psnr"] == M.PSNR_CAP_DB and r["ssim"] == pytest.approx(1.0)
    const = np.full_like(t, int(t.mean()))
    c = M.image_metrics(const, t)
    mse = ((const.astype(float) - t) ** 2).mean()
    assert c["psnr"] == pytest.approx(10 * np.log10(255 ** 2 / mse), rel=1e-4)
    assert c["ssim"] < 0.2


def test_task_vector_cos_and_score_dispatch():
    from mining.embed import ColourGradientStats
    from skimage import data

    emb = ColourGradientStats(64)
    a, b = data.astronaut()[::8, ::8], data.chelsea()[:64, :64]
    bright = lambda x: np.clip(x.astype(int) + 60, 0, 255).astype(np.uint8)  # noqa: E731
    ctx = M.Context(query=b, exemplar_src=a, exemplar_tgt=bright(a))
    good = M.score("edit_brighten", bright(b), bright(b), context=ctx, embedder=emb)
    wrong = M.score("edit_brighten", (b * 0.5).astype(np.uint8), bright(b), context=ctx, embedder=emb)
    assert good["task_vector_cos"] > 0.8 > wrong["task_vector_cos"]
    assert set(M.score("canny", a, a)) == {"edge_f", "edge_precision", "edge_recall", "edge_ois"}
    assert M.score("image", a[::2, ::2], a)["psnr"] > 15  # a prediction at another size is resized first


def test_edge_ois_and_ods_sweep_the_threshold():
    t = np.zeros((100, 100), np.uint8)
    t[50, 10:90] = 255
    soft = t // 4  # the right edge at a low grey level: missed at 0.5, found at 0.1-0.2
    r = M.edge_metrics(rgb(soft), rgb(t))
    assert r["edge_f"] == 0.0 and r["edge_ois"] == 1.0
    counts = [M.edge_counts(rgb(soft), rgb(t)), M.edge_counts(rgb(t), rgb(t))]
    assert counts[0].shape == (len(M.EDGE_THRESHOLDS), 4)
    assert M.ods(counts) == 1.0  # one threshold (0.1-0.2) is right for both images
    far = np.roll(t, 10, axis=0)
    assert M.ods([M.edge_counts(rgb(far), rgb(t))]) == 0.0
