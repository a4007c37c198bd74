"""equiforce learn with EMT as labeller on 4-atom Cu/Au cells: rounds, growth, resume."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ase.io import read, write

from equiforce.cli.main import main
from equiforce.md.committee import CommitteeCalculator
from equiforce.models import save_model
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.typed_config import ConfigError
from equiforce.workflows.calibration import committee_errors, fit_spread_scales
from equiforce.workflows.learn import LearnConfig, learn, select_frames
from equiforce.workflows.learn import run as learn_run
from tests.train.conftest import TINY_MACE


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Initial data: 6 slightly rattled cells (EMT labels); MD starts: two cells."""
    folder = tmp_path_factory.mktemp("learn")
    initial = [emt_labelled(make_fcc_cu(repeat=1, seed=s, rattle=0.05)) for s in range(6)]
    write(folder / "initial.xyz", initial, format="extxyz")
    write(folder / "starts.xyz", [make_fcc_cu(repeat=1, seed=s, rattle=0.0) for s in (7, 8)])
    valid = [emt_labelled(make_fcc_cu(repeat=1, seed=s, rattle=0.08)) for s in (20, 21, 22)]
    write(folder / "valid.xyz", valid, format="extxyz")
    return {
        "train": folder / "initial.xyz",
        "starts": folder / "starts.xyz",
        "valid": folder / "valid.xyz",
    }


def learn_dict(out: Path, files: dict[str, Path], **changes: Any) -> dict[str, Any]:
    """Two tiny members, 40 MD steps at 600 K, up to 4 frames labelled per round."""
    values: dict[str, Any] = {
        "output_dir": str(out),
        "seed": 1,
        "teacher": {"calculator": "ase.calculators.emt:EMT"},
        "data": {"train_file": str(files["train"]), "valid_fraction": 0.2, "batch_size": 4},
        "model": dict(TINY_MACE),
        "training": {"max_epochs": 15, "lr": 0.02, "progress_bar": False, "device": "cpu"},
        "committee": {"size": 2},
        "md": {
            "structures": str(files["starts"]),
            "temperature_K": 600.0,
            "timestep_fs": 2.0,
            "n_steps": 40,
            "log_interval": 10,
        },
        "selection": {"threshold": 0.1, "max_frames": 4, "min_separation": 5, "stop_after": 20},
        "max_rounds": 2,
    }
    values.update(changes)
    return values


def test_rounds_grow_the_data_and_a_killed_loop_resumes(tmp_path, files, monkeypatch):
    """Round 1 is killed while fine-tuning, the rerun continues it (labels from the cache)."""
    config = LearnConfig.from_dict(learn_dict(tmp_path / "out", files))
    out = tmp_path / "out"
    real_train = learn_run._train

    def killed_in_round_one(config, folder, train_file, init_models):
        if folder.name == "round_1":
            raise KeyboardInterrupt("killed")
        return real_train(config, folder, train_file, init_models)

    monkeypatch.setattr(learn_run, "_train", killed_in_round_one)
    with pytest.raises(KeyboardInterrupt):
        learn(config)
    assert (out / "round_1" / "selected.xyz").exists()
    assert not (out / "round_1" / "round.json").exists()
    mtime = (out / "round_0" / "round.json").stat().st_mtime_ns

    monkeypatch.setattr(learn_run, "_train", real_train)
    result = learn(config)
    assert (out / "round_0" / "round.json").stat().st_mtime_ns == mtime  # kept, not redone
    zero, one, *rest = result.rounds
    assert zero["n_train_frames"] == 6
    assert one["n_flagged"] >= 1 and 1 <= len(one["selected_steps"]) <= 4
    assert one["labels_computed"] == 0  # the killed run labelled them: read from the cache
    assert one["n_train_frames"] == 6 + len(one["selected_steps"])
    selected = read(out / "round_1" / "selected.xyz", index=":")
    assert len(selected) == len(one["selected_steps"])
    for k in range(1, len(result.rounds)):
        assert (out / f"round_{k}" / "uncertainty.png").exists()
        assert (out / f"round_{k}" / "md" / "md_summary.json").exists()
    assert all(Path(p).exists() for p in result.models) and result.figure.exists()
    # with the labelled frames the committee is more certain: the loop stops (MD under the
    # threshold for its full length) or the largest spread fell
    last = result.rounds[-1]
    assert result.converged or last["max_force_uncertainty"] < one["max_force_uncertainty"]
    if result.converged:
        assert last["md"]["n_steps"] == 40 and last["n_flagged"] == 0


def test_cli_continues_with_more_rounds_and_refuses_changed_settings(tmp_path, files):
    """From one model file: round 0 fine-tunes two copies of it; ``equiforce learn`` runs one
    round, ``--max-rounds 2`` adds one; other changes fail."""
    start = save_model(tiny_mace(torch.float64), tmp_path / "start.pt")
    values = learn_dict(tmp_path / "out", files, max_rounds=1, start={"models": [str(start)]})
    values["model"] = {"family": "mace"}  # the start model's hyperparameters
    values["training"]["max_epochs"] = 2  # the plumbing only: short training and MD
    values["md"].update(n_steps=10, log_interval=5)
    values["selection"].update(threshold=0.001, stop_after=4)  # barely trained members agree
    path = tmp_path / "learn.yaml"
    path.write_text(json.dumps(values))
    assert main(["learn", str(path)]) == 0
    assert main(["learn", str(path), "--max-rounds", "2"]) == 0
    assert (tmp_path / "out" / "round_2" / "round.json").exists()
    member = json.loads((tmp_path / "out/round_0/committee/member_1/member.json").read_text())
    assert member["init_model"] == str(start.resolve())
    values["selection"]["threshold"] = 0.2
    path.write_text(json.dumps(values))
    assert main(["learn", str(path)]) == 2  # ValueError naming the changed key


def test_each_rounds_committee_is_calibrated_and_the_next_md_uses_its_scales(
    tmp_path, files, monkeypatch
):
    """``selection.calibration: per-species``: round 0's committee gets the per-species
    scales that ``fit_spread_scales`` finds on ``data.valid_file``, stored in its record, and
    round 1's MD watches that calibrated committee; without a valid file the key is named."""
    values = learn_dict(tmp_path / "out", files, max_rounds=1)
    values["data"] = {"train_file": str(files["train"]), "valid_file": str(files["valid"])}
    values["data"]["batch_size"] = 4
    values["training"]["max_epochs"] = 4
    values["md"].update(n_steps=10, log_interval=5)
    values["selection"].update(calibration="per-species", stop_after=4)
    watched = []
    real_run_md = learn_run.run_md

    def run_md(atoms, calculator, **kwargs):
        watched.append(calculator)
        return real_run_md(atoms, calculator, **kwargs)

    monkeypatch.setattr(learn_run, "run_md", run_md)
    result = learn(LearnConfig.from_dict(values))
    zero = result.rounds[0]
    errors = committee_errors(CommitteeCalculator(zero["models"]), read(files["valid"], ":"))
    want = fit_spread_scales(errors, per_species=True)
    assert zero["spread_scales"] == {key: v for key, v in want.items() if v is not None}
    assert sorted(zero["spread_scales"]["force_spread_scale_by_species"]) == ["Au", "Cu"]
    (calculator,) = watched
    assert calculator.force_spread_scale == zero["spread_scales"]["force_spread_scale"]
    assert calculator.force_spread_scale_by_species == want["force_spread_scale_by_species"]
    one = result.rounds[1]
    assert not one["converged"] and one["spread_scales"] != zero["spread_scales"]  # refitted
    assert sorted(one["spread_scales"]["force_spread_scale_by_species"]) == ["Au", "Cu"]
    del values["data"]["valid_file"]
    with pytest.raises(ConfigError, match="selection.calibration: needs data.valid_file"):
        LearnConfig.from_dict(values)
    values["selection"]["calibration"] = "isotonic"
    with pytest.raises(ConfigError, match="selection.calibration"):
        LearnConfig.from_dict(values)


def test_random_strategy_labels_random_frames_of_the_whole_md(tmp_path, files):
    """``selection.strategy: random`` (the control of active learning): with every frame over
    the threshold and ``stop_after: 2``, round 1's MD still runs all its 40 steps, and the
    labelled frames are trajectory frames (steps 10-40, every ``log_interval``) apart by
    ``min_separation``, whatever their spread (the default strategy would stop that MD after
    2 steps and label from those)."""
    values = learn_dict(tmp_path / "out", files, max_rounds=1)
    values["training"]["max_epochs"] = 2
    values["selection"].update(
        threshold=1e-6, stop_after=2, max_frames=2, min_separation=10, strategy="random"
    )
    one = learn(LearnConfig.from_dict(values)).rounds[1]
    # the unrattled start has zero forces (no spread): steps 1-40 flagged, the MD not stopped
    assert one["md"]["n_steps"] == 40 and one["n_flagged"] == 40
    steps = one["selected_steps"]
    assert len(steps) == 2 and set(steps) <= {10, 20, 30, 40} and steps[1] - steps[0] >= 10
    trajectory = read(tmp_path / "out" / "round_1" / "md" / "md.traj", ":")
    selected = read(tmp_path / "out" / "round_1" / "selected.xyz", ":")
    for step, atoms in zip(steps, selected, strict=True):
        assert abs(atoms.positions - trajectory[step // 10].positions).max() < 1e-6
    candidates = learn_run.trajectory_frames(
        tmp_path / "out" / "round_1" / "md" / "md.traj",
        LearnConfig.from_dict(values).md,
        [(s, u) for s, u in zip(range(41), [0.0] * 41, strict=True)],
    )
    assert [f.step for f in candidates] == [10, 20, 30, 40]
    assert not one["threshold_below_spread"]  # the MD ran its length
    values["selection"]["strategy"] = "entropy"
    with pytest.raises(ConfigError, match="selection.strategy"):
        LearnConfig.from_dict(values)


def test_a_threshold_below_the_spread_everywhere_is_reported(tmp_path, files):
    """Every step over the threshold: the MD stops after ``stop_after`` (2) steps of its 40;
    the round says so (``threshold_below_spread``) and a warning names the keys to change."""
    values = learn_dict(tmp_path / "out", files, max_rounds=1)
    values["training"]["max_epochs"] = 2
    values["selection"].update(threshold=1e-6, stop_after=2)
    warnings = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    learn_run.LOG.addHandler(handler)
    try:
        one = learn(LearnConfig.from_dict(values)).rounds[1]
    finally:
        learn_run.LOG.removeHandler(handler)
    assert one["md"]["n_steps"] == 2 and one["threshold_below_spread"]
    (warning,) = [w for w in warnings if "over selection.threshold" in w]
    assert "explored 2 of md.n_steps = 40 steps" in warning
    assert "stop_after > md.n_steps" in warning


@pytest.mark.parametrize(
    "walkers, barostat, pressures", [(1, "berendsen", 5.0), (2, "mtk", [5.0, -2.0])]
)
def test_npt_exploration_changes_the_cells(tmp_path, files, walkers, barostat, pressures):
    """``md.pressure_GPa``: the round's MD is NPT (one walker through ASE, two batched, each
    at its own pressure: a ladder), driven by the committee's stress: the cells' volumes
    move, the targets and the barostat are recorded; a ladder of another length than the
    walkers is refused by name."""
    if walkers > 1:
        pytest.importorskip("torch_sim")
    values = learn_dict(tmp_path / "out", files, max_rounds=1)
    values["training"]["max_epochs"] = 2
    values["md"].update(walkers=walkers, n_steps=10, log_interval=5, pressure_GPa=pressures)
    values["md"].update(barostat_time_fs=100.0, barostat=barostat)
    learn(LearnConfig.from_dict(values))
    summary = json.loads((tmp_path / "out" / "round_1" / "md" / "md_summary.json").read_text())
    runs = summary["walkers"] if walkers > 1 else [summary]
    assert len(runs) == walkers
    targets = pressures if walkers > 1 else [pressures]
    for run, target in zip(runs, targets, strict=True):
        assert run["ensemble"] == "npt" and run["pressure_target_GPa"] == target
        assert run["barostat"] == barostat
        assert abs(run["volume_A3"][-1] - run["volume_A3"][0]) > 1e-3
    values["md"].update(pressure_GPa=[1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="md.pressure_GPa: 3 pressures for md.walkers"):
        LearnConfig.from_dict(values)


def test_an_md_that_ran_its_length_is_not_reported_cut_short():
    """Every step flagged with ``stop_after`` one more than ``md.n_steps``: the watch's stop
    coincides with the MD's last step, which explored its whole length (no warning)."""
    from types import SimpleNamespace

    def summary(steps: int):
        return SimpleNamespace(
            stopped_early=True, trace_step=np.arange(steps + 1), n_flagged=steps + 1
        )

    assert not learn_run._threshold_below_spread(summary(40), n_steps=40)
    assert learn_run._threshold_below_spread(summary(2), n_steps=40)


def test_selection_takes_the_most_uncertain_frames_apart():
    """Largest spread first, at least min_separation steps apart within a walker, returned
    in (walker, step) order."""
    frames = [
        learn_run.FlaggedFrame(s, 2.0 * s, u, 0.0, None)
        for s, u in [(0, 0.5), (2, 0.9), (3, 0.8), (10, 0.6), (20, 0.7)]
    ]
    chosen = select_frames([frames], max_frames=3, min_separation=5)
    assert [(w, f.step) for w, f in chosen] == [(0, 2), (0, 10), (0, 20)]
    other = [learn_run.FlaggedFrame(3, 6.0, 0.85, 0.0, None)]  # step 3 of another walker
    chosen = select_frames([frames, other], max_frames=3, min_separation=5)
    assert [(w, f.step) for w, f in chosen] == [(0, 2), (0, 20), (1, 3)]


def test_walkers_explore_several_starts_at_once(tmp_path, files):
    """``md.walkers: 2`` at 600 and 900 K: round 1 runs both starts at once (batched MD),
    walker w from frame w with the velocities of seed ``seed + 1 * 2 + w`` at its temperature,
    each with its own trajectory and flagged frames; the labelled frames are flagged frames of
    their walker."""
    pytest.importorskip("torch_sim")
    from ase.md.velocitydistribution import Stationary, thermalize_momenta

    values = learn_dict(tmp_path / "out", files, max_rounds=1)
    values["training"]["max_epochs"] = 2
    values["md"].update(walkers=2, n_steps=20, temperature_K=[600.0, 900.0])
    values["selection"].update(threshold=0.006, max_frames=4, stop_after=6)
    one = learn(LearnConfig.from_dict(values)).rounds[1]
    md = tmp_path / "out" / "round_1" / "md"
    starts = read(files["starts"], ":")
    flagged = []
    for w in range(2):
        first = read(md / f"md_{w:04d}.traj", 0)
        np.testing.assert_allclose(first.positions, starts[w].positions, atol=1e-12)
        expected = starts[w].copy()
        temperature = (600.0, 900.0)[w]
        thermalize_momenta(expected, temperature_K=temperature, rng=np.random.default_rng(3 + w))
        Stationary(expected)
        np.testing.assert_allclose(first.get_momenta(), expected.get_momenta(), atol=1e-12)
        path = md / f"uncertain_{w:04d}.xyz"
        flagged.append(read(path, ":") if path.stat().st_size else [])
    assert one["n_flagged"] == sum(len(f) for f in flagged) >= 2
    walkers = one["md"]["walkers"]  # each walker's figures in the round's record
    assert [w["n_flagged"] for w in walkers] == [len(f) for f in flagged]
    assert [w["temperature_target_K"] for w in walkers] == [600.0, 900.0]
    selected = read(tmp_path / "out" / "round_1" / "selected.xyz", ":")
    assert len(selected) == len(one["selected_walkers"])
    assert set(one["selected_walkers"]) == {0, 1}  # both walkers flagged (6 each, stopped)
    summary = json.loads((md / "md_summary.json").read_text())
    for w, step, atoms in zip(
        one["selected_walkers"], one["selected_steps"], selected, strict=True
    ):
        steps = summary["walkers"][w]["uncertainty"]["flagged_steps"]
        frame = flagged[w][steps.index(step)]
        np.testing.assert_allclose(atoms.positions, frame.positions, atol=1e-6)
    assert (tmp_path / "out" / "round_1" / "uncertainty.png").exists()


def test_config_errors_name_the_key(files, tmp_path):
    """Unknown keys and bad values are reported with their key path."""
    with pytest.raises(ConfigError, match="md.temprature_K"):
        LearnConfig.from_dict(
            learn_dict(tmp_path, files, md={"structures": "x", "temprature_K": 3})
        )
    with pytest.raises(ConfigError, match="selection.threshold"):
        LearnConfig.from_dict(learn_dict(tmp_path, files, selection={"threshold": 0}))
    with pytest.raises(ConfigError, match="md.walkers: must be >= 1"):
        LearnConfig.from_dict(learn_dict(tmp_path, files, md={"structures": "x", "walkers": 0}))
    with pytest.raises(ConfigError, match=r"md.barostat: must be one of \['mtk', 'berendsen', "):
        LearnConfig.from_dict(learn_dict(tmp_path, files, md={"structures": "x", "barostat": "nh"}))
    ladder = {"structures": "x", "walkers": 2, "temperature_K": [300, "hot"]}
    with pytest.raises(ConfigError, match=r"md.temperature_K\[1\]: expected a number"):
        LearnConfig.from_dict(learn_dict(tmp_path, files, md=ladder))
    ladder["temperature_K"] = [300, 600, 900]
    with pytest.raises(ConfigError, match="3 temperatures for md.walkers = 2"):
        LearnConfig.from_dict(learn_dict(tmp_path, files, md=ladder))
    with pytest.raises(ConfigError, match="start.models"):
        LearnConfig.from_dict(learn_dict(tmp_path, files, start={"models": "model.pt"}))
    three = [tmp_path / f"m{k}.pt" for k in range(3)]
    for path in three:
        path.touch()
    config = learn_dict(tmp_path / "out", files, start={"models": [str(p) for p in three]})
    with pytest.raises(ValueError, match="start.models: 3 models, but committee.size is 2"):
        learn(LearnConfig.from_dict(config))
    with pytest.raises(ConfigError, match="teacher"):
        LearnConfig.from_dict(learn_dict(tmp_path, files, teacher={}))
