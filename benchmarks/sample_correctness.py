"""Are the samples right? A build on real photos plus an edit corpus of known transforms, checked for meaning.

Photos: every JPEG/PNG under --photos (default: Debian's wallpaper packages, which install offline:
`apt-get install mate-backgrounds lomiri-wallpapers ukui-wallpapers`, under /usr/share/backgrounds)
plus scikit-image's bundled photos, shrunk to --side. The edit corpus: other crops of the same photos,
each edited by one of vicl's synthetic edit families with drawn params, written as a Parquet corpus
(source, edited, instruction, record id); the benchmark keeps each pair's true transform key
(family + the params that change its meaning: flip axis, hue bucket, shape colour and place...).

The build is `vicl run` through the CLI, as a user runs it. Printed figures (goals from issue 22):
- transform agreement of `mined_edit` quadruplets: share whose two pairs share the true transform
  key, per origin (goal >= 0.99 synthetic, >= 0.95 corpus);
- rows of synthetic-edit graph tasks that disagree on the transform key (goal 0);
- edited corpus members used as photos: cells of graph-task samples, cells outside their own pair in
  `mined_edit`, Graph200K export rows (goal 0);
- detector nodes kept on images without the object, on the labelled set
  benchmarks/detector_labels.yaml (goal <= 2 %; benchmarks/detector_gates.py);
- the task mix: share of each family in train, and the edit families together (budget 0.25).

    python benchmarks/sample_correctness.py [--photos /usr/share/backgrounds] [--work /tmp/vicl-correctness]
        [--max-photos 90] [--corpus-pairs 240] [--side 384] [--no-detectors]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402

from annotators.synthetic_edits import apply_edit, transform_key  # noqa: E402
from core.images import encode_png  # noqa: E402

CORPUS_FAMILIES = ("flip", "hue_rotate", "temperature", "rotate", "add_shape", "zoom_crop", "sepia")
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle")


def load_photos(folder: Path, limit: int, side: int) -> list[tuple[str, np.ndarray]]:
    """(name, RGB array no larger than `side`) of the photos, sorted by path, then scikit-image's."""
    import cv2
    from PIL import Image
    from skimage import data

    out = []
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file())
    for path in paths:
        try:
            with Image.open(path) as im:
                im.draft("RGB", (side * 2, side * 2))
                arr = np.asarray(im.convert("RGB"))
        except OSError:
            continue
        out.append((path.stem, arr))
    for name in SKIMAGE_PHOTOS:
        arr = np.asarray(data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)())
        out.append((f"skimage_{name}", np.repeat(arr[..., None], 3, 2) if arr.ndim == 2 else arr[..., :3]))
    shrunk = []
    for name, arr in out[:limit]:
        scale = side / max(arr.shape[:2])
        if scale < 1:
            arr = cv2.resize(arr, (round(arr.shape[1] * scale), round(arr.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
        shrunk.append((name, np.ascontiguousarray(arr.astype(np.uint8))))
    return shrunk


def write_corpus(photos: list[tuple[str, np.ndarray]], n: int, root: Path, seed: int = 0) -> dict[str, str]:
    """An edit corpus of n pairs (crops of the photos, one edit family each) as Parquet; returns
    {record id: true transform key}."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for k in range(n):
        _, photo = photos[k % len(photos)]
        h, w = photo.shape[:2]
        s = int(min(h, w) * rng.uniform(0.45, 0.7))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        crop = np.ascontiguousarray(photo[y:y + s, x:x + s])
        family = CORPUS_FAMILIES[k % len(CORPUS_FAMILIES)]
        edited, text, params = apply_edit(family, crop, seed=seed * 100003 + k)
        record = f"pair{k:05d}"
        truth[record] = transform_key(family, params)
        rows.append({"source": encode_png(crop), "edited": encode_png(edited), "instruction": text, "id": record})
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "edits.parquet")
    return truth


def build_params(work: Path, photos_dir: Path, corpus: Path | None) -> Path:
    sources = [{"kind": "folder", "path": str(photos_dir)}]
    if corpus is not None:
        sources.append({"kind": "parquet", "path": str(corpus / "edits.parquet"), "layout": "edit_pairs",
                        "columns": {"record_id": "id"}})
    params = {
        "paths": {"store": str(work / "store"), "out": str(work / "out")},
        "ingest": {"sources": sources},
        "annotate": {"annotators": {"image_quality": {}, "canny": {}, "grayscale": {}, "pose_mediapipe": {},
                                    "foreground_mediapipe": {}, "degrade_JPEG": {}, "degrade_GaussianBlur": {},
                                    "edit_flip": {}, "edit_hue_rotate": {}, "edit_sepia": {}, "edit_add_shape": {}}},
        "sample": {"samples_per_task": 6, "eval_fraction": 0.1},
        "export": {"cell_size": 128, "graph200k": True},
    }
    path = work / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def node_meta(store: Path, node: str) -> dict[str, dict]:
    """image id -> meta of one node type (from the catalog's folder of it)."""
    catalog = json.loads((store / "nodes" / "catalog.json").read_text())
    if node not in catalog["nodes"]:
        return {}
    out = {}
    for part in sorted((store / catalog["nodes"][node]["folder"]).glob("part-*.parquet")):
        t = pq.read_table(part, columns=["image_id", "node_type", "meta"])
        for r in t.to_pylist():
            if r["node_type"] == node:
                out[r["image_id"]] = json.loads(r["meta"] or "{}")
    return out


def edited_members(store: Path) -> dict[str, str]:
    """image id of every corpus pair's edited image -> its record id (from the image parts' meta)."""
    out = {}
    for part in sorted((store / "images").glob("part-*.parquet")):
        t = pq.read_table(part, columns=["image_id", "meta"])
        for image_id, meta in zip(t["image_id"].to_pylist(), t["meta"].to_pylist()):
            m = json.loads(meta or "{}")
            if m.get("role") == "edited":
                out[image_id] = m["record"]
    return out


def pair_key(store: Path, cells: list[tuple[str, str]], truth: dict, records: dict, metas: dict) -> str | None:
    """The true transform key of one pair (A, A') of a quadruplet: a corpus pair's from the corpus
    truth, a synthetic edit's from its node meta (family and params as drawn)."""
    (src_node, src), (edit_node, edited) = cells
    if edit_node == "image":
        return truth.get(records.get(edited))
    meta = metas.setdefault(edit_node, node_meta(store, edit_node)).get(edited, {})
    if "family" in meta:
        return transform_key(meta["family"], meta["params"])
    return meta.get("instruction")  # analogous pairs: the instruction both pairs applied


def check(work: Path, truth: dict[str, str]) -> dict:
    store, out = work / "store", work / "out"
    samples = pq.read_table(store / "samples" / "samples.parquet").to_pylist()
    edited = edited_members(store)
    records = edited  # edited image id -> its record id
    metas: dict[str, dict] = {}
    agree: dict[str, list[bool]] = defaultdict(list)
    graph_mismatch, graph_keyed, misused = 0, 0, []
    for s in samples:
        cells = list(zip(s["cell_nodes"], s["cell_ids"]))
        if s["task"] == "mined_edit":
            b, a = cells[:2], cells[2:]
            kb, ka = pair_key(store, b, truth, records, metas), pair_key(store, a, truth, records, metas)
            origin = "corpus" if a[1][0] == "image" else "synthetic"
            agree[origin].append(ka is not None and ka == kb)
            for pair in (a, b):  # an edited member only as the edited cell of its own pair
                if pair[0][1] in edited and pair[0][0] == "image":
                    misused.append((s["key"], "source cell"))
            continue
        for node, image_id in cells:
            if image_id in edited:
                misused.append((s["key"], node))
        keyed = [n for n in s["columns"] if n.startswith("edit_")]
        for node in keyed:
            keys = {pair_key(store, [("image", i), (node, i)], truth, records, metas)
                    for i in s["image_ids"]}
            graph_keyed += 1
            graph_mismatch += len(keys) > 1
    table = pq.read_table(store / "mined" / "quadruplets.parquet").to_pylist() \
        if (store / "mined" / "quadruplets.parquet").exists() else []
    table_agree = [truth.get(records.get(r["edited_image_a"])) == truth.get(records.get(r["edited_image_b"]))
                   for r in table]
    g200k = 0
    for data_json in sorted((out / "graph200k").glob("*/data.json")):
        for row in json.loads(data_json.read_text()):
            g200k += any(i in json.dumps(row) for i in edited)
    mix = json.loads((store / "samples" / "inputs.json").read_text())["summary"]["mix"]
    train = mix["per_family"].get("train", {})
    total = sum(train.values())
    return {
        "samples": len(samples),
        "mined_by_origin": {o: len(v) for o, v in sorted(agree.items())},
        "mined_transform_agreement": {o: round(float(np.mean(v)), 4) for o, v in sorted(agree.items()) if v},
        # every task-vector quadruplet the mine stage kept, sampled or not
        "corpus_quadruplets": len(table),
        "corpus_quadruplet_agreement": round(float(np.mean(table_agree)), 4) if table else None,
        "graph_keyed_samples": graph_keyed, "graph_keyed_mismatch": graph_mismatch,
        "edited_used_as_photo": len(misused), "graph200k_rows_with_edited": g200k,
        "train_family_share": {f: round(n / total, 4) for f, n in sorted(train.items())} if total else {},
        "edit_share_train": round(sum(n for f, n in train.items() if f in ("mined_editing", "synthetic_editing"))
                                  / total, 4) if total else 0.0,
        "per_origin": mix["per_origin"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default="/usr/share/backgrounds")
    ap.add_argument("--work", default="/tmp/vicl-correctness")
    ap.add_argument("--max-photos", type=int, default=90)
    ap.add_argument("--corpus-pairs", type=int, default=240)
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--no-detectors", action="store_true", help="skip the labelled detector set")
    args = ap.parse_args(argv)
    work = Path(args.work)
    photos = load_photos(Path(args.photos), args.max_photos, args.side)
    photos_dir = work / "photos"
    photos_dir.mkdir(parents=True, exist_ok=True)
    for name, arr in photos:
        (photos_dir / f"{name}.png").write_bytes(encode_png(arr))
    truth = write_corpus(photos, args.corpus_pairs, work / "corpus") if args.corpus_pairs else {}
    params = build_params(work, photos_dir, work / "corpus" if truth else None)
    print(f"{len(photos)} photos, {len(truth)} corpus pairs ({', '.join(CORPUS_FAMILIES)}): vicl run", flush=True)
    subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--params", str(params)], check=True)
    figures = check(work, truth)
    if not args.no_detectors:
        sys.path.insert(0, str(Path(__file__).parent))  # a sibling script, not a package
        from detector_gates import detector_false_positive_rates

        rates = detector_false_positive_rates(Path(__file__).with_name("detector_labels.yaml"))
        figures["detectors"] = {name: {"before": r["before"], "after": r["after"]} for name, r in rates.items()}
    print(json.dumps(figures, indent=1, sort_keys=True))
    agreement = figures["mined_transform_agreement"]
    false_positive = max((r["after"]["false_positive"] for r in figures.get("detectors", {}).values()), default=0.0)
    goals = {
        "synthetic agreement >= 0.99": agreement.get("synthetic", 1.0) >= 0.99,
        "corpus agreement >= 0.95": min(agreement.get("corpus", 1.0),
                                        figures["corpus_quadruplet_agreement"] or 1.0) >= 0.95,
        "graph rows share their transform": figures["graph_keyed_mismatch"] == 0,
        "edited members used as photos == 0": figures["edited_used_as_photo"] + figures["graph200k_rows_with_edited"]
        == 0,
        "edit families <= 0.25 of train": figures["edit_share_train"] <= 0.25 + 1e-9,
        "detector nodes kept without the object <= 0.02": false_positive <= 0.02,
    }
    for goal, ok in goals.items():
        print(f"{'PASS' if ok else 'FAIL'}  {goal}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
