"""Grimme's D3 dispersion correction added to a model: for potentials trained on a functional
without it (MACE-MP and most PBE-trained models), as mace-torch's ``mace_mp(dispersion=True)``
adds it to MACE-MP.

``DispersionCorrected`` sums an ``EquiforceCalculator``'s energy, forces and stress and those of
the reference D3 implementation (simple-dftd3's Python API, ``dftd3.ase.DFTD3``: Grimme,
Antony, Ehrlich & Krieg, J. Chem. Phys. 132, 154104 (2010); Becke-Johnson damping ``d3bj``,
Grimme, Ehrlich & Goerigk, J. Comput. Chem. 32, 1456 (2011); the functional's parameters by
name, e.g. ``PBE``). It keeps what the tools built on the model calculator use: the band of a
NEB in one model call (``energies_and_forces``, D3 added per structure) and the Hessian
(``get_hessian``: the model's exact one plus D3's by central differences of its analytic
forces, ``D3_STEP``; D3 is smooth and cheap, 6 evaluations per atom), so phonons,
vibrations, saddle points and the crystal commands run on the corrected surface.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

# D3's damping functions (simple-dftd3's names): rational (Becke-Johnson), zero, their
# modified forms, optimised power
DAMPINGS = ("d3bj", "d3zero", "d3bjm", "d3zerom", "d3op")
# displacement of D3's Hessian by central differences, Å (its error ~1e-9 relative)
D3_STEP = 1e-4


def d3_calculator(xc: str = "PBE", damping: str = "d3bj") -> Calculator:
    """simple-dftd3's ASE calculator for functional ``xc`` with ``damping``.

    Raises:
        ImportError: the ``dftd3`` package is missing (what to install).
        ValueError: an unknown damping.
    """
    if damping not in DAMPINGS:
        raise ValueError(f"damping must be one of {DAMPINGS}, got {damping!r}")
    try:
        from dftd3.ase import DFTD3
    except ImportError as error:
        raise ImportError(
            "the D3 correction needs simple-dftd3's Python API: pip install dftd3 (or "
            "equiforce[sim])"
        ) from error
    return DFTD3(method=xc, damping=damping)


class DispersionCorrected(Calculator):
    """An ``EquiforceCalculator`` plus D3 (module docstring): energy (eV), forces (eV/Å),
    stress (Voigt, eV/Å^3, 3D-periodic cells).

    Args:
        model: the model's ``EquiforceCalculator``.
        xc: the functional whose D3 parameters apply (that of the model's training data).
        damping: one of ``DAMPINGS``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model, xc: str = "PBE", damping: str = "d3bj"):
        super().__init__()
        self.model, self.xc, self.damping = model, xc, damping
        self.d3 = d3_calculator(xc, damping)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """The model's and D3's results of ``atoms``, summed (the model's error for a stress
        of a structure not periodic in 3D)."""
        super().calculate(atoms, properties, system_changes)
        names = ["energy"] + [name for name in ("forces", "stress") if name in properties]
        results: dict = {}
        for part in (self.model, self.d3):
            copy = self.atoms.copy()
            for name in names:
                value = np.asarray(part.get_property(name, copy), dtype=np.float64)
                results[name] = value if name not in results else results[name] + value
        results["energy"] = results["free_energy"] = float(results["energy"])
        self.results = results

    def energies_and_forces(self, frames: Sequence[Atoms]) -> tuple[np.ndarray, list[np.ndarray]]:
        """``EquiforceCalculator.energies_and_forces`` (one model call) plus D3 per frame."""
        energies, forces = self.model.energies_and_forces(frames)
        for index, atoms in enumerate(frames):
            copy = atoms.copy()
            energies[index] += self.d3.get_potential_energy(copy)
            forces[index] = forces[index] + self.d3.get_forces(copy)
        return energies, forces

    def get_hessian(
        self, atoms: Atoms | None = None, rows_of: Sequence[int] | None = None
    ) -> np.ndarray:
        """The model's exact Hessian (``EquiforceCalculator.get_hessian``, same layout and
        ``rows_of``) plus D3's by central differences of its forces."""
        atoms = self.atoms if atoms is None else atoms
        if atoms is None:
            raise ValueError("get_hessian needs a structure")
        rows = list(range(len(atoms))) if rows_of is None else [int(i) for i in rows_of]
        hessian = self.model.get_hessian(atoms, rows_of=rows_of)
        d3 = np.empty_like(hessian)
        for row, (atom, axis) in enumerate((atom, axis) for atom in rows for axis in range(3)):
            forces = []
            for sign in (1.0, -1.0):
                moved = atoms.copy()
                moved.positions[atom, axis] += sign * D3_STEP
                forces.append(self.d3.get_forces(moved).ravel())
            d3[row] = -(forces[0] - forces[1]) / (2 * D3_STEP)
        return hessian + d3
