"""Smoke test of ``python -m benchmarks.lammps_scaling``: 2-layer MACE on a 32-atom box, with
and without the heat flux."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("lammps")

from benchmarks.lammps_scaling import main  # noqa: E402


@pytest.mark.slow  # LAMMPS on 2 ranks with a 2-layer MACE, ~10 s (tests/lammps test the plugin)
def test_lammps_scaling_records_throughput_ghosts_and_the_time_split(tmp_path):
    argv = ["--families", "mace", "--reps", "2", "--ranks", "2", "--steps", "2"]
    argv += ["--warmup", "0", "--heat-flux", "--out", str(tmp_path)]
    assert main(argv) == 0
    (path,) = tmp_path.glob("lammps_scaling_*.json")
    document = json.loads(path.read_text())
    lammps, heat_flux, ase = document["cases"]
    assert (lammps["engine"], lammps["ranks"], ase["engine"]) == ("lammps", 2, "ase")
    assert heat_flux["engine"] == "lammps+heat-flux"
    # every ghost copy a row of its own for the heat-flux virials
    for plain, with_flux in zip(lammps["per_rank"], heat_flux["per_rank"], strict=True):
        assert with_flux["n_ghost"] > plain["n_ghost"]
    (cost,) = document["heat_flux_costs"]
    assert cost["ranks"] == 2 and cost["cost_median"] > 0
    assert lammps["n_atoms"] == ase["n_atoms"] == 32
    assert sum(rank["n_local"] for rank in lammps["per_rank"]) == 32
    for rank in lammps["per_rank"]:
        assert rank["n_ghost"] > 0 and rank["n_edges"] > 0 and rank["steps_timed"] == 2
        assert rank["model_s"] > 0 and rank["exchange_s"] > 0 and rank["lammps_s"] > 0
        assert rank["wait_s"] >= 0 and rank["callback_glue_s"] > 0
        assert 0 < rank["overhead_no_wait_fraction"] <= rank["overhead_fraction"] < 1
        assert rank["node_rows"] == rank["n_local"]  # MACE skips the ghost rows
    assert lammps["atom_steps_per_s"] > 0 and ase["ns_per_day"] > 0
    assert len(lammps["load_before"]) == 3 and "commit" in json.dumps(document["machine"])
