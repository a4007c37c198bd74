"""ASE calculators with known answers, for tests of simulation tools."""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes


class ElasticCell(Calculator):
    """Free particles in a cell of St Venant-Kirchhoff energy ``V0 / 2 (lame tr(G)^2 +
    2 shear G:G)``, G = (F F^T - 1) / 2 the Green-Lagrange strain of the cell
    ``reference F`` (rows); its stress ``V0 / V F^T S F`` (S = lame tr(G) + 2 shear G).

    At the reference cell its elastic constants are isotropic's: C11 = lame + 2 shear,
    C12 = lame, C44 = shear (eV/Å^3); its strain fluctuations at constant pressure follow
    their compliance. No forces on the particles.

    Args:
        reference: (3, 3) the cell of zero strain, vectors as rows, Å.
        lame: Lamé's first constant, eV/Å^3.
        shear: the shear modulus, eV/Å^3.
    """

    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, reference: np.ndarray, lame: float, shear: float):
        super().__init__()
        self.reference, self.lame, self.shear = reference, lame, shear

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Energy (eV), zero forces, stress (Voigt, eV/Å^3) of ``atoms``' cell."""
        super().calculate(atoms, properties, system_changes)
        deformation = np.linalg.solve(self.reference, self.atoms.cell.array)
        strain = (deformation @ deformation.T - np.eye(3)) / 2
        trace, volume0 = np.trace(strain), abs(np.linalg.det(self.reference))
        energy = volume0 / 2 * (self.lame * trace**2 + 2 * self.shear * np.sum(strain**2))
        second = self.lame * trace * np.eye(3) + 2 * self.shear * strain
        stress = volume0 / self.atoms.get_volume() * deformation.T @ second @ deformation
        self.results = {
            "energy": energy,
            "forces": np.zeros((len(self.atoms), 3)),
            "stress": stress.flat[[0, 4, 8, 5, 2, 1]],
        }
