"""`vicl ingest` against img2dataset on the same folder of local JPEG photos, at the same output size.

The script makes N photos (default 4,000) from scikit-image's bundled photos: crops, rescaled to
a longer side of 480-1600 px (about half larger than `ingest.max_side` 1024, so both tools
shrink those and keep the rest), with grain, flips, JPEG quality 82-95 and an EXIF orientation
tag on one in ten (both tools apply it). Cached under benchmarks/out/ for the next run.

  vicl        the CLI (`vicl ingest`) in a temporary work folder with its own params.yaml: one
              `folder` source, max_side 1024, jpg quality 95, parts of 64, Ray on 2 CPUs.
  img2dataset in its own venv under benchmarks/out/ (made with `python -m venv` + pip on the
              first run; skipped with a message when that fails), reading a url list of file://
              URLs: resize_mode keep_ratio_largest, image_size 1024, resize_only_if_bigger,
              jpg quality 95, webdataset output, shards of 64, 2 processes x 4 threads, at nice 15
              as Ray's workers are (on a shared machine other load then takes the same share).

Runs alternate (vicl, img2dataset, img2dataset, vicl, ...), each a fresh process into a fresh
output folder; the figure is wall time of the whole command as images/s (best run, median in
brackets) and the ratio vicl / img2dataset. Both outputs are checked: number of images and the stored
width x height of every input (img2dataset does not apply EXIF orientation: those come out transposed).

    python benchmarks/ingest.py [--n 4000] [--rounds 2] [--profile]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
I2D_VENV = OUT / "img2dataset-venv"
MAX_SIDE, QUALITY, PART = 1024, 95, 64
BASES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
         "motorcycle_left", "cat", "camera", "brick", "grass", "gravel", "horse", "page", "moon")


# --- the photos -------------------------------------------------------------------------------
def _base(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, "stereo_motorcycle")()[0] if name == "motorcycle_left" else getattr(skimage.data, name)()
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def _make_photos(args: tuple[Path, int, int, int]) -> None:
    import cv2
    from PIL import Image

    folder, start, stop, seed = args
    bases = {name: _base(name) for name in BASES}
    grain = np.random.default_rng(seed).normal(0, 1, (512, 512, 1)).astype(np.float32)
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        img = bases[BASES[i % len(BASES)]]
        h, w = img.shape[:2]
        scale = float(rng.uniform(0.4, 1.0))
        ch, cw = max(32, int(h * scale)), max(32, int(w * scale * rng.uniform(0.75, 1.33)))
        cw = min(cw, w)
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = img[y0:y0 + ch, x0:x0 + cw]
        if rng.integers(0, 2):
            crop = crop[:, ::-1]
        side = int(rng.integers(480, 1601))
        f = side / max(crop.shape[:2])
        size = (max(16, round(crop.shape[1] * f)), max(16, round(crop.shape[0] * f)))
        photo = cv2.resize(np.ascontiguousarray(crop), size, interpolation=cv2.INTER_CUBIC).astype(np.float32)
        gy, gx = int(rng.integers(0, 512)), int(rng.integers(0, 512))
        tile = np.roll(grain, (gy, gx), (0, 1))
        reps = (-(-photo.shape[0] // 512), -(-photo.shape[1] // 512), 1)
        noise = np.tile(tile, reps)[:photo.shape[0], :photo.shape[1]] * float(rng.uniform(2, 6))
        photo = np.clip(photo + noise, 0, 255).astype(np.uint8)
        im = Image.fromarray(photo)
        kwargs = {"quality": int(rng.integers(82, 96))}
        if i % 10 == 3:  # camera held sideways: both tools must rotate it upright
            exif = Image.Exif()
            exif[0x0112] = 6
            kwargs["exif"] = exif.tobytes()
        im.save(folder / f"IMG_{i:06d}.jpg", format="JPEG", **kwargs)


def photo_folder(n: int, seed: int) -> Path:
    folder = OUT / f"ingest-photos-{n}-{seed}"
    done = folder / ".complete"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    bigger = [f for f in OUT.glob(f"ingest-photos-*-{seed}") if (f / ".complete").exists()
              and int(f.name.split("-")[2]) > n]
    if bigger:  # the same photos: the first n of a bigger set, hard-linked (regular files to vicl)
        for i in range(n):
            os.link(bigger[0] / f"IMG_{i:06d}.jpg", folder / f"IMG_{i:06d}.jpg")
        done.write_text("")
        return folder
    t0 = time.perf_counter()
    step = 250
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_make_photos, [(folder, s, min(s + step, n), seed) for s in range(0, n, step)]))
    done.write_text("")
    nbytes = sum(p.stat().st_size for p in folder.glob("*.jpg"))
    print(f"made {n} photos in {time.perf_counter() - t0:.0f} s ({nbytes / n / 1e3:.0f} KB each) -> {folder}")
    return folder


# --- the two tools ----------------------------------------------------------------------------
def vicl_params(work: Path, photos: Path) -> Path:
    params = {"paths": {"store": str(work / "store"), "out": str(work / "out")},
              "ray": {"num_cpus": 2},
              "ingest": {"sources": [{"kind": "folder", "path": str(photos)}], "max_side": MAX_SIDE,
                         "image_format": "jpg", "quality": QUALITY, "part_size": PART},
              "annotate": {"annotators": {}}}
    path = work / "params.yaml"
    path.write_text(json.dumps(params, indent=1))  # JSON is YAML
    return path


def run_vicl(work: Path, photos: Path) -> tuple[float, str]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    params = vicl_params(work, photos)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "vicl"), "ingest", "--params", str(params)],
                          cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"vicl ingest failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    stage = next((line for line in proc.stdout.splitlines() if line.startswith("[ingest] done")), "")
    return wall, stage


def vicl_sizes(work: Path) -> dict[str, tuple[int, int]]:
    import pyarrow.dataset as pads

    parts = sorted(str(p) for p in (work / "store" / "images").glob("part-*.parquet"))
    t = pads.dataset(parts, format="parquet").to_table(columns=["meta", "width", "height", "error"])
    out = {}
    for meta, w, h, err in zip(*(t[c].to_pylist() for c in ("meta", "width", "height", "error"))):
        if err is None:
            out[os.path.basename(json.loads(meta)["source"])] = (w, h)
    return out


def ensure_img2dataset() -> Path | None:
    exe = I2D_VENV / "bin" / "img2dataset"
    if exe.exists():
        return exe
    print(f"installing img2dataset into {I2D_VENV} (python -m venv + pip) ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(I2D_VENV)], check=True, capture_output=True)
        subprocess.run([str(I2D_VENV / "bin" / "pip"), "install", "-q", "img2dataset"], check=True,
                       capture_output=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as e:
        detail = getattr(e, "stderr", b"") or b""
        print(f"img2dataset SKIPPED: could not install it ({type(e).__name__}: "
              f"{detail.decode(errors='replace')[-500:]})")
        return None
    return exe if exe.exists() else None


def run_img2dataset(exe: Path, work: Path, photos: Path) -> float:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    urls = work / "urls.txt"
    urls.write_text("".join(f"file://{p}\n" for p in sorted(photos.glob("*.jpg"))))
    cmd = [str(exe), "--url_list", str(urls), "--input_format", "txt", "--output_folder", str(work / "out"),
           "--output_format", "webdataset", "--processes_count", "2", "--thread_count", "4",
           "--image_size", str(MAX_SIDE), "--resize_mode", "keep_ratio_largest", "--resize_only_if_bigger", "True",
           "--encode_format", "jpg", "--encode_quality", str(QUALITY), "--number_sample_per_shard", str(PART),
           "--distributor", "multiprocessing", "--enable_wandb", "False"]
    t0 = time.perf_counter()
    # Ray runs its workers at nice 15; img2dataset gets the same, so other load on a shared
    # machine takes the same share from both.
    proc = subprocess.run(["nice", "-n", "15", *cmd], cwd=work, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{exe.parent}:{os.environ['PATH']}"})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"img2dataset failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


def img2dataset_sizes(work: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for tar in sorted((work / "out").glob("*.tar")):
        with tarfile.open(tar) as t:
            for m in t:
                if m.name.endswith(".json"):
                    rec = json.load(t.extractfile(m))
                    if rec.get("status") == "success":
                        out[os.path.basename(rec["url"])] = (rec["width"], rec["height"])
    return out


# --- where vicl's time goes -------------------------------------------------------------------
def profile_ingest(photos: Path, n_refs: int = PART) -> None:
    import cProfile
    import pstats

    from pipelines.params import IngestParams, SourceParams
    from pipelines.stages.ingest import ingest_refs

    source = SourceParams(kind="folder", path=str(photos))
    params = IngestParams(sources=[source], max_side=MAX_SIDE, image_format="jpg", quality=QUALITY, part_size=PART)
    refs = [str(p) for p in sorted(photos.glob("*.jpg"))[:n_refs]]
    ingest_refs(source, refs[:4], params, "bench")  # imports and first-call set-up out of the profile
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    table = ingest_refs(source, refs, params, "bench")
    prof.disable()
    wall = time.perf_counter() - t0
    print(f"\nprofile: pipelines.stages.ingest.ingest_refs on one chunk of {len(refs)} photos, one process: "
          f"{wall:.2f} s = {wall / len(refs) * 1e3:.1f} ms per image (under cProfile), {table.num_rows} rows")
    stats = pstats.Stats(prof)
    wanted = {  # inclusive time of the steps, by the function that does each
        "read file (sources._read_file)": ("sources.py", "_read_file"),
        "listing (sources.list_entries)": ("sources.py", "list_entries"),
        "content id (sha256)": ("images.py", "content_id"),
        "decode_normalised (all)": ("images.py", "decode_normalised"),
        "  JPEG decode (ImageFile.load)": ("ImageFile.py", "load"),
        "  exif_transpose": ("ImageOps.py", "exif_transpose"),
        "  _to_rgb": ("images.py", "_to_rgb"),
        "resize_max_side (Lanczos)": ("images.py", "resize_max_side"),
        "encode_image (JPEG q95 4:4:4)": ("images.py", "encode_image"),
        "part table (from_pylist)": ("table.pxi", "from_pylist"),
        "whole chunk (ingest_entries)": ("ingest.py", "ingest_entries"),
    }
    cum = {}
    for (file, _, func), (_, _, _, ct, _) in stats.stats.items():
        for label, (f, fn) in wanted.items():
            if file.endswith(f) and func == fn:
                cum[label] = cum.get(label, 0.0) + ct
    print("  inclusive time per step (ms per image):")
    for label in wanted:
        if label in cum:
            print(f"    {label:36s} {cum[label] / len(refs) * 1e3:7.2f}")
    print("  top functions by own time:")
    stream = io.StringIO()
    pstats.Stats(prof, stream=stream).sort_stats("tottime").print_stats(12)
    lines = [ln for ln in stream.getvalue().splitlines() if ln.strip()]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    for ln in lines[start:start + 13]:
        print("    " + ln[:150])


# --- main -------------------------------------------------------------------------------------
def rate(n: int, times: list[float]) -> str:
    return f"{n / min(times):7.1f} images/s (median {n / statistics.median(times):7.1f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="number of photos")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="also cProfile ingest_refs on one chunk")
    ap.add_argument("--profile-only", action="store_true")
    ap.add_argument("--startup", type=int, default=64,
                    help="also run each tool once on this many photos: fixed cost, and the steady-state "
                         "rate (n - startup) / (t_n - t_startup); 0 skips")
    args = ap.parse_args()

    photos = photo_folder(args.n, args.seed)
    if args.profile or args.profile_only:
        profile_ingest(photos)
        if args.profile_only:
            return
    exe = ensure_img2dataset()
    work = OUT / "ingest-work"
    times: dict[str, list[float]] = {"vicl": [], "img2dataset": []}
    order = ["vicl", "img2dataset"] if exe else ["vicl"]
    stages = []
    for r in range(args.rounds):
        for tool in (order if r % 2 == 0 else order[::-1]):
            if tool == "vicl":
                wall, stage = run_vicl(work / "vicl", photos)
                stages.append(stage)
            else:
                wall = run_img2dataset(exe, work / "img2dataset", photos)
            times[tool].append(wall)
            print(f"  round {r + 1} {tool:12s} {wall:6.1f} s  {args.n / wall:7.1f} images/s", flush=True)
    small = {}
    if args.startup:
        few = photo_folder(args.startup, args.seed)
        small["vicl"] = run_vicl(work / "vicl-few", few)[0]
        if exe:
            small["img2dataset"] = run_img2dataset(exe, work / "img2dataset-few", few)
    vs = vicl_sizes(work / "vicl")
    print(f"\ningest of {args.n} local JPEG photos to longer side <= {MAX_SIDE}, jpg q{QUALITY}, 2 CPUs, "
          f"{args.rounds} alternating rounds, wall time of the whole command:")
    print(f"  vicl ingest   {rate(args.n, times['vicl'])}   ({len(vs)} images stored; stage alone: {stages[-1]})")
    for tool, t_few in small.items():
        steady = (args.n - args.startup) / max(1e-9, min(times[tool]) - t_few)
        print(f"  {tool:12s}  {args.startup} photos take {t_few:.1f} s (start-up and first part); steady state "
              f"(n - {args.startup}) / (t_n - t_{args.startup}) = {steady:.1f} images/s")
    if not exe:
        print("  img2dataset   SKIPPED (see above)")
    else:
        isz = img2dataset_sizes(work / "img2dataset")
        same = sum(1 for k, v in vs.items() if isz.get(k) == v)
        swapped = sum(1 for k, v in vs.items() if isz.get(k) == v[::-1] and v[0] != v[1])
        off = sum(1 for k, v in vs.items() if k in isz and isz[k] not in (v, v[::-1])
                  and max(abs(a - b) for a, b in zip(isz[k], v)) <= 1)
        best = min(times["img2dataset"]) / min(times["vicl"])
        med = statistics.median(times["img2dataset"]) / statistics.median(times["vicl"])
        print(f"  img2dataset   {rate(args.n, times['img2dataset'])}   ({len(isz)} images written)")
        print(f"  ratio vicl / img2dataset (speed): {best:.2f}x best, {med:.2f}x median (goal >= 1x)")
        print(f"  same stored width x height for {same} of {len(vs)} images; {swapped} transposed (EXIF "
              f"orientation: img2dataset decodes with IMREAD_UNCHANGED and does not apply it); {off} differ by 1 px "
              f"(rounding)")
        vb = sum(p.stat().st_size for p in (work / "vicl" / "store" / "images").glob("part-*.parquet"))
        ib = sum(p.stat().st_size for p in (work / "img2dataset" / "out").glob("*.tar"))
        print(f"  output bytes: vicl parts {vb / 1e6:.0f} MB, img2dataset tars {ib / 1e6:.0f} MB "
              f"(vicl encodes 4:4:4 chroma at q>=90, OpenCV's default is 4:2:0)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
