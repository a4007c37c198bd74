"""MD restart files: a run killed at any step, resumed, equals the run never stopped (bit for
bit: samples, final state, trajectory), for every ensemble; bad resumes are named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase.io import read, write

from equiforce.cli.main import main
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.committee import CommitteeCalculator
from equiforce.md.dynamics import NPTSettings, run_md
from equiforce.md.uncertainty import UncertaintyWatch
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import make_fcc_cu

RUN = {"temperature_K": 600.0, "timestep_fs": 1.0, "log_interval": 5, "seed": 4}


def _killed_after(calculator, calls: int):
    """``calculator``, raising ``KeyboardInterrupt`` (a kill) in its ``calls``+1-th evaluation."""
    evaluate, left = calculator.calculate, [calls]

    def calculate(*args, **kwargs):
        if left[0] == 0:
            raise KeyboardInterrupt
        left[0] -= 1
        evaluate(*args, **kwargs)

    calculator.calculate = calculate
    return calculator


def _frames_equal(a, b) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x.positions, y.positions)
        and np.array_equal(x.get_momenta(), y.get_momenta())
        and np.array_equal(x.cell.array, y.cell.array)
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize(
    "ensemble, npt, suffix, thermostat",
    [
        ("nvt", None, ".traj", "langevin"),
        ("nvt", None, ".xyz", "nose-hoover"),
        ("nve", None, ".xyz", "langevin"),
        ("npt", NPTSettings(anisotropic=True, barostat_time_fs=100.0), ".xyz", "langevin"),
        ("npt", NPTSettings(barostat="c-rescale", barostat_time_fs=100.0), ".traj", "langevin"),
    ],
)
def test_a_killed_run_resumed_equals_the_run_never_stopped(
    model64, tmp_path, ensemble, npt, suffix, thermostat
):
    atoms = make_fcc_cu(repeat=1, seed=2)
    settings = dict(RUN, ensemble=ensemble, npt=npt, restart_every=10, thermostat=thermostat)
    whole = run_md(
        atoms,
        EquiforceCalculator(model64),
        n_steps=30,
        trajectory_path=tmp_path / f"whole{suffix}",
        restart_path=tmp_path / "whole.npz",
        **settings,
    )
    trajectory, restart = tmp_path / f"killed{suffix}", tmp_path / "killed.npz"
    with pytest.raises(KeyboardInterrupt):  # killed in step 27: restart file of step 20
        run_md(
            atoms,
            _killed_after(EquiforceCalculator(model64), calls=27),
            n_steps=30,
            trajectory_path=trajectory,
            restart_path=restart,
            **settings,
        )
    assert len(read(trajectory, ":")) == 6  # steps 0-25: frame 25 is written again
    resumed = run_md(
        atoms,
        EquiforceCalculator(model64),
        n_steps=30,
        trajectory_path=trajectory,
        restart_path=restart,
        resume=True,
        **settings,
    )
    assert resumed.n_steps == whole.n_steps == 30
    for name in ("time_fs", "potential_energy", "kinetic_energy", "temperature_K"):
        assert np.array_equal(getattr(resumed, name), getattr(whole, name)), name
    if npt is not None:
        assert np.array_equal(resumed.volume_A3, whole.volume_A3)
        assert np.array_equal(resumed.pressure_GPa, whole.pressure_GPa)
    assert resumed.bonds == whole.bonds
    assert _frames_equal([resumed.final_atoms], [whole.final_atoms])
    assert _frames_equal(read(trajectory, ":"), read(tmp_path / f"whole{suffix}", ":"))
    if suffix == ".xyz":
        assert trajectory.read_bytes() == (tmp_path / f"whole{suffix}").read_bytes()


def test_a_resume_with_other_settings_or_no_steps_left_is_refused(model64, tmp_path):
    atoms = make_fcc_cu(repeat=1, seed=2)
    restart = tmp_path / "run.npz"
    common = dict(RUN, ensemble="nvt", restart_path=restart)
    run_md(atoms, EquiforceCalculator(model64), n_steps=10, **common)
    calculator = EquiforceCalculator(model64)
    with pytest.raises(ValueError, match="started with temperature_K = 600.0; this call gives 300"):
        run_md(atoms, calculator, n_steps=20, resume=True, **dict(common, temperature_K=300.0))
    with pytest.raises(ValueError, match="started with atomic_numbers_sha256"):
        run_md(make_fcc_cu(repeat=1, seed=5), calculator, n_steps=20, resume=True, **common)
    with pytest.raises(ValueError, match="has taken 10 steps already"):
        run_md(atoms, calculator, n_steps=10, resume=True, **common)
    with pytest.raises(ValueError, match="started with uncertainty_watch = None"):
        run_md(atoms, calculator, n_steps=20, resume=True, watch=UncertaintyWatch(1.0), **common)
    with pytest.raises(FileNotFoundError, match="other.npz: no restart file"):
        run_md(
            atoms,
            calculator,
            n_steps=20,
            resume=True,
            **dict(common, restart_path=tmp_path / "other.npz"),
        )


def test_a_committee_run_with_an_uncertainty_watch_resumes_exactly(tmp_path):
    members = [tiny_mace(torch.float64, seed=s) for s in (1, 2)]
    atoms = make_fcc_cu(repeat=1, seed=3)
    settings = dict(RUN, ensemble="nvt", n_steps=30, restart_every=10)
    probe = run_md(
        atoms, CommitteeCalculator(members), watch=UncertaintyWatch(1e6, "flag"), **settings
    )
    threshold = float(np.median(probe.uncertainty.trace_max))  # about half the steps flagged

    def run(name, calculator, resume=False):
        watch = UncertaintyWatch(threshold, "flag", path=tmp_path / f"{name}.xyz")
        restart = tmp_path / f"{name}.npz"
        return run_md(
            atoms, calculator, watch=watch, restart_path=restart, resume=resume, **settings
        )

    whole = run("whole", CommitteeCalculator(members))
    with pytest.raises(KeyboardInterrupt):
        run("killed", _killed_after(CommitteeCalculator(members), calls=27))
    resumed = run("killed", CommitteeCalculator(members), resume=True)
    want, got = whole.uncertainty, resumed.uncertainty
    assert 5 < want.n_flagged < 25 and got.flagged_steps == want.flagged_steps
    assert np.array_equal(got.trace_step, want.trace_step)
    assert np.array_equal(got.trace_max, want.trace_max)
    assert (tmp_path / "killed.xyz").read_bytes() == (tmp_path / "whole.xyz").read_bytes()
    assert np.array_equal(resumed.temperature_K, whole.temperature_K)

    stopped = UncertaintyWatch(threshold, "stop", path=tmp_path / "stop.xyz")
    run_md(
        atoms,
        CommitteeCalculator(members),
        watch=stopped,
        restart_path=tmp_path / "stop.npz",
        **settings,
    )
    again = UncertaintyWatch(threshold, "stop", path=tmp_path / "stop.xyz")
    with pytest.raises(ValueError, match="the uncertainty watch stopped this run"):
        run_md(
            atoms,
            CommitteeCalculator(members),
            watch=again,
            restart_path=tmp_path / "stop.npz",
            resume=True,
            **dict(settings, n_steps=40),
        )


def test_cli_md_resume_extends_a_run_as_one_longer_run(model_file, tmp_path, capsys):
    start = tmp_path / "start.xyz"
    write(start, make_fcc_cu(repeat=1, seed=3))
    argv = ["md", model_file, str(start), "--log-interval", "2", "--restart-every", "3"]
    assert main([*argv, "--steps", "12", "--out", str(tmp_path / "one")]) == 0
    two = tmp_path / "two"
    assert main([*argv, "--steps", "8", "--out", str(two)]) == 0
    assert main([*argv, "--steps", "12", "--out", str(two)]) == 1
    assert "holds a run (md_restart.npz): --resume continues it" in capsys.readouterr().err
    assert main([*argv, "--steps", "12", "--out", str(two), "--resume"]) == 0
    one, two = (json.loads((tmp_path / k / "md_summary.json").read_text()) for k in ("one", "two"))
    assert one["n_steps"] == two["n_steps"] == 12
    assert one["temperature_K"] == two["temperature_K"] and len(one["time_fs"]) == 7
    assert _frames_equal(
        read(tmp_path / "one" / "md.traj", ":"), read(tmp_path / "two" / "md.traj", ":")
    )
