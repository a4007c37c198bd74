"""``equiforce.lammps.mliap.MLIAPModel`` against the ASE calculator, through a stand-in data object.

``FakeMLIAPData`` has the fields and calls of LAMMPS's (KOKKOS) ML-IAP data object for one
rank that owns a whole periodic box: the ghosts are the periodic images within r_max of the
box's atoms, ``forward_exchange`` copies each owner's row into its ghost rows and
``reverse_exchange`` adds the ghost rows into their owners, as LAMMPS's communication does;
``update_pair_forces_gpu`` adds ``fij`` to ``f_i`` and subtracts it from ``f_j``, after which
the ghost forces are summed into their owners. Energies, per-atom energies and forces of a
random 2-layer MACE (whole and in receiver chunks) and Allegro (whole and in blocks of centre
atoms), float64, equal the ASE calculator's; MACE's node-wise work runs on the local rows only
(the model returns one row per local atom, not per ghost).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.neighborlist import neighbor_list

from equiforce.lammps.mliap import MLIAPModel, save_mliap
from equiforce.md.calculator import EquiforceCalculator
from equiforce.models.io import save_model
from equiforce.models.local_blocks import BlockSettings
from equiforce.testing.models import tiny_allegro, tiny_mace
from equiforce.testing.structures import make_fcc_cu

EXACT = 1e-10  # float64, relative


class FakeMLIAPData:
    """One rank's ML-IAP data for a periodic ``atoms`` box: local atoms, then image ghosts.

    Args:
        atoms: the periodic box (its atoms are the local atoms).
        element_types: the model's type names (``elems`` indexes them).
        cutoff: pair cutoff, Å (``2 * rcutfac``).
    """

    def __init__(self, atoms, element_types: list[str], cutoff: float):
        i, j, shift = neighbor_list("ijS", atoms, cutoff)
        ghost_of: dict[tuple[int, int, int, int], int] = {}
        owner: list[int] = []
        pair_j = []
        for atom, image in zip(j, map(tuple, shift), strict=True):
            if image == (0, 0, 0):
                pair_j.append(atom)
                continue
            key = (atom, *image)
            if key not in ghost_of:
                ghost_of[key] = len(atoms) + len(owner)
                owner.append(atom)
            pair_j.append(ghost_of[key])
        self.nlocal = self.nlistatoms = len(atoms)
        self.ntotal = len(atoms) + len(owner)
        self.owner = np.array(owner, dtype=np.int64)
        types = [element_types.index(s) for s in atoms.get_chemical_symbols()]
        self.elems = np.array(types + [types[o] for o in owner], dtype=np.int32)
        self.pair_i = i.astype(np.int32)
        self.pair_j = np.array(pair_j, dtype=np.int32)
        self.npairs = len(i)
        self.rij = atoms.positions[j] + shift @ atoms.cell.array - atoms.positions[i]
        self.eatoms = np.zeros(self.nlocal)
        self.energy = 0.0
        self.f = np.zeros((self.ntotal, 3))
        self.exchanges = {"forward": 0, "reverse": 0}

    def forward_exchange(self, src: torch.Tensor, dst: torch.Tensor, width: int) -> None:
        assert src.shape == dst.shape == (self.ntotal, width)
        self.exchanges["forward"] += 1
        dst.copy_(src)
        dst[self.nlocal :] = src[torch.from_numpy(self.owner)]

    def reverse_exchange(self, src: torch.Tensor, dst: torch.Tensor, width: int) -> None:
        assert src.shape == dst.shape == (self.ntotal, width)
        self.exchanges["reverse"] += 1
        dst.copy_(src)
        dst.index_add_(0, torch.from_numpy(self.owner), src[self.nlocal :])

    def update_pair_forces_gpu(self, fij: torch.Tensor) -> None:
        fij = fij.cpu().numpy()
        np.add.at(self.f, self.pair_i, fij)
        np.subtract.at(self.f, self.pair_j, fij)

    def local_forces(self) -> np.ndarray:
        """Forces on the local atoms after LAMMPS's reverse communication of ghost forces."""
        forces = self.f[: self.nlocal].copy()
        np.add.at(forces, self.owner, self.f[self.nlocal :])
        return forces


class PlainMLIAPData(FakeMLIAPData):
    """The non-KOKKOS ML-IAP data object: no exchange calls, pair forces as NumPy arrays."""

    def __getattribute__(self, name: str):
        if name in ("forward_exchange", "reverse_exchange", "update_pair_forces_gpu"):
            raise AttributeError(name)
        return super().__getattribute__(name)

    def update_pair_forces(self, fij: np.ndarray) -> None:
        assert isinstance(fij, np.ndarray) and fij.shape == (self.npairs, 3)
        FakeMLIAPData.update_pair_forces_gpu(self, torch.from_numpy(fij))


@pytest.fixture(scope="module")
def box():
    atoms = make_fcc_cu(2, seed=3)
    atoms.rattle(0.1, seed=4)
    return atoms


@pytest.mark.parametrize("family", ["mace", "mace-in-chunks", "allegro", "allegro-in-blocks"])
def test_adapter_equals_the_ase_calculator(box, family):
    potential = {"mace": tiny_mace, "allegro": tiny_allegro}[family.split("-")[0]]()
    if family == "allegro-in-blocks":  # blocks of ~100 edges (Potential.blocking)
        potential.blocking = BlockSettings(block_bytes=2**18, probe_edges=64, min_edges=0)
    if family == "mace-in-chunks":  # receiver chunks of ~24 edges (MACE.chunk_edges)
        potential.energy_model.chunk_edges = 24
    adapter = MLIAPModel(potential, device="cpu")
    data = FakeMLIAPData(box, adapter.element_types, 2 * adapter.rcutfac)
    assert data.ntotal > 3 * data.nlocal  # the ghosts of a small periodic box
    if family == "allegro-in-blocks":  # pairs out of centre order: the blocks sort them
        order = np.random.default_rng(0).permutation(data.npairs)
        data.pair_i, data.pair_j, data.rij = data.pair_i[order], data.pair_j[order], data.rij[order]
    adapter.compute_forces(data)

    atoms = box.copy()
    atoms.calc = EquiforceCalculator(potential)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    np.testing.assert_allclose(data.energy, energy, rtol=EXACT, atol=0)
    np.testing.assert_allclose(data.eatoms.sum(), energy, rtol=EXACT, atol=0)
    np.testing.assert_allclose(
        data.local_forces(), forces, rtol=0, atol=EXACT * np.abs(forces).max()
    )
    if family == "allegro-in-blocks":
        assert adapter.last_result.times.blocks > 3
    if family.startswith("mace"):  # no node-wise work on the ghost rows
        assert adapter.last_result.times.node_rows == data.nlocal
    if family == "mace-in-chunks":
        edge_index = torch.stack([torch.from_numpy(data.pair_i), torch.from_numpy(data.pair_j)])
        assert potential.energy_model._chunks(edge_index.long(), data.nlocal) is not None
    layers = potential.energy_model.num_layers if family.startswith("mace") else 1
    assert data.exchanges == {"forward": layers - 1, "reverse": layers - 1}


def test_a_plain_mliap_build_runs_allegro_from_the_saved_file_and_refuses_mace(box, tmp_path):
    potential = tiny_allegro()
    save_model(potential, tmp_path / "allegro.pt")
    path = save_mliap(tmp_path / "allegro.pt", tmp_path / "allegro-mliap.pt", device="cpu")
    adapter = torch.load(path, weights_only=False)  # as LAMMPS loads a .pt unified model
    data = PlainMLIAPData(box, adapter.element_types, 2 * adapter.rcutfac)
    adapter.compute_forces(data)
    atoms = box.copy()
    atoms.calc = EquiforceCalculator(potential)
    forces = atoms.get_forces()
    np.testing.assert_allclose(data.energy, atoms.get_potential_energy(), rtol=EXACT, atol=0)
    np.testing.assert_allclose(
        data.local_forces(), forces, rtol=0, atol=EXACT * np.abs(forces).max()
    )
    mace = MLIAPModel(tiny_mace(), device="cpu")
    with pytest.raises(RuntimeError, match="needs LAMMPS to exchange ghost-atom features"):
        mace.compute_forces(PlainMLIAPData(box, mace.element_types, 2 * mace.rcutfac))


def test_a_charge_aware_mace_takes_the_systems_charge_and_spin(box):
    """A MACE conditioned on the charge and spin (``embedding_specs``) runs with the whole
    box's ``charge`` and ``spin`` and equals the ASE calculator on the box with them in its
    ``info``; a charge the model's table lacks, or one given to a charge-blind model, is
    refused by name."""
    specs = {
        "total_charge": {"type": "categorical", "emb_dim": 4, "num_classes": 5, "offset": 2},
        "total_spin": {"type": "continuous", "emb_dim": 3},
    }
    potential = tiny_mace(embedding_specs=specs, embedding_readout=True)
    adapter = MLIAPModel(potential, device="cpu", charge=-1, spin=2)
    data = FakeMLIAPData(box, adapter.element_types, 2 * adapter.rcutfac)
    adapter.compute_forces(data)
    atoms = box.copy()
    atoms.info.update(charge=-1, spin=2)
    atoms.calc = EquiforceCalculator(potential)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    np.testing.assert_allclose(data.energy, energy, rtol=EXACT, atol=0)
    np.testing.assert_allclose(
        data.local_forces(), forces, rtol=0, atol=EXACT * np.abs(forces).max()
    )
    neutral = FakeMLIAPData(box, adapter.element_types, 2 * adapter.rcutfac)
    MLIAPModel(potential, device="cpu").compute_forces(neutral)
    assert abs(neutral.energy - data.energy) > 1e-6  # the default: a neutral singlet
    with pytest.raises(ValueError, match="total_charge 3: the model embeds the integers -2 to 2"):
        MLIAPModel(potential, device="cpu", charge=3)
    with pytest.raises(ValueError, match="total_charge given, but the model does not condition"):
        MLIAPModel(tiny_mace(), device="cpu", charge=1)
