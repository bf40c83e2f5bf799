"""Mining embedders: weight-free stats, a tiny random open_clip loaded from disk, MiniLM, the cache."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import mining  # noqa: F401,E402
from core.weights import MissingWeightsError
from mining.config import EmbedParams  # noqa: E402
from mining.embed import (ColourGradientStats, EmbeddingCache, MiniLMTextEmbedder, OpenClipEmbedder,  # noqa: E402
                          make_image_embedder, make_text_embedder, text_id)

TINY_CLIP = "vicl-tiny-clip"


def _photos():
    from skimage import data

    return [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]


def _brighten(im, f=1.5):
    return np.clip(im.astype(np.float32) * f, 0, 255).astype(np.uint8)


def _blur(im):
    import cv2

    return cv2.GaussianBlur(im, (0, 0), 4)


def test_colour_gradient_stats_shape_norm_determinism():
    emb = ColourGradientStats()
    x = emb.embed_images(_photos())
    assert x.dtype == np.float32 and x.ndim == 2 and x.shape[0] == 4
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(x, ColourGradientStats().embed_images(_photos()))
    assert not np.allclose(x[0], x[1])
    assert emb.key == "colour_gradient_stats-v2-s128" == make_image_embedder(EmbedParams()).key


def test_colour_gradient_stats_task_vectors_agree_within_an_edit():
    emb = ColourGradientStats()
    photos = _photos()
    base = emb.embed_images(photos)
    d_bright = emb.embed_images([_brighten(p) for p in photos]) - base
    d_blur = emb.embed_images([_blur(p) for p in photos]) - base
    d_bright /= np.linalg.norm(d_bright, axis=1, keepdims=True)
    d_blur /= np.linalg.norm(d_blur, axis=1, keepdims=True)
    same = [d_bright[i] @ d_bright[j] for i in range(4) for j in range(i + 1, 4)] + \
           [d_blur[i] @ d_blur[j] for i in range(4) for j in range(i + 1, 4)]
    cross = [d_bright[i] @ d_blur[j] for i in range(4) for j in range(4)]
    assert min(same) > max(cross)


@pytest.fixture(scope="module")
def tiny_clip_config(tmp_path_factory):
    import open_clip

    cfg_dir = tmp_path_factory.mktemp("clipcfg")
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (cfg_dir / f"{TINY_CLIP}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_dir / f"{TINY_CLIP}.json")
    return TINY_CLIP


def test_open_clip_loads_weights_from_models_dir(tiny_clip_config, tmp_path):
    import torch

    # a tiny random model saved where a user would put real weights; load() must read it back
    maker = OpenClipEmbedder(tiny_clip_config, "test", device="cpu")
    maker.load_random()
    (tmp_path / "open_clip").mkdir()
    torch.save(maker.model.state_dict(), tmp_path / "open_clip" / f"{tiny_clip_config}-test.bin")

    emb = make_image_embedder(EmbedParams(image_embedder="open_clip", clip_model=tiny_clip_config,
                                          clip_pretrained="test", models_dir=str(tmp_path)))
    emb.load()
    photos = _photos()
    x = emb.embed_images(photos)
    assert x.shape == (4, 32) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert np.allclose(x, maker.embed_images(photos), atol=1e-5)  # the saved weights, not fresh random ones
    t = make_text_embedder(EmbedParams(image_embedder="open_clip", text_embedder="open_clip",
                                       clip_model=tiny_clip_config, clip_pretrained="test",
                                       models_dir=str(tmp_path)), emb)
    t.load()
    tx = t.embed_texts(["make it brighter", "blur the photo"])
    assert tx.shape == (2, 32) and np.allclose(tx, maker.embed_texts(["make it brighter", "blur the photo"]),
                                               atol=1e-5)
    assert t.key == f"text-open_clip-{tiny_clip_config}-test"


def test_open_clip_missing_weights_names_the_file(tmp_path):
    emb = OpenClipEmbedder("ViT-L-14", "openai", models_dir=tmp_path)
    with pytest.raises(MissingWeightsError) as err:
        emb.load()
    msg = str(err.value)
    assert "timm/vit_large_patch14_clip_224.openai" in msg and "open_clip_model.safetensors" in msg
    assert str(tmp_path / "open_clip" / "ViT-L-14-openai.safetensors") in msg
    assert emb.model is None  # no silent random fallback


def test_minilm_text_embeddings():
    emb = MiniLMTextEmbedder()
    emb.load()
    x = emb.embed_texts(["make the photo brighter", "brighten the image", "convert it to black and white"])
    assert x.shape == (3, 384) and np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-4)
    assert x[0] @ x[1] > x[0] @ x[2] + 0.1
    assert make_text_embedder(EmbedParams()).key == "text-all-MiniLM-L6-v2"


def test_embedding_cache_reuse(tmp_path):
    cache = EmbeddingCache(tmp_path, "emb-x")
    assert cache.missing(["a", "b", "a"]) == ["a", "b"]
    cache.put(["b", "a"], np.array([[0, 1], [1, 0]], np.float32))
    again = EmbeddingCache(tmp_path, "emb-x")  # a re-run reads what the first wrote
    assert again.missing(["a", "b", "c"]) == ["c"]
    assert np.array_equal(again.get(["a", "b"]), [[1, 0], [0, 1]])
    again.put(["a", "c"], np.array([[9, 9], [0, 2]], np.float32))  # "a" is not overwritten
    assert np.array_equal(EmbeddingCache(tmp_path, "emb-x").get(["a", "c"]), [[1, 0], [0, 2]])
    assert len(list((tmp_path / "emb-x").glob("part-*.parquet"))) == 2
    assert text_id("x") == text_id("x") != text_id("y")
