"""Done-when 2: `dvc repro` builds the chain, and a second `dvc repro` runs no stage."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_dvc_repro_twice(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for folder in ("core", "pipelines", "annotators", "mining"):
        os.symlink(REPO / folder, project / folder)
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["sources"][0].update(count=12, size=64)
    params["ingest"]["part_size"] = 6
    params["ray"]["num_cpus"] = 2
    keep = ("canny", "grayscale", "degrade_Rain", "edit_sepia", "edit_flip")
    params["annotate"]["annotators"] = {k: v for k, v in params["annotate"]["annotators"].items() if k in keep}
    params["sample"]["samples_per_task"] = 3
    params["export"].update(shard_size=4, cell_size=32)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", DVC_SITE_CACHE_DIR=str(tmp_path / "dvc-site"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    def dvc(*args):
        return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True,
                              text=True, timeout=600)

    assert dvc("init", "--no-scm", "-q").returncode == 0
    first = dvc("repro")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Running stage 'export'" in first.stdout and "Running stage 'mine'" in first.stdout
    assert (project / "data/out/manifest.json").exists() and list(project.glob("data/out/shards/*/*.tar"))
    second = dvc("repro")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Running stage" not in second.stdout
    assert "didn't change" in second.stdout or "up to date" in second.stdout
