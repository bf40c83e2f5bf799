"""The README's "Your own images" walkthrough, run as written on a folder of photos."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from pipelines.sources import embedded_refs, render_embedded

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough() -> str:
    block = re.search(r"<!-- own-images:start -->\n```bash\n(.*?)```\n<!-- own-images:end -->", README.read_text(),
                      re.S)
    assert block, "README has no own-images block"
    return block.group(1)


def test_readme_walkthrough_from_an_empty_folder(tmp_path):
    photos = tmp_path / "my-photos"
    photos.mkdir()
    for k, ref in enumerate(embedded_refs(14, 96)):
        Image.open(io.BytesIO(render_embedded(ref))).convert("RGB").save(photos / f"p{k:02d}.jpg", quality=92)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, PHOTOS=str(photos), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", walkthrough()], cwd=work, env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = work / "my-dataset" / "data" / "out"
    assert "14 ok, 1 failed" in run.stdout
    assert list(out.glob("shards/train/*.tar")) and (out / "preview/index.html").exists()
    assert (out / "report/report.html").exists() and "ingest/truncated" in run.stdout  # vicl status
    failures = pq.read_table(out / "failures.parquet").to_pylist()
    assert [(Path(f["source"]).name, f["reason"]) for f in failures] == [("broken.jpg", "truncated")]
