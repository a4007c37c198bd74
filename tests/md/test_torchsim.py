"""TorchSim ``EquiforceModel``: the ASE calculator's numbers on mixed batches, TorchSim's
contract check, and TorchSim's integrators and optimizers driving it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

ts = pytest.importorskip("torch_sim")

from ase.stress import voigt_6_to_full_3x3_stress  # noqa: E402

from equiforce.md import EquiforceCalculator  # noqa: E402
from equiforce.md.torchsim import CellAxesModel, EquiforceModel, atoms_to_state  # noqa: E402
from equiforce.testing.models import tiny_mace  # noqa: E402
from equiforce.testing.structures import (  # noqa: E402
    make_fcc_cu,
    make_molecule,
    make_slab,
    make_triclinic_cu,
)
from equiforce.testing.tolerances import TOL  # noqa: E402


def assert_close(actual, expected, what: str) -> None:
    """float64 agreement (``TOL.fp64``)."""
    np.testing.assert_allclose(
        actual, expected, atol=TOL.fp64.atol, rtol=TOL.fp64.rtol, err_msg=what
    )


def mixed_structures():
    """A molecule, a 32-atom cell, a triclinic 4-atom cell and a slab (mixed pbc)."""
    return [
        make_molecule("CH3CH2OH", seed=5),
        make_fcc_cu(repeat=2, seed=1),
        make_triclinic_cu(seed=4),
        make_slab(seed=2),
    ]


def mixed_state_dict(frames) -> dict[str, torch.Tensor]:
    """A TorchSim state dict over ``frames`` with per-system pbc (column-vector cells)."""
    return {
        "positions": torch.tensor(np.concatenate([a.positions for a in frames])),
        "cell": torch.tensor(np.stack([a.cell.array.T for a in frames])),
        "atomic_numbers": torch.tensor(np.concatenate([a.numbers for a in frames])),
        "system_idx": torch.repeat_interleave(
            torch.arange(len(frames)), torch.tensor([len(a) for a in frames])
        ),
        "pbc": torch.tensor(np.stack([a.pbc for a in frames])),
    }


def test_mixed_batch_equals_ase_calculator(model64):
    frames = mixed_structures()
    out = EquiforceModel(model64)(mixed_state_dict(frames))
    calculator = EquiforceCalculator(model64)
    start = 0
    assert out["energy"].shape == (4,) and out["stress"].shape == (4, 3, 3)
    for index, atoms in enumerate(frames):
        atoms.calc = calculator
        end = start + len(atoms)
        assert_close(out["energy"][index], atoms.get_potential_energy(), f"energy {index}")
        assert_close(out["forces"][start:end], atoms.get_forces(), f"forces {index}")
        if atoms.pbc.all():
            stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
            assert_close(out["stress"][index], stress, f"stress {index}")
        elif not atoms.pbc.any():
            assert torch.all(out["stress"][index] == 0)
        start = end


def test_simstate_batches_and_model_file_equal_ase(model64, model_file):
    """Periodic cells of different sizes through a SimState; molecules through another."""
    calculator = EquiforceCalculator(model64)
    for frames in (
        [make_fcc_cu(repeat=1, seed=3), make_fcc_cu(repeat=2, seed=1), make_triclinic_cu()],
        [make_molecule("CH3CH2OH", seed=1), make_molecule("H2O", seed=2)],
    ):
        out = EquiforceModel(model_file)(atoms_to_state(frames))
        energies = [calculator.get_potential_energy(atoms) for atoms in frames]
        forces = np.concatenate([calculator.get_forces(atoms) for atoms in frames])
        assert_close(out["energy"], energies, "energies")
        assert_close(out["forces"], forces, "forces")


def test_float32_state_and_flags(model64):
    frames = [make_fcc_cu(repeat=1, seed=3), make_triclinic_cu()]
    model = EquiforceModel(model64, dtype=torch.float32, compute_stress=False)
    out = model(atoms_to_state(frames, dtype=torch.float32))
    assert set(out) == {"energy", "forces"}
    assert out["energy"].dtype == out["forces"].dtype == torch.float32
    model.compute_stress = True
    assert model(atoms_to_state(frames, dtype=torch.float32))["stress"].shape == (2, 3, 3)
    reference = EquiforceModel(model64)(atoms_to_state(frames))
    np.testing.assert_allclose(
        out["energy"], reference["energy"], atol=TOL.fp32.atol, rtol=TOL.fp32.rtol
    )


def test_passes_torch_sim_contract_check():
    model = EquiforceModel(tiny_mace(torch.float64, type_names=("Si", "Fe")))
    ts.models.interface.validate_model_outputs(model, torch.device("cpu"), torch.float64)


def test_unknown_element_is_named(model64):
    state = atoms_to_state([make_fcc_cu(repeat=1), make_molecule("H2O").copy()][:1])
    state.atomic_numbers[2] = 26
    with pytest.raises(ValueError, match=r"system 0: element Fe \(atom 2\).*knows"):
        EquiforceModel(model64)(state)


def test_molecules_and_slabs_share_a_state_through_cell_axes_model(model64):
    """One pbc-False state of a molecule and slabs periodic along different axes (skewed
    cells, so rows and columns differ): ``CellAxesModel`` equals the ASE calculator on each;
    a state mixing 3D-periodic and other structures is refused."""
    skewed = make_triclinic_cu(seed=4)
    skewed.pbc = [True, True, False]
    sideways = make_fcc_cu(repeat=1, seed=3)
    sideways.set_cell(sideways.cell.array + [[0, 0, 0], [0.4, 0, 0.3], [0, 0.5, 0]])
    sideways.pbc = [False, True, True]
    frames = [make_molecule("CH3CH2OH", seed=5), make_slab(seed=2), skewed, sideways]
    state = atoms_to_state(frames)
    assert not state.pbc
    out = CellAxesModel(EquiforceModel(model64))(state)
    calculator = EquiforceCalculator(model64)
    start = 0
    for index, atoms in enumerate(frames):
        atoms.calc = calculator
        end = start + len(atoms)
        assert_close(out["energy"][index], atoms.get_potential_energy(), f"energy {index}")
        assert_close(out["forces"][start:end], atoms.get_forces(), f"forces {index}")
        start = end
    plain = EquiforceModel(model64)(state)  # without it the slabs lose their images
    assert not torch.allclose(plain["energy"][1:], out["energy"][1:])
    with pytest.raises(ValueError, match="all periodic"):
        atoms_to_state([make_fcc_cu(repeat=1), make_molecule("H2O")])
    with pytest.raises(ValueError, match="all periodic"):
        atoms_to_state([make_fcc_cu(repeat=1), make_slab()])


def test_torch_sim_langevin_and_fire_run_a_batch(model64):
    model = EquiforceModel(model64)
    state = atoms_to_state([make_fcc_cu(repeat=1, seed=3), make_fcc_cu(repeat=2, seed=1)])
    units = ts.units.MetalUnits
    kT = torch.tensor(300.0 * units.temperature, dtype=torch.float64)
    init, step = ts.nvt_langevin(model, dt=torch.tensor(0.001 * units.time), kT=kT)
    md_state = init(state, seed=0)
    for _ in range(5):
        md_state = step(md_state, kT=kT)
    assert torch.isfinite(md_state.positions).all() and md_state.energy.shape == (2,)
    moved = (md_state.positions - state.positions).norm(dim=1)
    assert (moved > 0).all()

    init, step = ts.optimizers.fire(model)
    opt_state = init(state)
    start = opt_state.forces.norm(dim=1)
    for _ in range(30):
        opt_state = step(opt_state)
    assert torch.all(opt_state.energy < model(state)["energy"])
    assert opt_state.forces.norm(dim=1).max() < start.max()


def test_torch_sim_runners_take_the_model(model64):
    model = EquiforceModel(model64)
    frames = [make_fcc_cu(repeat=1, seed=3), make_fcc_cu(repeat=2, seed=1)]
    (static,) = ts.static(system=frames, model=model)[:1]
    assert_close(static["potential_energy"], model(atoms_to_state(frames[:1]))["energy"], "static")
    state = ts.integrate(
        system=frames,
        model=model,
        integrator=ts.nvt_langevin,
        n_steps=3,
        temperature=300,
        timestep=0.001,
    )
    assert state.n_systems == 2 and torch.isfinite(state.energy).all()
