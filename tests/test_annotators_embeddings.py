"""Embedding and hash annotators: unit vectors from real photos, the missing-weights error, dHash stability."""

import numpy as np
import pytest

from core.weights import MissingWeightsError
from annotators.embeddings import ClipEmbedder, ColourStatsEmbedder, DHash, DinoV2Embedder
from annotators.runtime import decode_vector, encode_output
from pipelines.sources import embedded_refs, render_embedded
from core.images import decode_rgb

PHOTOS = [decode_rgb(render_embedded(r)) for r in embedded_refs(4, 96)]


def run(annotator, node):
    outs = annotator.annotate([{"image": p} for p in PHOTOS], [f"id{i}" for i in range(len(PHOTOS))])
    return np.stack([o[node].array for o in outs])


def test_colour_stats_vectors_are_unit_float32_and_stored_losslessly():
    a = ColourStatsEmbedder()
    a.load()
    vectors = run(a, "embedding_colour_stats")
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    row = encode_output(a.annotate([{"image": PHOTOS[0]}], ["x"])[0]["embedding_colour_stats"])
    assert row["format"] == "f32" and np.array_equal(decode_vector(row["data"]), vectors[0])
    assert not np.allclose(vectors[0], vectors[1])  # different photos, different vectors


@pytest.mark.parametrize("cls,node", [(ClipEmbedder, "embedding_clip"), (DinoV2Embedder, "embedding_dinov2")])
def test_model_embedders_run_the_real_path_with_tiny_random_weights(cls, node, one_torch_thread, tmp_path):
    a = cls(models_dir=tmp_path)
    with pytest.raises(MissingWeightsError, match="vicl models fetch"):
        a.load()  # no weights on disk: a named error, never random weights
    a.load_random("tiny")
    first, again = run(a, node), run(a, node)
    assert first.dtype == np.float32 and np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-4)
    assert np.array_equal(first, again)


def test_dhash_is_8_bytes_stable_under_recompression_and_differs_between_photos():
    import cv2

    a = DHash()
    codes = run(a, "image_dhash")
    assert codes.shape == (4, 8) and codes.dtype == np.uint8
    ok, jpg = cv2.imencode(".jpg", PHOTOS[0][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 60])
    requantised = a.annotate([{"image": cv2.imdecode(jpg, cv2.IMREAD_COLOR)[..., ::-1]}], ["x"])[0]["image_dhash"].array
    bits = lambda x, y: int(np.unpackbits(np.bitwise_xor(x, y)).sum())  # noqa: E731
    assert bits(requantised, codes[0]) <= 6 < min(bits(codes[0], c) for c in codes[1:])
