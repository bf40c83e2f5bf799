"""Checkpoints resume with torch.load(weights_only=True): a crafted optimizer.pt cannot run code."""

from __future__ import annotations

import pickle

import pytest
import torch
from shard_fixtures import write_shards
from training_helpers import tiny_base, tiny_params

from training.loop import (OPTIMIZER_FILE, UnsafeCheckpointError, _check_plain, latest_checkpoint,
                           load_training_state, save_training_state, train)


class _Payload:
    """Unpickling this runs a shell command (what a hostile checkpoint would carry)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _optimizer_and_scheduler(steps: int = 3):
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4))
    for _ in range(steps):
        model(torch.randn(5, 6)).square().mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def test_training_state_round_trips_weights_only(tmp_path):
    model, opt, sched = _optimizer_and_scheduler()
    path = tmp_path / OPTIMIZER_FILE
    save_training_state(path, opt, sched)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # loads: tensors and plain values only
    assert set(raw) == {"optimizer", "scheduler"}
    fresh_model = torch.nn.Linear(6, 3)
    fresh_opt = torch.optim.AdamW(fresh_model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.01)
    fresh_sched = torch.optim.lr_scheduler.LambdaLR(fresh_opt, lambda s: min(1.0, (s + 1) / 4))
    state = load_training_state(path)
    fresh_opt.load_state_dict(state["optimizer"])
    fresh_sched.load_state_dict(state["scheduler"])
    a, b = opt.state_dict(), fresh_opt.state_dict()
    for i, s in a["state"].items():
        for k, v in s.items():
            assert torch.equal(v, b["state"][i][k]), k
    assert a["param_groups"] == b["param_groups"]
    assert fresh_sched.last_epoch == sched.last_epoch == 3 and fresh_sched.get_last_lr() == sched.get_last_lr()


def test_crafted_pickle_is_rejected_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / OPTIMIZER_FILE
    torch.save({"optimizer": _Payload(marker), "scheduler": {}}, path)
    with pytest.raises(UnsafeCheckpointError, match="refusing to resume"):
        load_training_state(path)
    assert not marker.exists()
    bare = tmp_path / "bare.pt"
    bare.write_bytes(pickle.dumps(_Payload(marker)))  # a plain pickle, not torch's zip format
    with pytest.raises(UnsafeCheckpointError):
        load_training_state(bare)
    assert not marker.exists()


def test_payload_would_run_with_an_unsafe_load(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / OPTIMIZER_FILE
    torch.save({"optimizer": _Payload(marker), "scheduler": {}}, path)
    torch.load(path, weights_only=False)  # what resume did before: the command runs
    assert marker.exists()


def test_only_plain_state_is_saved(tmp_path):
    _check_plain({"a": [1, 2.0, None, "x", (True,)], 3: torch.zeros(2)})
    with pytest.raises(TypeError, match="object"):
        _check_plain({"param_groups": [{"hook": object()}]})
    _, opt, _ = _optimizer_and_scheduler(1)

    class Callable:  # LambdaLR keeps the __dict__ of callable objects in its state
        def __init__(self):
            self.fn = lambda s: 1.0

        def __call__(self, s):
            return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, Callable())
    with pytest.raises(TypeError, match="function"):
        save_training_state(tmp_path / OPTIMIZER_FILE, opt, sched)


def test_latest_checkpoint_ignores_temporary_and_odd_folders(tmp_path):
    root = tmp_path / "checkpoints"
    for name in ("step-00000003", "step-00000010", "step-00000012.tmp", "step-abc", "step-00000020"):
        (root / name).mkdir(parents=True)
        if name != "step-00000020":  # 20 is unfinished: no state.json
            (root / name / "state.json").write_text('{"step": 1}')
    assert latest_checkpoint(tmp_path).name == "step-00000010"


def test_resume_with_a_crafted_optimizer_file_stops_with_a_clear_error(tmp_path):
    shards = write_shards(tmp_path / "shards", n_samples=2, per_shard=2, cell=32)
    params = tiny_params("flux", shards, tmp_path / "run", max_steps=2, checkpoint_every=1)
    train(params, base=tiny_base("flux"), max_steps=1)
    ckpt = latest_checkpoint(tmp_path / "run")
    assert ckpt is not None and ckpt.name == "step-00000001"
    marker = tmp_path / "pwned"
    torch.save({"optimizer": _Payload(marker), "scheduler": {}}, ckpt / OPTIMIZER_FILE)
    with pytest.raises(UnsafeCheckpointError, match=str(ckpt)):
        train(params, base=tiny_base("flux"))  # resume is on by default
    assert not marker.exists()
