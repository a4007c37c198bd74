"""Ziegler-Biersack-Littmark (ZBL) screened nuclear repulsion, as mace-torch's
``pair_repulsion`` (``mace.modules.radial.ZBLBasis``, 0.3.16) computes it.

Per edge i -> j at distance r (Å), with Z the atomic numbers and R the covalent radii
(``ase.data.covalent_radii``, Å):

    V(r) = k Z_i Z_j / r * phi(r / a),  k = 14.3996 eV Å (e^2 / 4 pi eps0),
    a = 0.4543 * 0.529 / (Z_i^0.3 + Z_j^0.3)  (Å),
    phi(x) = 0.1818 e^(-3.2 x) + 0.5099 e^(-0.9423 x) + 0.2802 e^(-0.4028 x)
             + 0.02817 e^(-0.2016 x),

times mace's polynomial envelope of order p at the cutoff R_i + R_j (zero beyond it); half of
it goes to the edge's centre, so a bond's two edges give each atom half the pair energy. The
term keeps atoms apart where the training data has no close contacts (MD at high temperature,
collisions, unrelaxed structures). It depends on each edge alone, so it keeps a model strictly
local when it was. The covalent cutoff can exceed the model's r_max for heavy elements: pairs
beyond r_max are not in the edge list, as in mace-torch. Computed in float64 here; mace-torch
multiplies k Z_i Z_j in torch's default dtype (float32 unless set to float64, as its ASE
calculator does for a float64 model), a relative 1e-8 apart otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from equiforce.o3.radial import envelope

__all__ = ["ZBLRepulsion"]

COULOMB = 14.3996  # eV Å, e^2 / (4 pi eps0) as mace-torch rounds it
BOHR = 0.529  # Å, as mace-torch rounds it
SCREENING_PREFACTOR = 0.4543  # mace-torch's ZBLBasis defaults (not trainable there by default)
SCREENING_EXPONENT = 0.300
PHI_COEFFICIENTS = (0.1818, 0.5099, 0.2802, 0.02817)
PHI_EXPONENTS = (3.2, 0.9423, 0.4028, 0.2016)


class ZBLRepulsion(nn.Module):
    """The ZBL pair energy of every atom (module docstring), no parameters.

    Args:
        type_names: the model's element symbols (their atomic numbers and covalent radii).
        p: order of the envelope (mace uses the model's ``num_polynomial_cutoff``).
    """

    def __init__(self, type_names: Sequence[str], p: int):
        super().__init__()
        from ase.data import atomic_numbers, covalent_radii

        numbers = [atomic_numbers[name] for name in type_names]
        # derived from type_names, so not part of a model file's state
        self.register_buffer(
            "numbers", torch.tensor(numbers, dtype=torch.float64), persistent=False
        )
        radii = [float(covalent_radii[z]) for z in numbers]
        self.register_buffer("radii", torch.tensor(radii, dtype=torch.float64), persistent=False)
        self.p = int(p)

    def forward(
        self, edge_vec: torch.Tensor, edge_index: torch.Tensor, atom_type: torch.Tensor, n_rows: int
    ) -> torch.Tensor:
        """Per-atom ZBL energies.

        Args:
            edge_vec: (n_edges, 3) float64 edge vectors, Å.
            edge_index: (2, n_edges) ``[centre, neighbour]``; centres below ``n_rows``.
            atom_type: (n_atoms,) type indices into ``type_names``.
            n_rows: atoms receiving energy (all, or a domain's local atoms).

        Returns:
            (n_rows,) float64, eV: half of each edge's V(r) on its centre.
        """
        pair = self.edge_energies(edge_vec, edge_index, atom_type)
        return pair.new_zeros(n_rows).index_add_(0, edge_index[0], pair)

    def edge_energies(
        self, edge_vec: torch.Tensor, edge_index: torch.Tensor, atom_type: torch.Tensor
    ) -> torch.Tensor:
        """(n_edges,) float64, eV: each edge's share, V(r) / 2 (arguments as ``forward``)."""
        centre, neighbour = edge_index
        z_i, z_j = self.numbers[atom_type[centre]], self.numbers[atom_type[neighbour]]
        r = torch.linalg.vector_norm(edge_vec.to(torch.float64), dim=1)
        a = SCREENING_PREFACTOR * BOHR / (z_i**SCREENING_EXPONENT + z_j**SCREENING_EXPONENT)
        x = r / a
        phi = sum(
            c * torch.exp(-e * x) for c, e in zip(PHI_COEFFICIENTS, PHI_EXPONENTS, strict=True)
        )
        cutoff = self.radii[atom_type[centre]] + self.radii[atom_type[neighbour]]
        smooth = envelope(r / cutoff, self.p) * (r < cutoff)  # o3.radial.polynomial_cutoff's
        return 0.5 * COULOMB * z_i * z_j / r * phi * smooth
