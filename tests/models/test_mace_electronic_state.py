"""MACE conditioned on the total charge and spin multiplicity (``MACESpec.embedding_specs``):
the state reaches every path that gives it, is checked, and is refused where none exists."""

from __future__ import annotations

import pytest
import torch

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph, model_inputs
from equiforce.md.calculator import EquiforceCalculator
from equiforce.models.io import load_model, save_model
from equiforce.models.mace import MACESpec
from equiforce.testing.models import TEST_TYPE_NAMES, tiny_mace
from equiforce.testing.structures import make_molecule
from equiforce.testing.tolerances import TOL

SPECS = {
    "total_charge": {"type": "categorical", "emb_dim": 6, "num_classes": 7, "offset": 3},
    "total_spin": {"type": "continuous", "emb_dim": 4},
}
STATES = [(0, 1), (1, 2), (-1, 2), (0, 3), (-3, 1)]  # (charge, multiplicity)


@pytest.fixture(scope="module")
def model():
    return tiny_mace(embedding_specs=SPECS, embedding_readout=True)


def _frames():
    frames = []
    for k, (charge, spin) in enumerate(STATES):
        atoms = make_molecule("CH3CH2OH" if k % 2 else "H2O", seed=k)
        atoms.info.update(charge=charge, spin=spin)
        frames.append(atoms)
    return frames


def _graph(atoms, model):
    return configuration_to_graph(atoms_to_configuration(atoms), model.type_names, model.r_max)


def test_state_changes_energies_and_a_batch_equals_its_structures(model):
    """Each structure's energy and forces in a batch of different states equal its own call;
    the same geometry in another state has another energy (the embedding and its readout
    act), and with neither the state is ignored (the same model without the spec)."""
    frames = _frames()
    graphs = [_graph(a, model) for a in frames]
    batch = model(collate(graphs))
    for k, graph in enumerate(graphs):
        alone = model(collate([graph]))
        torch.testing.assert_close(batch[keys.ENERGY][k : k + 1], alone[keys.ENERGY])
        rows = slice(int(collate(graphs)[keys.PTR][k]), int(collate(graphs)[keys.PTR][k + 1]))
        torch.testing.assert_close(batch[keys.FORCES][rows], alone[keys.FORCES])
    water = frames[0].copy()
    energies = []
    for charge, spin in STATES:
        water.info.update(charge=charge, spin=spin)
        energies.append(float(model(collate([_graph(water, model)]))[keys.ENERGY].detach()))
    assert min(abs(a - b) for i, a in enumerate(energies) for b in energies[i + 1 :]) > 1e-6
    plain = tiny_mace()
    water.info.update(charge=2, spin=3)
    charged = plain(collate([_graph(water, plain)]))[keys.ENERGY]
    neutral = plain(collate([_graph(frames[0], plain)]))[keys.ENERGY]
    torch.testing.assert_close(charged, neutral, **TOL.fp64.__dict__)


def test_forces_are_still_the_energy_gradient(model):
    """The state is per structure, so forces are the geometry's gradient as ever."""
    atoms = _frames()[1]
    atoms.calc = EquiforceCalculator(model)
    forces = atoms.get_forces()
    step, (atom, axis) = 1e-5, (2, 1)
    energies = []
    for sign in (1, -1):
        moved = atoms.copy()
        moved.positions[atom, axis] += sign * step
        moved.calc = EquiforceCalculator(model)
        energies.append(moved.get_potential_energy())
    assert (
        abs(-(energies[0] - energies[1]) / (2 * step) - forces[atom, axis])
        < TOL.finite_difference.atol
    )


def test_building_draws_from_the_specs_seed_only():
    """The state embedding's weights come from the spec's seed (torch's own layer init, which
    draws from the global generator, is kept off it): two builds are equal and the global
    generator is where it was."""
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    first = tiny_mace(embedding_specs=SPECS, embedding_readout=True)
    assert torch.equal(torch.rand(3), expected)
    second = tiny_mace(embedding_specs=SPECS, embedding_readout=True)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_spec_problems_are_named():
    bad = [
        ({"charge": {"type": "categorical", "emb_dim": 2, "num_classes": 3}}, "unknown quantity"),
        ({"total_charge": {"type": "categorical", "emb_dim": 2}}, r"missing \['num_classes'\]"),
        ({"total_spin": {"type": "continuous", "emb_dim": 2, "per": "atom"}}, "per: graph"),
        ({"total_spin": {"type": "onehot", "emb_dim": 2}}, "needs type"),
        ({"total_spin": {"type": "continuous", "emb_dim": 0}}, "integers >= 1"),
    ]
    for specs, message in bad:
        with pytest.raises(ValueError, match=message):
            MACESpec(TEST_TYPE_NAMES, embedding_specs=specs)
    with pytest.raises(ValueError, match="embedding_readout needs embedding_specs"):
        MACESpec(TEST_TYPE_NAMES, embedding_readout=True)


def test_a_state_outside_the_table_or_missing_is_named(model):
    """A charge the categorical table has no row for (outside offset..num_classes, or not an
    integer) is named in eager and in traced calls (``check_graph_inputs``); a batch without
    the state is refused naming it."""
    atoms = make_molecule("H2O")
    for charge in (4, -4, 0.5):
        atoms.info["charge"] = charge
        graph = collate([_graph(atoms, model)])
        with pytest.raises(ValueError, match=f"total_charge {charge:g}: .* -3 to 3 only"):
            model(graph)
        with pytest.raises(ValueError, match="-3 to 3 only"):
            model.energy_model.check_graph_inputs(graph)
    atoms.info["charge"] = 1
    graph = collate([_graph(atoms, model)])
    del graph[keys.TOTAL_SPIN]
    with pytest.raises(ValueError, match="conditions on 'total_spin'"):
        model(graph)


def test_model_file_round_trip_and_calculator_read_the_state(model, tmp_path):
    """The spec's dicts survive a model file; ``EquiforceCalculator`` reads ``info``'s
    ``charge`` and ``spin`` (defaults: neutral singlet), as ``model_inputs`` does."""
    path = tmp_path / "charged.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.spec.embedding_specs == SPECS
    atoms = _frames()[2]
    reference = model(collate([_graph(atoms, model)]))[keys.ENERGY].detach()
    atoms.calc = EquiforceCalculator(path)
    assert abs(atoms.get_potential_energy() - float(reference)) < 1e-10
    inputs = model_inputs(atoms_to_configuration(atoms), model.type_names, model.r_max)
    assert inputs[keys.TOTAL_CHARGE].tolist() == [-1.0] and inputs[keys.TOTAL_SPIN].tolist() == [
        2.0
    ]
    neutral = make_molecule("H2O")
    config = atoms_to_configuration(neutral)
    assert (config.total_charge, config.total_spin) == (0.0, 1.0)
    neutral.info["spin"] = 0
    with pytest.raises(ValueError, match=r"water: field 'spin' \(total_spin\) must be a spin"):
        atoms_to_configuration(neutral, "water")


def test_batched_relaxations_and_md_take_each_structures_charge_and_spin(model):
    """TorchSim's SimState carries no charge or spin: the batched drivers name each system's
    structure (``EquiforceModel.set_systems``), also as systems leave (a lone atom converges at
    once), so every batched result equals the ASE calculator on its structure with its
    ``info``; a direct call without the structures named is refused by name."""
    pytest.importorskip("torch_sim")
    from ase import Atoms

    from equiforce.md.batched import run_batched_md
    from equiforce.md.relax import relax_batched
    from equiforce.md.torchsim import EquiforceModel, atoms_to_state

    frames = _frames()[1:4] + [Atoms("H", positions=[[0.0, 0.0, 0.0]])]
    frames[-1].info.update(charge=1, spin=1)
    batched = EquiforceModel(model, compute_stress=False)
    with pytest.raises(ValueError, match="each structure's total_charge and total_spin, which"):
        batched(atoms_to_state(frames, batched.device, batched.dtype))
    relaxed = relax_batched(frames, batched, fmax=1e-3, steps=4)
    assert relaxed[-1].n_steps == 0 and relaxed[0].n_steps == 4  # the atom left at once
    md = run_batched_md(frames[:3], batched, ensemble="nve", n_steps=3, log_interval=1)
    finals = [r.atoms for r in relaxed] + [r.final_atoms for r in md]
    for final, frame in zip(finals, frames + frames[:3], strict=True):
        atoms = Atoms(final.numbers, final.positions, info=dict(frame.info))
        atoms.calc = EquiforceCalculator(model)
        assert abs(atoms.get_potential_energy() - final.get_potential_energy()) < 1e-9


def test_a_calculator_warns_once_of_a_state_its_model_ignores(model):
    """A charged structure given to a charge-blind model is computed as neutral: said once;
    a charge-aware model, or a neutral singlet, says nothing."""
    import warnings

    atoms = make_molecule("H2O")
    atoms.info.update(charge=-1)
    atoms.calc = EquiforceCalculator(tiny_mace())
    with pytest.warns(UserWarning, match="total_charge is -1, but the model does not condition"):
        atoms.get_potential_energy()
    atoms.positions[0, 0] += 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atoms.get_potential_energy()  # once per calculator
        atoms.calc = EquiforceCalculator(model)
        atoms.get_potential_energy()
        neutral = make_molecule("H2O")
        neutral.calc = EquiforceCalculator(tiny_mace())
        neutral.get_potential_energy()


def test_cli_charge_and_spin_options_set_the_structures_state(model, tmp_path):
    """``--charge`` / ``--spin`` give a file that cannot say (a PDB) its structures' state:
    ``equiforce relax`` (``--steps 0``) reports the energy the calculator gives the molecule
    with that ``info``, ASE and batched alike."""
    from ase.io import read, write

    from equiforce.cli.main import main

    save_model(model, tmp_path / "ion.pt")
    atoms = make_molecule("CH3CH2OH", seed=3)
    write(tmp_path / "mol.pdb", atoms)
    atoms = read(tmp_path / "mol.pdb")
    atoms.info.update(charge=-1, spin=2)
    atoms.calc = EquiforceCalculator(model)
    expected = atoms.get_potential_energy()
    for batched in ([], ["--batched"]):
        out = tmp_path / f"relaxed{len(batched)}.xyz"
        argv = ["relax", str(tmp_path / "ion.pt"), str(tmp_path / "mol.pdb"), str(out)]
        assert main([*argv, "--steps", "0", "--charge", "-1", "--spin", "2", *batched]) == 0
        relaxed = read(out)
        assert abs(relaxed.get_potential_energy() - expected) < 1e-9
        assert (relaxed.info["charge"], relaxed.info["spin"]) == (-1, 2)


def test_exact_hessians_take_the_state(model):
    """The exact Hessian (vibrations, saddles, phonons) evaluates the model in the structure's
    state: its gradient rows equal finite differences of the state's forces, and differ from
    the neutral singlet's."""
    from equiforce.models.hessian import hessian

    atoms = _frames()[2]  # water, charge -1, doublet
    batch = collate([_graph(atoms, model)])
    exact = hessian(model, batch)
    step, forces = 1e-5, {}
    for sign in (1, -1):  # atom 1 along z: the Hessian's column 3 * 1 + 2
        moved = atoms.copy()
        moved.positions[1, 2] += sign * step
        forces[sign] = model(collate([_graph(moved, model)]))[keys.FORCES].detach().reshape(-1)
    numeric = -(forces[1] - forces[-1]) / (2 * step)
    assert torch.allclose(exact[:, 5], numeric, atol=TOL.finite_difference.atol)
    neutral = atoms.copy()
    neutral.info.update(charge=0, spin=1)
    assert (hessian(model, collate([_graph(neutral, model)])) - exact).abs().max() > 1e-6
