"""Faults and first-run errors end in one line with a documented exit code (issue 23, items 1, 5, 7):
a second writer of one store is refused naming the holder, a full disk or a read-only file system
is one line and exit 74 even when Ray wraps the OSError, and Ctrl-C is one line, exit 130, no Ray
process left, and a re-run resumes."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from pipelines.cli import EXIT_INTERRUPTED, EXIT_IOERR, EXIT_USAGE, main
from tests.pipeline_fixtures import small_params

REPO = Path(__file__).resolve().parents[1]


def _params_file(root: Path, **kwargs) -> Path:
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(small_params(root, **kwargs).model_dump(mode="json")))
    return path


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def _vicl(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


# --- one writer per store -------------------------------------------------------------------------

HOLDER = """
import sys, time
from pipelines.store_lock import store_lock
with store_lock(sys.argv[1], "vicl run --params other.yaml"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.mark.timeout(60)
def test_a_second_writer_is_refused_at_once_and_a_dead_holders_lock_is_taken_over(tmp_path, ray_local, capfd):
    params = _params_file(tmp_path, count=8)
    store = tmp_path / "store"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(store)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capfd.readouterr()
        start = time.monotonic()
        assert main(["ingest", "--params", str(params)]) == EXIT_USAGE
        assert time.monotonic() - start < 5  # refused before any work, not after a Ray start
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vicl ingest: the store ")
        assert f"pid {holder.pid} " in err[0] and "`vicl run --params other.yaml`" in err[0] and "since " in err[0]
        assert not (store / "images").exists()
        assert main(["status", "--params", str(params)]) == 0  # readers take no lock
    finally:
        holder.kill()  # SIGKILL: the holder cannot release anything itself
        holder.wait()
    assert json.loads((store / ".vicl.lock").read_text())["pid"] == holder.pid  # its record stays behind
    assert main(["ingest", "--params", str(params)]) == 0  # but the kernel dropped its lock
    assert len(list((store / "images").glob("part-*.parquet"))) == 1
    assert (store / ".vicl.lock").read_text() == ""  # released: nobody named as holder


# --- disk full, read-only: one line, exit 74, also through Ray ------------------------------------

@pytest.mark.timeout(60)
def test_disk_full_inside_a_ray_data_task_is_one_line(tmp_path, ray_local, capfd, monkeypatch):
    from pipelines.stages import ingest

    def full_disk(item):  # injected failure: the part write of a real ingest task hits a full disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), item["path"])

    monkeypatch.setattr(ingest, "_ingest_part_task", full_disk)  # shipped by value to the Ray Data map
    params = _params_file(tmp_path, count=8)
    capfd.readouterr()
    assert main(["ingest", "--params", str(params)]) == EXIT_IOERR
    err = capfd.readouterr().err
    assert "Traceback" not in err
    line = _last_line(err)
    assert line.startswith("vicl ingest: disk full (No space left on device: ") and "/store/images/part-" in line
    assert line.endswith(f"free space, then run `vicl ingest --params {params}` to resume")


@pytest.mark.timeout(60)
def test_read_only_inside_a_ray_task_is_one_line(tmp_path, ray_local, capfd, monkeypatch):
    from pipelines.stages import annotate

    params = _params_file(tmp_path, count=8)
    assert main(["ingest", "--params", str(params)]) == 0

    def read_only(runs, item):  # injected failure inside a real annotate Ray task
        inputs, paths, batch_size = item
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), sorted(paths.values())[0])

    monkeypatch.setattr(annotate, "annotate_part_task", read_only)  # becomes the @ray.remote task
    capfd.readouterr()
    assert main(["annotate", "--params", str(params)]) == EXIT_IOERR
    err = capfd.readouterr().err
    assert "Traceback" not in err
    line = _last_line(err)
    assert line.startswith("vicl annotate: read-only file system (Read-only file system: ") and "/part-" in line
    assert "finished parts and shards are kept" in line and line.endswith("to resume")


def _mounts_allowed() -> bool:
    """A private mount namespace with a tmpfs: root with CAP_SYS_ADMIN (not in every container)."""
    if not shutil.which("unshare"):
        return False
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                f"mount -t tmpfs -o size=4k tmpfs {folder}"], capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _mounts_allowed(), reason="cannot mount in a private mount namespace here")


def _in_namespace(mount: str, *vicl_args) -> subprocess.CompletedProcess:
    """`vicl ...` with `mount` done first in a mount namespace of its own (gone when it exits)."""
    script = f'{mount} && exec "$0" -m pipelines.cli "$@"'
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, sys.executable,
                           *vicl_args], cwd=REPO, capture_output=True, text=True, timeout=120)


@needs_mounts
@pytest.mark.timeout(60)
def test_a_store_on_a_full_disk(tmp_path):
    params = _params_file(tmp_path, count=24)
    (tmp_path / "store").mkdir()
    # 48 KiB: room for the lock, the listing and the folders, not for the first image part
    run = _in_namespace(f"mount -t tmpfs -o size=48k tmpfs {tmp_path / 'store'}", "ingest", "--params", str(params))
    assert run.returncode == EXIT_IOERR, run.stderr
    assert "Traceback" not in run.stderr
    assert _last_line(run.stderr).startswith("vicl ingest: disk full (No space left on device")


@needs_mounts
@pytest.mark.timeout(60)
def test_a_store_on_a_read_only_file_system(tmp_path):
    params = _params_file(tmp_path, count=8)
    store = tmp_path / "store"
    store.mkdir()
    run = _in_namespace(f"mount --bind -o ro {store} {store}", "ingest", "--params", str(params))
    assert run.returncode == EXIT_IOERR, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"vicl ingest: read-only file system (Read-only file system: {store / '.vicl.lock'}); finished parts and "
        f"shards are kept; make the store and out folders writable (or point paths.store / paths.out elsewhere), "
        f"then run `vicl ingest --params {params}` to resume"]


# --- Ctrl-C ------------------------------------------------------------------------------------------

SLOW_PLUGIN = """
import time
from annotators.base import Annotator, NodeOutput
from annotators.registry import register


@register
class SlowMask(Annotator):
    '''A quarter of a second per image: slow enough to be interrupted mid-stage.'''
    name = "test_slow_mask"
    produces = ("foreground_mask",)

    def annotate(self, inputs, image_ids):
        time.sleep(0.25 * len(inputs))
        return [{"foreground_mask": NodeOutput(x["image"][..., 0])} for x in inputs]
"""


def _session_processes(sid: int) -> list[int]:
    """Pids still running in session `sid` (the interrupted run's driver, raylet, workers, ...)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.timeout(90)
def test_ctrl_c_during_annotate_is_one_line_and_the_rerun_resumes(tmp_path, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "slow_plugin.py").write_text(SLOW_PLUGIN)
    monkeypatch.syspath_prepend(str(plugins))  # small_params validates: the plugin must import here too
    monkeypatch.setenv("PYTHONPATH", f"{plugins}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    params = _params_file(tmp_path, count=24, annotators={"test_slow_mask": {"batch_size": 2}},
                          annotate={"plugins": ["slow_plugin"]}, ingest={"part_size": 6}, mine={"enabled": False})
    parts = tmp_path / "store" / "nodes" / "test_slow_mask"

    run = _vicl("run", "--params", str(params), start_new_session=True)  # its own group, as a terminal's job
    deadline = time.monotonic() + 60
    while not list(parts.glob("*/part-*.parquet")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGINT)  # Ctrl-C: SIGINT to the whole foreground group
    _, err = run.communicate(timeout=60)
    done = {p: p.stat().st_mtime_ns for p in parts.glob("*/part-*.parquet")}
    assert run.returncode == EXIT_INTERRUPTED, err
    assert 0 < len(done) < 4, "the interrupt must land while annotate runs"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert _last_line(err) == (f"vicl run: interrupted; finished parts and shards are kept; "
                               f"run `vicl run --params {params}` to resume")
    deadline = time.monotonic() + 10
    while _session_processes(run.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _session_processes(run.pid) == []  # Ray shut down: no raylet or worker left behind

    rerun = _vicl("annotate", "--params", str(params))
    out, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 0, err
    assert len(list(parts.glob("*/part-*.parquet"))) == 4
    assert {p: p.stat().st_mtime_ns for p in done} == done  # finished parts kept, not recomputed
