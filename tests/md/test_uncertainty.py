"""MD with a committee: frames over the force-spread threshold stop the run or are flagged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.io import read, write

from equiforce.cli.main import main
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.committee import CommitteeCalculator
from equiforce.md.dynamics import run_md
from equiforce.md.report import format_md_summary
from equiforce.md.uncertainty import UncertaintyWatch
from equiforce.models import save_model
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import make_fcc_cu


@pytest.fixture(scope="module")
def committee():
    """Two untrained tiny MACEs (different weights: a large, varying spread)."""
    return CommitteeCalculator([tiny_mace(torch.float64, seed=s) for s in (1, 2)])


def _md(committee, watch, n_steps=12):
    atoms = make_fcc_cu(repeat=1, seed=3, rattle=0.05)
    return run_md(atoms, committee, "nvt", 300.0, 1.0, n_steps, log_interval=4, watch=watch)


def test_flag_records_every_frame_over_the_threshold(tmp_path, committee):
    """flag: the run goes its length; exactly the steps over the threshold are written out."""
    probe = _md(committee, UncertaintyWatch(1e6, "flag")).uncertainty
    assert probe.n_flagged == 0 and len(probe.trace_max) == 13  # steps 0..12
    threshold = float(np.median(probe.trace_max))
    path = tmp_path / "uncertain.xyz"
    result = _md(committee, UncertaintyWatch(threshold, "flag", path=path))
    watched = result.uncertainty
    expected = [
        int(s) for s, v in zip(probe.trace_step, probe.trace_max, strict=True) if v > threshold
    ]
    assert watched.flagged_steps == expected and result.n_steps == 12
    assert not watched.stopped_early
    frames = read(path, index=":")
    assert [f.info["step"] for f in frames] == expected
    assert all(f.info["max_force_uncertainty"] > threshold for f in frames)
    assert frames[0].arrays["force_uncertainty"].shape == (4,)
    assert result.summary()["uncertainty"]["n_flagged"] == len(expected)
    assert "frames over threshold" in format_md_summary(result)


def test_stop_ends_the_run_at_the_first_uncertain_frame(committee):
    """stop: the run ends at the first step over the threshold; n_steps counts steps taken."""
    probe = _md(committee, UncertaintyWatch(1e6, "flag")).uncertainty
    threshold = float(np.max(probe.trace_max[:8])) * 0.999  # first crossing within 7 steps
    first = int(np.argmax(probe.trace_max > threshold))
    result = _md(committee, UncertaintyWatch(threshold, "stop"))
    assert result.uncertainty.stopped_early and result.uncertainty.flagged_steps == [first]
    assert result.n_steps == first


def test_watch_needs_a_committee(model64):
    """A single model has no spread: the watch says what it needs."""
    with pytest.raises(ValueError, match="needs a committee"):
        _md(EquiforceCalculator(model64), UncertaintyWatch(0.1))
    with pytest.raises(ValueError, match="threshold must be > 0"):
        UncertaintyWatch(0.0)


def test_cli_md_with_several_models_and_max_uncertainty(tmp_path):
    """``equiforce md m0 m1 start.xyz --max-uncertainty X``: summary, frames and figure."""
    models = [save_model(tiny_mace(torch.float64, seed=s), tmp_path / f"m{s}.pt") for s in (1, 2)]
    start = tmp_path / "start.xyz"
    write(start, make_fcc_cu(repeat=1, seed=3, rattle=0.05))
    out = tmp_path / "md"
    argv = ["md", *map(str, models), str(start), "--steps", "6", "--log-interval", "2"]
    assert main([*argv, "--out", str(out), "--max-uncertainty", "1e-6"]) == 0
    summary = json.loads((out / "md_summary.json").read_text())
    assert summary["uncertainty"]["stopped_early"] and summary["n_steps"] == 0
    assert len(read(out / "uncertain.xyz", index=":")) == 1
    assert (out / "uncertainty.png").exists()
    assert main(["md", str(models[0]), str(start), "--max-uncertainty", "0.1"]) == 2
