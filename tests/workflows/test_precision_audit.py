"""``precision-audit``: its numbers on a tiny model equal a direct computation."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from equiforce.cli.main import main
from equiforce.data.extxyz import read_configurations
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.dynamics import run_md
from equiforce.models import save_model
from equiforce.precision import apply_policy, from_name
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.testing.tolerances import TOL
from equiforce.train.evaluate import evaluate, predict
from equiforce.workflows.precision_audit import AuditOptions, _random_rotation, _rotated, run_audit

MODES_AUDITED = ("float64", "float32", "bf16-mixed")


@pytest.fixture(scope="module")
def labelled():
    return [emt_labelled(make_fcc_cu(repeat=1, seed=seed, rattle=0.1)) for seed in range(3)]


@pytest.fixture(scope="module")
def structures(labelled, tmp_path_factory):
    path = tmp_path_factory.mktemp("audit") / "data.xyz"
    write(path, labelled, format="extxyz")
    return read_configurations(path)


@pytest.fixture(scope="module")
def audit(structures):
    options = AuditOptions(modes=MODES_AUDITED, timing_repeats=1, md_steps=4, batch_size=2)
    return run_audit(tiny_mace(), structures, options), structures, options


def _close(actual: float, expected: float) -> bool:
    return actual == pytest.approx(expected, rel=TOL.fp64.rtol, abs=TOL.fp64.atol)


def test_deviations_errors_rotation_and_drift_equal_a_direct_computation(audit):
    result, structures, options = audit
    reference = predict(tiny_mace(), structures)
    bf16 = result.modes[MODES_AUDITED.index("bf16-mixed")]
    model = apply_policy(tiny_mace(), from_name("bf16-mixed"))
    pred = predict(model, structures)
    energy = 1e3 * (pred.energy - reference.energy)
    forces = 1e3 * (pred.forces - reference.forces)
    assert _close(bf16.energy_dev_rms_meV, float(np.sqrt(np.mean(energy**2))))
    assert _close(bf16.energy_dev_max_meV, float(np.abs(energy).max()))
    assert _close(bf16.forces_dev_rms_meV_per_A, float(np.sqrt(np.mean(forces**2))))
    assert _close(bf16.forces_dev_max_meV_per_A, float(np.abs(forces).max()))
    metrics = evaluate(model, structures).metrics
    assert _close(bf16.energy_rmse_meV_per_atom, metrics["energy_per_atom"].rmse)
    assert _close(bf16.forces_rmse_meV_per_A, metrics["forces"].rmse)
    rotation = _random_rotation(options.seed)
    rotated = predict(model, [_rotated(s, rotation) for s in structures]).forces
    error = np.sqrt(np.mean((rotated - pred.forces @ rotation.T) ** 2))
    assert _close(bf16.rotation_error_rel, float(error / np.sqrt(np.mean(pred.forces**2))))
    first = structures[0]
    md = run_md(
        Atoms(first.atomic_numbers, first.positions, cell=first.cell, pbc=first.pbc),
        EquiforceCalculator(copy.deepcopy(model)),
        ensemble="nve",
        n_steps=options.md_steps,
        log_interval=1,
        seed=options.seed,
    )
    assert _close(bf16.nve_drift_meV_per_atom_per_ps, md.energy_drift)


def test_float64_is_the_exact_reference_and_every_mode_is_timed(audit):
    result, _, _ = audit
    assert [a.mode for a in result.modes] == list(MODES_AUDITED)
    float64 = result.modes[0]
    assert float64.forces_dev_max_meV_per_A == 0.0 and float64.energy_dev_max_meV == 0.0
    assert float64.rotation_error_rel <= float64.rotation_tol_rel
    assert all(a.ms_per_call > 0 for a in result.modes)
    within = [a for a in result.modes if a.within_tolerance]
    assert result.fastest_within_tolerance == min(within, key=lambda a: a.ms_per_call).mode


def test_a_tight_force_tolerance_leaves_only_float64(structures):
    options = AuditOptions(modes=MODES_AUDITED, force_tol=1e-12, timing_repeats=1, md_steps=0)
    result = run_audit(tiny_mace(), structures, options)
    assert result.fastest_within_tolerance == "float64"
    assert [a.within_tolerance for a in result.modes] == [True, False, False]
    assert all(a.nve_drift_meV_per_atom_per_ps is None for a in result.modes)


def test_cli_prints_the_table_and_writes_json(tmp_path, labelled, capsys):
    save_model(tiny_mace(), tmp_path / "model.pt")
    write(tmp_path / "data.xyz", labelled, format="extxyz")
    argv = ["precision-audit", str(tmp_path / "model.pt"), str(tmp_path / "data.xyz")]
    argv += ["--modes", "float64", "fp16-mixed", "--md-steps", "2", "--repeats", "1"]
    assert main([*argv, "--json", str(tmp_path / "audit.json")]) == 0
    assert "fastest mode within tolerance" in capsys.readouterr().out
    payload = json.loads((tmp_path / "audit.json").read_text())
    assert [m["mode"] for m in payload["modes"]] == ["float64", "fp16-mixed"]


def test_modes_are_timed_round_robin_and_bit_identical_modes_only_once(structures, monkeypatch):
    """The timed calls alternate between modes (warm-up rounds included); tf32, whose CPU
    arithmetic is float32's, is reported as the same arithmetic and not timed again."""
    from equiforce.precision import current_policy
    from equiforce.workflows import precision_audit

    order: list[str] = []

    def recording_call(model, structure, device):
        name = current_policy(model).name
        return lambda: order.append(name)

    monkeypatch.setattr(precision_audit, "_single_call", recording_call)
    modes = ("float32", "tf32", "bf16-mixed")
    options = AuditOptions(modes=modes, timing_repeats=3, md_steps=0, batch_size=3)
    result = run_audit(tiny_mace(), structures, options)
    timed = ["float32", "bf16-mixed"]
    rounds = 2 + options.timing_repeats  # warm-up + timed rounds, then one memory call each
    assert order == timed * rounds + timed
    by_mode = {a.mode: a for a in result.modes}
    assert by_mode["tf32"].same_arithmetic_as == "float32"
    assert by_mode["float32"].same_arithmetic_as is None
    assert by_mode["bf16-mixed"].same_arithmetic_as is None
    assert by_mode["tf32"].ms_per_call == by_mode["float32"].ms_per_call
    assert by_mode["tf32"].forces_dev_max_meV_per_A == by_mode["float32"].forces_dev_max_meV_per_A
    table = precision_audit.format_audit_table(result)
    assert "tf32: bit-identical to float32" in table
