"""False-positive rate and recall of the detector confidence gates on labelled photos (issue 22).

Runs the real MediaPipe annotators (`pose_mediapipe`, `foreground_mediapipe`: the weights ship
inside the mediapipe wheel) through their registry classes on the photos of
benchmarks/detector_labels.yaml, once with the old thresholds (`BEFORE`: the confidence gate off)
and once with the defaults, and prints per annotator:

  false positive  share of the photos without a person whose node is kept (quality null)
  recall          share of the photos with a person whose node is kept

Photos go through what ingest does to them first (shrunk to the default 1024 px longer side).
With --demo it also counts the nodes kept on the demo build's 240 embedded crops (params.yaml),
where every crop of a photo other than the astronaut and the cameraman is a false positive
(`demo_crop_kept`).

    python benchmarks/detector_gates.py [--labels benchmarks/detector_labels.yaml] [--json] [--details] [--demo]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import yaml

import pipelines  # noqa: F401  (vicl first: torchvision fallback)

LABELS = Path(__file__).with_name("detector_labels.yaml")
MAX_SIDE = 1024  # pipelines/params.py: ingest's default max_side

# annotator -> (the node judged, the params that reproduce the thresholds before the confidence gates)
ANNOTATORS = {
    # The old graph dropped detections under 0.5 and landmarks whose presence flag was under 0.5.
    "pose_mediapipe": ("openpose", {"min_person_score": 0.5, "min_presence": 0.5}),
    # The old annotator had no person check and no mask-confidence check.
    "foreground_mediapipe": ("foreground_mask", {"min_person_score": 0.0, "min_presence": 0.0,
                                                 "min_confident_share": 0.0}),
}


def load_labels(labels_file: str | Path = LABELS) -> list[dict]:
    """The labelled entries: image (source), person (bool), optional crop and note."""
    return list(yaml.safe_load(Path(labels_file).read_text())["images"])


def image_path(source: str) -> Path:
    """A file path for `package:<module>/<path>` or a plain path."""
    if source.startswith("package:"):
        module, rel = source.split(":", 1)[1].split("/", 1)
        return Path(importlib.util.find_spec(module).origin).parent / rel
    return Path(source)


def load_image(entry: dict) -> np.ndarray:
    """RGB uint8 of one entry: decoded, cropped, shrunk to MAX_SIDE as ingest stores it."""
    from PIL import Image

    from core.images import resize_max_side

    source = entry["image"]
    if source.startswith("skimage:"):
        from skimage import data

        rgb = np.asarray(getattr(data, source.split(":", 1)[1])())
    else:
        with Image.open(image_path(source)) as im:
            rgb = np.asarray(im.convert("RGB"))
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    rgb = rgb[..., :3]
    if entry.get("crop"):
        x0, y0, x1, y1 = entry["crop"]
        rgb = rgb[y0:y1, x0:x1]
    return resize_max_side(np.ascontiguousarray(rgb), MAX_SIDE)


def _annotate(name: str, params: dict, images: list[np.ndarray]) -> list:
    from annotators.registry import get

    ann = get(name)(params)
    ann.load()
    node = ANNOTATORS[name][0]
    return [ann.annotate([{"image": im}], [f"img{k}"])[0][node] for k, im in enumerate(images)]


def _rates(outputs: list, labels: list[bool]) -> dict:
    kept = [o.quality is None for o in outputs]
    neg = [k for k, lab in zip(kept, labels) if not lab]
    pos = [k for k, lab in zip(kept, labels) if lab]
    return {"false_positive": round(sum(neg) / max(1, len(neg)), 4), "recall": round(sum(pos) / max(1, len(pos)), 4),
            "kept_negatives": sum(neg), "kept_positives": sum(pos)}


def detector_false_positive_rates(labels_file: str | Path = LABELS, annotators: list[str] | None = None,
                                  details: bool = False) -> dict:
    """Per annotator: {n_negative, n_positive, before: {false_positive, recall, ...}, after: {...}}.

    With `details`, also `images`: per photo its label, quality before/after and meta["confidence"]."""
    entries = load_labels(labels_file)
    images = [load_image(e) for e in entries]
    labels = [bool(e["person"]) for e in entries]
    out = {}
    for name in annotators or list(ANNOTATORS):
        before = _annotate(name, ANNOTATORS[name][1], images)
        after = _annotate(name, {}, images)
        row = {"n_negative": labels.count(False), "n_positive": labels.count(True),
               "before": _rates(before, labels), "after": _rates(after, labels)}
        if details:
            row["images"] = [{"image": e["image"], "person": lab, "before": b.quality, "after": a.quality,
                              "confidence": {k: v for k, v in a.meta.get("confidence", {}).items()
                                             if not isinstance(v, list)}}
                             for e, lab, b, a in zip(entries, labels, before, after)]
        out[name] = row
    return out


PERSON_PHOTOS = ("astronaut", "camera")  # the embedded photos with a person in them


def demo_crop_kept(annotators: list[str] | None = None, count: int = 240, size: int = 320) -> dict:
    """Per annotator, on the demo's embedded crops (params.yaml: `count` crops of `size` px of
    scikit-image's photos, pipelines/sources.py): {n_no_person, n_person_photo, before, after}, where
    before/after hold the crops kept - `no_person`: refs of crops of photos without any person (all
    false positives), `person_photo`: how many crops of the astronaut and cameraman photos were kept
    (a crop of them may hold only a tripod or a spacesuit, so this is not a recall)."""
    import io

    from PIL import Image

    from pipelines.sources import embedded_refs, render_embedded

    refs = embedded_refs(count, size)
    images = [np.asarray(Image.open(io.BytesIO(render_embedded(r))).convert("RGB")) for r in refs]
    has_person = [r.split("?")[0].split(":")[1] in PERSON_PHOTOS for r in refs]
    out = {}
    for name in annotators or list(ANNOTATORS):
        row = {"n_no_person": has_person.count(False), "n_person_photo": has_person.count(True)}
        for when, params in (("before", ANNOTATORS[name][1]), ("after", {})):
            kept = [o.quality is None for o in _annotate(name, params, images)]
            row[when] = {"no_person": [r for r, k, p in zip(refs, kept, has_person) if k and not p],
                         "person_photo": sum(k and p for k, p in zip(kept, has_person))}
        out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--labels", default=str(LABELS))
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    ap.add_argument("--details", action="store_true", help="also list every photo's scores")
    ap.add_argument("--demo", action="store_true", help="also count kept nodes on the demo's embedded crops")
    args = ap.parse_args()
    result = detector_false_positive_rates(args.labels, details=args.details)
    demo = demo_crop_kept() if args.demo else {}
    if args.json:
        print(json.dumps({"labelled": result, "demo_crops": demo} if demo else result, indent=2))
        return
    print(f"{'annotator':22} {'':6} {'false positive':>16} {'recall':>14}")
    for name, row in result.items():
        for when in ("before", "after"):
            r = row[when]
            print(f"{name:22} {when:6} {r['kept_negatives']:>3}/{row['n_negative']:<3} {r['false_positive']:6.1%}"
                  f" {r['kept_positives']:>3}/{row['n_positive']:<3} {r['recall']:6.1%}")
        for img in row.get("images", []):
            print(f"    {'person' if img['person'] else '      '} {str(img['before']):15} {str(img['after']):15}"
                  f" {img['confidence']}  {img['image']}")
    for name, row in demo.items():
        b, a = row["before"], row["after"]
        print(f"{name} on the demo crops: kept without a person {len(b['no_person'])} -> {len(a['no_person'])}"
              f" of {row['n_no_person']} {[r.split('&i=')[-1] for r in a['no_person']]}; crops of the person"
              f" photos kept {b['person_photo']} -> {a['person_photo']} of {row['n_person_photo']}")


if __name__ == "__main__":
    main()
