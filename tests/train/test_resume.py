"""A run killed with SIGKILL inside a later epoch and resumed equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from equiforce.train.checkpoint import load_checkpoint, save_checkpoint
from equiforce.train.config import RunConfig, load_config
from equiforce.train.metrics import read_metrics_csv
from equiforce.train.run import train

from .conftest import TINY_MODELS, assert_same_rows, config_dict

# The child counts optimizer steps in a file (after each EMA update) and waits after step
# argv[3] until the parent kills it, so the kill lands at a known point however the two
# processes are scheduled; neither touches the numbers.
_CHILD = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path
    from equiforce.train import ema
    from equiforce.train.config import load_config
    from equiforce.train.run import train

    steps_file, kill_step = Path(sys.argv[2]), int(sys.argv[3])
    update = ema.ExponentialMovingAverage.update

    def counting_update(self, model):
        update(self, model)
        steps_file.write_text(f"{self.num_updates}\\n")
        if self.num_updates == kill_step:
            time.sleep(600)  # the parent kills it here

    ema.ExponentialMovingAverage.update = counting_update
    train(load_config(sys.argv[1]))
    """
)
STEPS_PER_EPOCH = 3  # 9 training structures, batch size 3


def _steps_done(steps_file: Path) -> int:
    text = steps_file.read_text() if steps_file.exists() else ""
    return int(text) if text.endswith("\n") else 0


def _kill_after_step(config_file: Path, steps_file: Path, step: int, log: Path) -> None:
    """Run training in a child process and SIGKILL it once ``step`` steps are done."""
    with open(log, "wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(config_file), str(steps_file), str(step)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 120.0
            while _steps_done(steps_file) < step:
                assert child.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the child run is too slow"
                time.sleep(0.005)
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()


@pytest.mark.parametrize("family", sorted(TINY_MODELS))
def test_resume_after_sigkill_mid_epoch_reproduces_uninterrupted_run(
    tmp_path, emt_train_file, reference_runs, family
):
    reference_run = reference_runs(family)
    out = tmp_path / "killed"
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump(config_dict(out, emt_train_file, TINY_MODELS[family])))
    steps_file = tmp_path / "steps.txt"
    _kill_after_step(config_file, steps_file, STEPS_PER_EPOCH + 1, tmp_path / "child.log")
    at_kill = load_checkpoint(out / "checkpoints" / "last.pt")  # loadable despite the kill
    assert at_kill["progress"]["epochs_done"] == 1, "the kill did not land inside epoch 2"
    assert _steps_done(steps_file) < 2 * STEPS_PER_EPOCH

    resumed = train(load_config(config_file), resume=True)
    assert resumed.epochs_completed == 3
    assert_same_rows(
        read_metrics_csv(resumed.metrics_csv), read_metrics_csv(reference_run.metrics_csv)
    )
    expected = load_checkpoint(reference_run.last_checkpoint)
    actual = load_checkpoint(resumed.last_checkpoint)
    for name, value in expected["train_state_dict"].items():
        assert torch.equal(actual["train_state_dict"][name], value), name
    for name, value in expected["model"]["state_dict"].items():
        assert torch.equal(actual["model"]["state_dict"][name], value), name
    for name, value in expected["ema"]["shadow"].items():
        assert torch.equal(actual["ema"]["shadow"][name], value), name


def test_resume_a_checkpoint_written_before_newer_settings_existed(tmp_path, emt_train_file):
    """A checkpoint whose config lacks sections added later resumes with their defaults."""
    config = config_dict(tmp_path / "run", emt_train_file, max_epochs=1)
    config["training"]["stage_two"] = {"enabled": False}
    train(RunConfig.from_dict(config))
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    checkpoint = load_checkpoint(last)
    del checkpoint["config"]["precision"]  # as written before these sections existed
    del checkpoint["config"]["training"]["finetune"]
    save_checkpoint(checkpoint, last)

    config["training"]["max_epochs"] = 2
    assert train(RunConfig.from_dict(config), resume=True).epochs_completed == 2

    checkpoint = load_checkpoint(last)
    checkpoint["config"]["training"]["retired_setting"] = 1
    save_checkpoint(checkpoint, last)
    config["training"]["max_epochs"] = 3
    with pytest.raises(
        ValueError,
        match=r"last\.pt: its configuration no longer parses.*"
        r"retired_setting",
    ):
        train(RunConfig.from_dict(config), resume=True)
