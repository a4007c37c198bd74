"""``equiforce md``: argument parsing, outputs written into ``--out``."""

from __future__ import annotations

import argparse
import json

import pytest
from ase.io import read, write

from equiforce.cli import md as md_cli
from equiforce.testing.structures import make_fcc_cu


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` with the ``md`` subcommand's options."""
    parser = argparse.ArgumentParser()
    md_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_md_writes_trajectory_summary_and_plot(model_file, tmp_path, capsys):
    write(tmp_path / "start.xyz", make_fcc_cu(repeat=1, seed=1))
    out = tmp_path / "run"
    args = parse(
        [
            model_file,
            str(tmp_path / "start.xyz"),
            "--ensemble",
            "nve",
            "--steps",
            "12",
            "--log-interval",
            "4",
            "--timestep",
            "1.0",
            "--out",
            str(out),
            "--seed",
            "3",
        ]
    )
    assert md_cli.run(args) == 0
    printed = capsys.readouterr().out
    assert "energy drift (meV/atom/ps)" in printed and "NVE" in printed
    summary = json.loads((out / md_cli.SUMMARY_NAME).read_text())
    assert summary["ensemble"] == "nve" and summary["n_steps"] == 12
    assert summary["energy_drift_meV_per_atom_per_ps"] is not None
    assert len(summary["temperature_K"]) == 4
    assert len(read(out / md_cli.TRAJECTORY_NAME, ":")) == 4
    assert (out / md_cli.PLOT_NAME).stat().st_size > 0


def test_cli_md_defaults():
    args = parse(["model.pt", "start.xyz"])
    assert (args.ensemble, args.temperature, args.timestep) == ("nvt", [300.0], 0.5)
    assert (args.steps, args.friction, args.seed) == (1000, 0.01, 0)


def test_cli_md_missing_structure_is_a_clear_error(model_file, tmp_path):
    args = parse([model_file, str(tmp_path / "missing.xyz"), "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="missing.xyz"):
        md_cli.run(args)


def test_cli_md_nose_hoover_thermostat(model_file, tmp_path):
    """``--thermostat nose-hoover --thermostat-time FS`` runs NVT with the chain (its damping
    time a setting of the run: a resume with Langevin is refused); ``--thermostat-time``
    without the chain or NPT is refused."""
    from equiforce.md.restart import load_restart

    write(tmp_path / "start.xyz", make_fcc_cu(repeat=1, seed=1))
    out = tmp_path / "run"
    argv = [model_file, str(tmp_path / "start.xyz"), "--steps", "6", "--log-interval", "3"]
    chain = ["--thermostat", "nose-hoover", "--thermostat-time", "25"]
    assert md_cli.run(parse([*argv, *chain, "--out", str(out)])) == 0
    settings = load_restart(out / md_cli.RESTART_NAME).meta["settings"]
    assert settings["nvt_thermostat"] == "nose-hoover" and settings["thermostat_time_fs"] == 25.0
    assert settings["friction_per_fs"] is None
    with pytest.raises(ValueError, match="started with friction_per_fs = None"):
        md_cli.run(parse([*argv, "--steps", "9", "--out", str(out), "--resume"]))
    with pytest.raises(ValueError, match="--thermostat-time need --ensemble npt"):
        md_cli.run(parse([*argv, "--thermostat-time", "25", "--out", str(tmp_path / "b")]))


def test_cli_md_temperature_ramp(model_file, tmp_path):
    """``--temperature-end`` ramps NVT's target (recorded in the summary); one value without
    ``--batched``."""
    write(tmp_path / "start.xyz", make_fcc_cu(repeat=1, seed=1))
    out = tmp_path / "run"
    argv = [model_file, str(tmp_path / "start.xyz"), "--steps", "4", "--log-interval", "2"]
    assert md_cli.run(parse([*argv, "--temperature-end", "900", "--out", str(out)])) == 0
    summary = json.loads((out / md_cli.SUMMARY_NAME).read_text())
    assert summary["temperature_final_target_K"] == 900.0 and summary["thermostat"] == "langevin"
    with pytest.raises(ValueError, match="--temperature-end: one value"):
        md_cli.run(parse([*argv, "--temperature-end", "9", "10", "--out", str(tmp_path / "b")]))
