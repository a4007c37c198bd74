"""Smoke test of ``python -m benchmarks.active_learning_xtb``: two tiny members, one round of
each selection strategy with one walker and two."""

from __future__ import annotations

import json
import math

import pytest
from ase.io import read

from benchmarks.common import DEFAULT_DATA_DIR

pytest.importorskip("tblite", reason="the xTB labeller needs the xtb extra (tblite)")
pytestmark = pytest.mark.skipif(
    not (DEFAULT_DATA_DIR / "acac").exists(), reason=f"no AcAc data in {DEFAULT_DATA_DIR}"
)


def test_rounds_are_labelled_by_xtb_and_scored_on_the_test_sets(tmp_path):
    """For each strategy and walkers, round 0 and round 1 are scored on both xTB-relabelled
    test sets; round 1 adds xTB frames whose labels are GFN2-xTB's (about -620 eV for AcAc, not
    the data's DFT -9390 eV); all loops start from the same round-0 committee."""
    from benchmarks.active_learning_xtb import main

    argv = ["--smoke", "--selection", "uncertainty", "random", "--walkers", "1", "2"]
    argv += ["--out", str(tmp_path)]
    assert main(argv) == 0
    (path,) = tmp_path.glob("active_learning_xtb_*/results.json")
    results = json.loads(path.read_text())
    assert results["command"] == "python -m benchmarks.active_learning_xtb " + " ".join(argv)
    loops = ["random", "random, 2 walkers", "uncertainty", "uncertainty, 2 walkers"]
    assert sorted(results["runs"]) == loops
    for zero, one in results["runs"].values():
        assert zero["models"] == results["runs"]["uncertainty"][0]["models"]  # the same start
        assert zero["n_train_frames"] == 4
        assert one["n_train_frames"] == 4 + len(one["selected_steps"])
        assert one["n_flagged"] >= 1 and one["labels_computed"] == len(one["selected_steps"]) >= 1
        for record in (zero, one):
            for name in ("test_MD_300K", "test_MD_600K"):
                errors = record["tests"][name]
                assert math.isfinite(errors["forces_rmse_meV_A"])
                assert errors["forces_rmse_meV_A"] > 0 and errors["force_spread_mean_meV_A"] > 0
    assert results["runs"]["random"][1]["md"]["n_steps"] == 20  # the whole MD, not stopped
    run_dir = path.parent
    for name in ("initial.xyz", "test_MD_300K_xtb.xyz"):
        for atoms in read(run_dir / "data" / name, index=":"):
            assert -700.0 < atoms.get_potential_energy() < -550.0
    for folder in ("uncertainty", "random", "uncertainty_2walkers"):
        for atoms in read(run_dir / f"learn_{folder}/round_1/selected.xyz", index=":"):
            assert -700.0 < atoms.get_potential_energy() < -550.0
    assert (run_dir / "active_learning_xtb.png").stat().st_size > 0
