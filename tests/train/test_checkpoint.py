"""Checkpoints are written atomically and checked on reading."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from equiforce.train.checkpoint import (
    Progress,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


class _FailsWhilePickling:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated) in the middle of the write")


def _checkpoint(epochs_done: int, config=None) -> dict:
    return {
        "model": {},
        "train_state_dict": {"w": torch.arange(3.0)},
        "optimizer": {},
        "schedule": {},
        "ema": None,
        "progress": Progress(epochs_done=epochs_done).to_dict(),
        "rng": capture_rng_state(),
        "config": config or {},
    }


def test_failed_write_keeps_previous_checkpoint_loadable(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(_checkpoint(1), path)
    with pytest.raises(RuntimeError, match="simulated"):
        save_checkpoint(_checkpoint(2, {"bad": _FailsWhilePickling()}), path)
    assert load_checkpoint(path)["progress"]["epochs_done"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_truncated_or_foreign_files_are_rejected_with_the_path(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(_checkpoint(1), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(path)
    torch.save({"something": 1}, path)
    with pytest.raises(ValueError, match="not an equiforce training checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_round_trip():
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    restore_rng_state(state)
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(1), expected[2])
