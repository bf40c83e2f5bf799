"""Leak-free splits on a corpus with planted near-duplicates (skimage photos, weight-free embedding)."""

import io

import numpy as np
import pytest
from PIL import Image

from pipelines.sampling import sample
from pipelines.sampling_params import SamplerParams
from pipelines.splits import assign_splits, leakage_report, near_duplicate_groups
from pipelines.tasks import explicit_task

THRESHOLD = 0.95


def _near_duplicate(rgb: np.ndarray, k: int) -> np.ndarray:
    """A re-encoded, slightly brightened and resized copy: the same photo to a person."""
    im = Image.fromarray(np.clip(rgb.astype(np.int16) + 4 + k, 0, 255).astype(np.uint8))
    im = im.resize((im.width - 3, im.height - 2), Image.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=75)
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.fixture(scope="module")
def corpus():
    import skimage.data

    from mining.embed import ColourGradientStats

    photos = [skimage.data.astronaut(), skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket(),
              np.stack([skimage.data.camera()] * 3, -1)]
    originals = []
    for p in photos:  # 4 distinct quadrant crops of each photo
        h, w = p.shape[0] // 2, p.shape[1] // 2
        originals += [p[y:y + h, x:x + w] for y in (0, h) for x in (0, w)]
    images, planted = {}, []
    for k, rgb in enumerate(originals):
        images[f"orig{k:02d}"] = rgb
        images[f"dup{k:02d}"] = _near_duplicate(rgb, k % 3)
        planted.append((f"orig{k:02d}", f"dup{k:02d}"))
    embedder = ColourGradientStats(96)
    ids = sorted(images)
    emb = np.stack([embedder.embed_one(images[i]) for i in ids])
    return ids, emb, planted


def test_planted_near_duplicates_are_grouped_distinct_photos_are_not(corpus):
    ids, emb, planted = corpus
    groups = near_duplicate_groups(ids, emb, THRESHOLD)
    assert all(groups[a] == groups[b] for a, b in planted)
    assert len(set(groups.values())) >= 15  # 20 distinct crops; a few similar quadrants may merge


def test_zero_leakage_with_groups_and_leakage_without(corpus):
    ids, emb, _ = corpus
    task = explicit_task("image_to_canny", ["image", "canny"])
    index = {"image": set(ids), "canny": set(ids)}
    params = SamplerParams(samples_per_task=60, eval_fraction=0.3, seed=1)
    groups = near_duplicate_groups(ids, emb, THRESHOLD)
    split_of = assign_splits(groups, params.eval_fraction, params.seed)
    samples = sample(index, [task], params, split_of=split_of, groups=groups)
    report = leakage_report(samples, ids, emb, THRESHOLD)
    assert report["eval_samples_checked"] > 0
    assert report["eval_samples_with_near_duplicate_in_train"] == 0
    assert report["eval_samples_sharing_an_image_with_train"] == 0
    # control: splitting image by image (no grouping) leaks planted duplicates into eval
    naive = assign_splits({i: i for i in ids}, params.eval_fraction, params.seed)
    leaky = leakage_report(sample(index, [task], params, split_of=naive), ids, emb, THRESHOLD)
    assert leaky["eval_samples_with_near_duplicate_in_train"] > 0


def test_split_of_a_group_does_not_depend_on_other_images(corpus):
    ids, emb, _ = corpus
    full = assign_splits(near_duplicate_groups(ids, emb, THRESHOLD), 0.3, 0)
    half = [i for i in ids if i.endswith(("0", "2", "4", "6", "8"))]
    part = assign_splits(near_duplicate_groups(half, emb[[ids.index(i) for i in half]], THRESHOLD), 0.3, 0)
    # groups whose smallest member survives keep their split
    groups = near_duplicate_groups(ids, emb, THRESHOLD)
    assert all(part[i] == full[i] for i in half if groups[i] in half)
