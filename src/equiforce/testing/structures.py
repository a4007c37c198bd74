"""Structure factories for tests (fixed seeds, small sizes)."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import bulk, molecule


def make_molecule(name: str = "CH3CH2OH", seed: int = 0, rattle: float = 0.05) -> Atoms:
    """A small rattled molecule from ASE's G2 set, no cell, no pbc."""
    atoms = molecule(name)
    atoms.rattle(stdev=rattle, seed=seed)
    return atoms


def make_fcc_cu(repeat: int = 2, seed: int = 0, rattle: float = 0.05, au_fraction=0.25) -> Atoms:
    """A rattled periodic fcc Cu cell with a fraction of atoms swapped to Au."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (repeat, repeat, repeat)
    rng = np.random.default_rng(seed)
    n_au = int(round(au_fraction * len(atoms)))
    numbers = atoms.numbers.copy()
    numbers[rng.choice(len(atoms), n_au, replace=False)] = 79
    atoms.numbers = numbers
    atoms.rattle(stdev=rattle, seed=seed)
    return atoms


def make_triclinic_cu(seed: int = 0) -> Atoms:
    """A small sheared (triclinic) periodic Cu/Au cell, for stress and shift tests."""
    atoms = make_fcc_cu(repeat=1, seed=seed, au_fraction=0.25)
    cell = atoms.cell.array.copy()
    cell[1, 0] += 0.4
    cell[2, 1] -= 0.3
    atoms.set_cell(cell, scale_atoms=True)
    return atoms


def make_slab(seed: int = 0) -> Atoms:
    """A Cu slab periodic in x and y only (mixed pbc)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 1)
    atoms.center(vacuum=5.0, axis=2)
    atoms.pbc = [True, True, False]
    atoms.rattle(stdev=0.05, seed=seed)
    return atoms


def vacancy_hop(symbol: str, a: float) -> tuple[Atoms, Atoms]:
    """A vacancy in a 32-site fcc cell (lattice constant ``a``, Å) before and after its
    neighbour hops into it: two 31-atom end points of a NEB, the same atoms in the same
    order."""
    cell = bulk(symbol, "fcc", a=a, cubic=True) * (2, 2, 2)
    initial = cell.copy()
    del initial[0]
    final = cell.copy()
    final.positions[1] = cell.positions[0]
    del final[0]
    return initial, final


def emt_labelled(atoms: Atoms) -> Atoms:
    """Attach EMT energy, forces and (for periodic cells) stress as a SinglePointCalculator."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress(voigt=False)
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def make_periodic_hco(seed: int = 3) -> Atoms:
    """A small rattled triclinic H/C/O cell (8 atoms), periodic in all directions."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    cell = np.array([[3.6, 0.0, 0.0], [0.5, 3.4, 0.0], [-0.3, 0.4, 3.8]])
    positions = (grid + 0.25) / 2.0 @ cell + rng.normal(scale=0.15, size=(8, 3))
    numbers = rng.choice([1, 6, 8], size=8)
    return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)


def squeezed(atoms: Atoms, factor: float = 0.7) -> Atoms:
    """A copy of ``atoms`` with every distance (and its cell) scaled by ``factor``: close
    contacts, where a ZBL repulsion acts (bonds sit near its covalent-radii cutoff)."""
    atoms = atoms.copy()
    if atoms.pbc.any():
        atoms.set_cell(atoms.cell.array * factor, scale_atoms=True)
    else:
        atoms.positions *= factor
    return atoms


def peer_parity_structures() -> list[Atoms]:
    """Ethanol, water and a periodic H/C/O cell: the structures of the peer-parity tests."""
    molecules = [make_molecule(name, seed=k) for k, name in enumerate(["CH3CH2OH", "H2O"])]
    return molecules + [make_periodic_hco()]
