"""Training a MACE conditioned on the total charge and spin (``model.embedding_specs``)."""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.models import build_model, load_model
from equiforce.testing.structures import emt_labelled, make_fcc_cu
from equiforce.train.run import train
from tests.train.conftest import TINY_MACE, make_config

STATE_SPECS = {
    "total_charge": {"type": "categorical", "emb_dim": 4, "num_classes": 3, "offset": 1},
    "total_spin": {"type": "continuous", "emb_dim": 2},
}


def test_a_charge_aware_mace_trains_on_the_charges_of_its_frames(tmp_path):
    """Frames of charge -1, 0, 1 (``info["charge"]``) whose energies shift by 0.5 eV per
    charge: the run reads the charges into its batches, trains the state embedding (its
    weights leave their start), and the model it saves tells the charge states of one
    structure apart."""
    frames = []
    for seed in range(12):
        atoms = emt_labelled(make_fcc_cu(repeat=1, seed=seed, rattle=0.1))
        charge = seed % 3 - 1
        energy = atoms.get_potential_energy() + 0.5 * charge
        forces, stress = atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
        atoms.info.update(charge=charge, spin=1 + abs(charge))
        frames.append(atoms)
    path = tmp_path / "charged.xyz"
    write(path, frames, format="extxyz")
    model_section = {**TINY_MACE, "embedding_specs": STATE_SPECS, "embedding_readout": True}
    result = train(make_config(tmp_path / "run", path, model_section, max_epochs=4))
    model = load_model(result.model_path)
    assert model.spec.embedding_specs == STATE_SPECS
    start = build_model("mace", model.spec).energy_model.electronic_state.project.weight
    trained = model.energy_model.electronic_state.project.weight
    assert not torch.allclose(start, trained)
    energies = []
    for charge in (-1, 0, 1):
        atoms = frames[0].copy()
        atoms.info.update(charge=charge, spin=1 + abs(charge))
        graph = configuration_to_graph(atoms_to_configuration(atoms), model.type_names, 4.0)
        energies.append(float(model(collate([graph]), compute_forces=False)[keys.ENERGY].detach()))
    assert np.ptp(energies) > 1e-3
