"""Decontamination (issue 25): store images near a benchmark image take part in no split.

`sample.exclude` lists benchmark inputs: folders of image files and WebDataset tars (a `.tar`
path or glob). The sample stage reads them itself (they are not store images), through the
project's source readers (pipelines/sources.py), normalises each like ingest would under the
build's `ingest` params (decode, shrink to `max_side`, encode as `image_format` at `quality`,
decode again: what an annotator of the store saw), and computes
- the split embedder's vector, with the same annotator, version, params and code as the store's
  embedding node (`annotator.json` of the catalog's folder, built by annotators/runtime.py);
- the dHash64 (core/perceptual_hash.py), what the `image_dhash` node holds.

A store image is contaminated when
- its split embedding has cosine >= `sample.near_duplicate_threshold` with some benchmark image
  (the threshold that builds the near-duplicate groups: a benchmark copy must be as far from the
  store as an eval image is from train), or
- its dHash64 is within `sample.leakage_max_hamming` bits of some benchmark image's (the threshold
  of the dHash separation and of the leakage report).
Either signal suffices (a 90 % crop keeps the embedding but moves the dHash; a grey copy keeps the
dHash but moves the colour statistics). The images of a record that holds a contaminated image (an
edit pair's source and edited image, a subject's views) are excluded with it (reason `record`): a
pair or a subject shows both.

The embedding search is faiss over the benchmark vectors (exact up to 20,000 benchmark images, an
inverted file above, as pipelines/splits.py), the store's images as queries in blocks; each
candidate's cosine is re-computed in float64, so whether an image counts never depends on faiss's
arithmetic. The dHash search is splits.codes_nearest (faiss multi-hash, exact). 10^6 store images
against 10^4 benchmark images is one pass over the store.

A benchmark file that cannot be read (missing, corrupt, a tar member that is a link) is a
ParamsError naming it: the build was asked to decontaminate against it, so skipping it silently
would leave its copies in. Files of a folder that are not images by their extension, and a tar's
non-image members, are not benchmark images (counted as `skipped`).

The benchmark vectors are cached in the samples folder (`benchmark_vectors.parquet`, keyed by each
file's reference and stamp, the embedder's and dHash's store folders and the normalisation),
written with the rest of the set, so a re-run reads only new or changed benchmark files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.executor import resolve_device
from pipelines.params import ParamsError, SourceParams
from pipelines.splits import EXACT_MAX_N, _build_index, codes_nearest, merge_groups, unit_rows

EXCLUDED = "excluded"  # the split label of an excluded image: no task, edit pair or episode draws from it
BENCHMARK_EXTENSIONS = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"]
NORMALISATION_VERSION = "1"  # bump when the benchmark normalisation below changes
_READ_CHUNK = 256  # benchmark files read, decoded and embedded at once
# benchmark candidates per store image whose cosine is re-checked in float64: the float32 nearest only
# (k = 4 costs twice the search; it would matter only for two benchmark images within float32 error)
_K = 1
_QUERY_BLOCK = 8192  # store images per faiss search (bounds the float64 re-check's buffers)
_IMAGE_FIELD = re.compile(r"(^|_)image($|_)")  # a row field naming a store image (source_image_a, ...)

EXCLUDED_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("reason", pa.string()),  # embedding | dhash | embedding+dhash | record
    ("benchmark", pa.string()),  # the matched benchmark image (the embedding match first); null for record
    ("cosine", pa.float64()),  # split-embedding cosine to that benchmark image (null: record, or no embedding)
    ("hamming", pa.int64()),  # dHash64 bits to that benchmark image (null: record, or no hash)
    ("via", pa.string()),  # reason record: the contaminated image of the same record
])
CACHE_SCHEMA = pa.schema([("ref", pa.string()), ("stamp", pa.string()), ("key", pa.string()),
                          ("embedding", pa.list_(pa.float32())), ("dhash", pa.binary(8))])


# --- the benchmark inputs --------------------------------------------------------------------

def source_of(path: str) -> SourceParams:
    """The reader of one `sample.exclude` entry: a `.tar` path or glob is WebDataset, else a folder."""
    kind = "webdataset" if path.lower().endswith(".tar") else "folder"
    return SourceParams(kind=kind, path=path, image_extensions=BENCHMARK_EXTENSIONS, follow_links=True)


def _is_image_name(name: str) -> bool:
    base = os.path.basename(name.rsplit("#", 1)[-1])
    return "." in base and base.rsplit(".", 1)[-1].lower() in BENCHMARK_EXTENSIONS


def _check(i: int, source: SourceParams) -> None:
    from pipelines.sources import check_source

    problem = check_source(source)
    if problem:
        raise ParamsError(f"sample.exclude.{i}: {source.path!r}: {problem}")


def benchmark_fingerprint(exclude: list[str]) -> str:
    """Digest of what the benchmark inputs are (stat only: file names, sizes, times): a change re-samples."""
    from pipelines.sources import _container_files, _expand

    digest = hashlib.sha256()
    for i, path in enumerate(exclude):
        source = source_of(path)
        _check(i, source)
        if source.kind == "folder":
            root = _expand(path)[0]
            files = sorted(os.path.join(d, f) for d, _, names in os.walk(root, followlinks=True) for f in names)
        else:
            files = _container_files(source)
        for f in files:
            try:
                st = os.stat(f)
                digest.update(f"{i}\0{f}\0{st.st_size}:{st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{i}\0{f}\0unreadable\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class Benchmark:
    refs: list[str]  # each benchmark image, as reported (relative to the working directory where given so)
    embeddings: np.ndarray  # (M, d) float32, unit rows
    codes: np.ndarray  # (M, 8) uint8 dHash64
    sources: list[dict] = field(default_factory=list)  # per exclude entry: path, kind, images, skipped
    computed: int = 0  # images read and embedded in this run (the others came from the cache)
    cache: pa.Table | None = None  # the cache rows of every benchmark image (written with the set)


def _fail(i: int, ref: str, why: str) -> ParamsError:
    return ParamsError(f"sample.exclude.{i}: benchmark image {ref}: {why} (fix or remove it: the build was asked "
                       f"to decontaminate against it)")


def list_benchmark(exclude: list[str]) -> list[tuple[SourceParams, list, int]]:
    """(source, image entries, skipped non-image files) of each exclude entry; an entry that cannot be
    taken (unreadable file, corrupt tar, a link member) is a ParamsError naming it."""
    from pipelines.sources import list_entries

    out = []
    for i, path in enumerate(exclude):
        source = source_of(path)
        _check(i, source)
        entries, skipped = [], 0
        for e in list_entries(source):
            reason = (e.reject or "").split(":", 1)[0]
            if reason == "not_an_image" or (source.kind == "folder" and not _is_image_name(e.ref)):
                skipped += 1
            elif e.reject is not None:
                raise _fail(i, e.ref, e.reject)
            else:
                entries.append(e)
        if not entries:
            raise ParamsError(f"sample.exclude.{i}: {path!r}: no benchmark images (files ending "
                              f"{', '.join('.' + x for x in BENCHMARK_EXTENSIONS)})")
        out.append((source, entries, skipped))
    return out


def normalised(data: bytes, ingest) -> np.ndarray:
    """The RGB an annotator of the store would see for these bytes: ingest's decode and shrink, its
    stored encoding, decoded again (core/images.py). Raises ImageRejected."""
    from core.images import decode_for_store, decode_rgb, encode_image

    rgb, _ = decode_for_store(data, max_pixels=ingest.max_pixels, min_side=1, max_side=ingest.max_side)
    return decode_rgb(encode_image(rgb, ingest.image_format, ingest.quality))


def embedder_of(params, cat, node: str) -> tuple[str, str, str]:
    """(annotator name, params JSON, cache key) of the annotator that made the store's `node`: its
    store folder's annotator.json (name, params), the folder (keyed by version, params, code) as key."""
    loc = cat.nodes[node]
    record = Path(loc.folder) / "annotator.json"
    if record.exists():
        info = json.loads(record.read_text())
        name, params_json = info["name"], json.dumps(info["params"], sort_keys=True)
    else:  # a store written before annotator.json: the configured params
        import annotators
        from pipelines.annotation_plan import configured

        name = loc.annotator
        cls = annotators.get(name)
        params_json = cls.Params.model_validate(configured(params)[name].params).model_dump_json()
    return name, params_json, str(Path(loc.folder).relative_to(cat.store.root))


def read_benchmark(params, cat, emb_node: str, cached: pa.Table | None = None) -> Benchmark:
    """Every benchmark image's split embedding and dHash64, from `cached` rows where their key
    matches, else read, normalised and embedded here (the annotator built once)."""
    import annotators
    from annotators import registry
    from annotators.runtime import build_annotator
    from core.images import ImageRejected
    from core.perceptual_hash import dhash64
    from pipelines.sources import load_chunk, stored_ref

    name, params_json, emb_key = embedder_of(params, cat, emb_node)
    ingest = params.ingest
    norm = json.dumps({"v": NORMALISATION_VERSION, **ingest.model_dump(mode="json", exclude={"sources", "part_size"})},
                      sort_keys=True)
    dhash_node = cat.nodes.get("image_dhash")
    dhash_key = str(Path(dhash_node.folder).relative_to(cat.store.root)) if dhash_node else ""
    key = hashlib.sha256(f"{emb_key}\0{dhash_key}\0{norm}".encode()).hexdigest()[:16]
    have = {}
    if cached is not None and cached.num_rows:
        for r in cached.filter(pc.equal(cached["key"], key)).to_pylist():
            have[(r["ref"], r["stamp"])] = (np.asarray(r["embedding"], np.float32), r["dhash"])
    registry.load_plugins(list(params.annotate.plugins))
    cls = annotators.get(name)
    model = cls.Params.model_validate_json(params_json)
    if tuple(cls.requires_for(model)) != ("image",):
        raise ParamsError(f"sample.split_embedder: {name} needs more than the image; it cannot embed benchmark images")
    annotator = None
    refs, vectors, codes, rows, sources, computed = [], [], [], [], [], 0
    base = os.getcwd()
    for i, (source, entries, skipped) in enumerate(list_benchmark(params.sample.exclude)):
        sources.append({"path": source.path, "kind": source.kind, "images": len(entries), "skipped": skipped})
        todo = [e for e in entries if (e.ref, e.stamp) not in have]
        for s in range(0, len(todo), _READ_CHUNK):
            chunk = todo[s:s + _READ_CHUNK]
            images = []
            for ref, data in load_chunk(source, chunk):
                if isinstance(data, Exception):
                    why = f"{data.reason}: {data.detail}" if isinstance(data, ImageRejected) else str(data)
                    raise _fail(i, ref, why)
                try:
                    images.append(normalised(data, ingest))
                except ImageRejected as e:
                    raise _fail(i, ref, f"{e.reason}: {e.detail}") from None
            if annotator is None:
                device = resolve_device(params.annotate.device, cls.resources.num_gpus)
                annotator = build_annotator(name, params_json, device=device,
                                            models_dir=params.annotate.models_dir,
                                            plugins=params.annotate.plugins)[1]
            batch = cls.resources.batch_size or 16
            for b in range(0, len(images), batch):
                outs = annotator.annotate([{"image": x, "image.meta": {}} for x in images[b:b + batch]],
                                          [e.ref for e in chunk[b:b + batch]])
                for e, x, out in zip(chunk[b:b + batch], images[b:b + batch], outs):
                    have[(e.ref, e.stamp)] = (np.asarray(out[cls.produces[0]].array, np.float32), dhash64(x))
            computed += len(chunk)
        for e in entries:
            vector, code = have[(e.ref, e.stamp)]
            refs.append(stored_ref(e.ref, source, base))
            vectors.append(vector)
            codes.append(code)
            rows.append({"ref": e.ref, "stamp": e.stamp, "key": key, "embedding": vector, "dhash": code})
    dim = len(vectors[0]) if vectors else 0
    return Benchmark(refs, unit_rows(np.stack(vectors).reshape(-1, dim)),
                     np.frombuffer(b"".join(codes), np.uint8).reshape(-1, 8), sources, computed,
                     pa.Table.from_pylist(rows, schema=CACHE_SCHEMA))


# --- the pure core ----------------------------------------------------------------------------

@dataclass
class Matches:
    by_embedding: np.ndarray  # (N,) bool: cosine >= threshold with some benchmark image
    embedding_nearest: np.ndarray  # (N,) int64: the best benchmark row (-1: no embedding)
    cosine: np.ndarray  # (N,) float64: the best cosine (nan: no embedding)
    by_dhash: np.ndarray  # (N,) bool: dHash64 within max_hamming bits of some benchmark code
    dhash_nearest: np.ndarray  # (N,) int64: that benchmark row (-1: none within)
    hamming: np.ndarray  # (N,) int64: its distance (-1: none within)

    @property
    def contaminated(self) -> np.ndarray:
        return self.by_embedding | self.by_dhash


def nearest_embeddings(store_emb: np.ndarray, has_emb: np.ndarray, bench_emb: np.ndarray, *,
                       exact_max_n: int = EXACT_MAX_N, nprobe: int = 16,
                       block: int = _QUERY_BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(best benchmark row, its float64 cosine) per store image: faiss over the benchmark vectors
    proposes `_K` candidates, their cosines are re-computed in float64 (-1 / nan: no embedding)."""
    n = len(has_emb)
    nearest, cosine = np.full(n, -1, np.int64), np.full(n, np.nan)
    if not len(bench_emb) or not has_emb.any():
        return nearest, cosine
    bench = unit_rows(bench_emb)
    index = _build_index(bench, len(bench) <= exact_max_n, nprobe, 0)
    k = min(_K, len(bench))
    rows = np.flatnonzero(has_emb)
    for s in range(0, len(rows), block):
        r = rows[s:s + block]
        q = unit_rows(store_emb[r])
        _, found = index.search(q, k)
        cos = np.full(found.shape, -np.inf)
        for j in range(k):  # float64 accumulation of float32 rows: no (block, k, d) float64 copy
            ok = found[:, j] >= 0
            cos[ok, j] = np.einsum("ij,ij->i", q[ok], bench[found[ok, j]], dtype=np.float64)
        best = np.argmax(cos, axis=1)
        pick = cos[np.arange(len(r)), best]
        has = np.isfinite(pick)
        nearest[r[has]] = found[np.arange(len(r)), best][has]
        cosine[r[has]] = pick[has]
    return nearest, cosine


def find_contaminated(store_emb: np.ndarray, has_emb: np.ndarray, store_codes: np.ndarray, has_hash: np.ndarray,
                      bench_emb: np.ndarray, bench_codes: np.ndarray, *, threshold: float, max_hamming: int,
                      exact_max_n: int = EXACT_MAX_N, nprobe: int = 16) -> Matches:
    """Which store images are near a benchmark image: embedding cosine >= threshold OR dHash64
    Hamming <= max_hamming. Rows of store images without an embedding (has_emb False) or a hash
    (has_hash False) are judged by the other signal only."""
    has_emb, has_hash = np.asarray(has_emb, bool), np.asarray(has_hash, bool)
    nearest, cosine = nearest_embeddings(store_emb, has_emb, bench_emb, exact_max_n=exact_max_n, nprobe=nprobe)
    # on a 1e-6 grid, as the sampler compares: BLAS summation order never decides an exclusion
    by_embedding = np.round(np.nan_to_num(cosine, nan=-np.inf), 6) >= threshold
    n = len(has_hash)
    by_dhash, dhash_nearest, hamming = np.zeros(n, bool), np.full(n, -1, np.int64), np.full(n, -1, np.int64)
    rows = np.flatnonzero(has_hash)
    if len(rows) and len(bench_codes):
        codes = np.ascontiguousarray(store_codes[rows], np.uint8)
        found, near = codes_nearest(np.ascontiguousarray(bench_codes, np.uint8), codes, max_hamming)
        hit = rows[found]
        by_dhash[hit] = True
        dhash_nearest[hit] = near[found]
        xor = codes[found] ^ np.asarray(bench_codes, np.uint8)[near[found]]
        hamming[hit] = np.unpackbits(xor, axis=1).sum(axis=1)
    return Matches(by_embedding, nearest, cosine, by_dhash, dhash_nearest, hamming)


def close_over_records(mask: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask grown to every image linked to a masked one by records (links a[k] - b[k]), the masked
    image each added one was pulled in by (-1 for the others))."""
    mask = np.asarray(mask, bool)
    via = np.full(len(mask), -1, np.int64)
    if not len(a) or not mask.any():
        return mask.copy(), via
    component = merge_groups(np.arange(len(mask), dtype=np.int64), a, b)
    masked = np.flatnonzero(mask)
    hit, first = np.unique(component[masked], return_index=True)  # each hit component's first masked image
    grown = np.isin(component, hit)
    added = np.flatnonzero(grown & ~mask)
    via[added] = masked[first[np.searchsorted(hit, component[added])]]
    return grown, via


# --- applying it in the sample stage ----------------------------------------------------------

def without_images(index, drop: np.ndarray):
    """A NodeIndex like `index` in which the dropped images hold no node and are no record cell."""
    from pipelines.catalog import NodeIndex

    masks = {node: index.has(node) & ~drop for node in index.nodes()}
    members = index.has_cell("image") & ~index.has("image") & ~drop
    return NodeIndex(index.ids, index.parts, masks, members if members.any() else None)


def rows_without(rows: list[dict], ids: set[str]) -> list[dict]:
    """The edit-pair / quadruplet rows none of whose images (`*_image*` fields) is in `ids`."""
    return [r for r in rows if not any(_IMAGE_FIELD.search(k) and v in ids for k, v in r.items() if isinstance(v, str))]


@dataclass
class Decontamination:
    excluded: np.ndarray  # (N,) bool over the index's ids
    table: pa.Table  # EXCLUDED_SCHEMA, one row per excluded image
    report: dict  # leakage.json's `decontamination` section
    cache: pa.Table  # the benchmark vectors (CACHE_SCHEMA)
    ids: set[str] = field(default_factory=set)

    def apply(self, index, splits: np.ndarray):
        """(index without the excluded images, splits with them labelled `excluded`)."""
        return without_images(index, self.excluded), np.where(self.excluded, EXCLUDED, splits)

    def rows(self, rows: list[dict]) -> list[dict]:
        return rows_without(rows, self.ids) if self.ids else rows

    def write(self, staging: Path, excluded_name: str, cache_name: str) -> None:
        from pipelines.store import write_table

        write_table(self.table, Path(staging) / excluded_name)
        write_table(self.cache, Path(staging) / cache_name)


def decontaminate(params, store, cat, ids: pa.Array, emb_node: str, emb: np.ndarray, has_emb: np.ndarray,
                  codes: np.ndarray, has_hash: np.ndarray, links: tuple[np.ndarray, np.ndarray]) -> Decontamination:
    """The excluded images of the store (aligned with `ids`) against `params.sample.exclude`."""
    sp = params.sample
    cache_path = store.benchmark_cache_path
    cached = pq.read_table(cache_path, schema=CACHE_SCHEMA) if cache_path.exists() else None
    bench = read_benchmark(params, cat, emb_node, cached)
    m = find_contaminated(emb, has_emb, codes, has_hash, bench.embeddings, bench.codes,
                          threshold=sp.near_duplicate_threshold, max_hamming=sp.leakage_max_hamming,
                          nprobe=sp.near_duplicate_nprobe)
    direct = m.contaminated
    excluded, via = close_over_records(direct, *links)
    rows = np.flatnonzero(excluded)
    id_list = ids.take(pa.array(rows, pa.int64())).to_pylist() if len(rows) else []
    reason, bench_ref, cosine, hamming, by = [], [], [], [], []
    for i in rows.tolist():
        e, h = bool(m.by_embedding[i]), bool(m.by_dhash[i])
        reason.append("embedding+dhash" if e and h else "embedding" if e else "dhash" if h else "record")
        pick = int(m.embedding_nearest[i] if e else m.dhash_nearest[i] if h else -1)
        bench_ref.append(bench.refs[pick] if pick >= 0 else None)
        cosine.append(round(float(np.dot(emb[i].astype(np.float64), bench.embeddings[pick].astype(np.float64))), 6)
                      if pick >= 0 and has_emb[i] else None)
        hamming.append(int(np.unpackbits(codes[i] ^ bench.codes[pick]).sum()) if pick >= 0 and has_hash[i] else None)
        by.append(ids[int(via[i])].as_py() if via[i] >= 0 else None)
    table = pa.table({"image_id": pa.array(id_list, pa.string()), "reason": reason, "benchmark": bench_ref,
                      "cosine": pa.array(cosine, pa.float64()), "hamming": pa.array(hamming, pa.int64()),
                      "via": pa.array(by, pa.string())}, schema=EXCLUDED_SCHEMA)
    report = {
        "method": f"{emb_node} cosine >= {sp.near_duplicate_threshold} (faiss, re-checked in float64) or dHash64 "
                  f"Hamming <= {sp.leakage_max_hamming} to a benchmark image; then the other images of their records",
        "benchmark_images": len(bench.refs),
        "benchmark_images_computed": bench.computed,
        "excluded_images": int(excluded.sum()),
        "by": {"embedding": int(m.by_embedding.sum()), "dhash": int(m.by_dhash.sum()),
               "record": int((excluded & ~direct).sum())},
        "images_without_embedding": int((~np.asarray(has_emb, bool)).sum()),
        "images_without_hash": int((~np.asarray(has_hash, bool)).sum()),
        "sources": bench.sources,
        "excluded_ids": sorted(id_list)[:20],
    }
    return Decontamination(excluded, table, report, bench.cache, set(id_list))
