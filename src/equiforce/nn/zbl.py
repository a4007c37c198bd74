"""Ziegler-Biersack-Littmark (ZBL) screened nuclear repulsion, in the two forms the peers use.

Per edge i -> j at distance r (Å), with Z the atomic numbers:

    V(r) = k Z_i Z_j / r * phi(r / a),  phi(x) = sum_m c_m exp(-d_m x),

times a polynomial envelope of order p (``o3.radial.envelope``) that is zero from a cutoff r_c
on; half of it goes to the edge's centre, so a bond's two edges give each atom half the pair
energy. The forms (``ZBLForm``, chosen by ``ModelSpec.pair_repulsion_form``):

* ``"mace"``, mace-torch's ``pair_repulsion`` (``mace.modules.radial.ZBLBasis``, 0.3.16):
  k = 14.3996 eV Å, a = 0.4543 * 0.529 / (Z_i^0.3 + Z_j^0.3) Å, c = (0.1818, 0.5099, 0.2802,
  0.02817), d = (3.2, 0.9423, 0.4028, 0.2016), r_c = R_i + R_j, the covalent radii
  (``ase.data.covalent_radii``). mace-torch multiplies k Z_i Z_j in torch's default dtype
  (float32 unless set to float64, as its ASE calculator does for a float64 model): a relative
  1e-8 apart from this float64 form otherwise.
* ``"lammps"``, LAMMPS's ``pair_style zbl`` constants as nequip's ``ZBL`` pair potential
  (0.19) uses them: k = 14.399645 eV Å, a = 0.46850 / (Z_i^0.23 + Z_j^0.23) Å, c = (0.18175,
  0.50986, 0.28022, 0.02817), d = (3.19980, 0.94229, 0.40290, 0.20162), r_c = the model's
  cutoff of the pair's types (r_max, or Allegro's ``pair_r_max``).

The term keeps atoms apart where the training data has no close contacts (MD at high
temperature, collisions, unrelaxed structures). It depends on each edge alone, so a strictly
local model stays strictly local. A covalent cutoff beyond the model's r_max (heavy
elements) reaches only the pairs within r_max, which are the edges, as in mace-torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from equiforce.kernels.tracing import traced
from equiforce.o3.radial import envelope

__all__ = ["FORMS", "ZBLForm", "ZBLRepulsion"]


@dataclass(frozen=True)
class ZBLForm:
    """One set of ZBL constants (module docstring): V = k Z_i Z_j / r * sum_m c_m e^(-d_m r/a),
    a = screening / (Z_i^exponent + Z_j^exponent)."""

    coulomb: float  # k, eV Å
    screening: float  # Å
    exponent: float
    coefficients: tuple[float, ...]
    decays: tuple[float, ...]


FORMS = {
    "mace": ZBLForm(
        14.3996,
        0.4543 * 0.529,
        0.300,
        (0.1818, 0.5099, 0.2802, 0.02817),
        (3.2, 0.9423, 0.4028, 0.2016),
    ),
    "lammps": ZBLForm(
        14.399645,
        0.46850,
        0.23,
        (0.18175, 0.50986, 0.28022, 0.02817),
        (3.19980, 0.94229, 0.40290, 0.20162),
    ),
}


class ZBLRepulsion(nn.Module):
    """The ZBL pair energy of every atom (module docstring), no parameters.

    Args:
        type_names: the model's element symbols (their atomic numbers and covalent radii).
        p: order of the envelope (the model's polynomial envelope order).
        form: ``"mace"`` or ``"lammps"`` (``FORMS``).
        pair_cutoffs: (n_types, n_types) float64 cutoff per (centre, neighbour) type, Å: the
            ``"lammps"`` form's r_c (the ``"mace"`` form uses the covalent radii instead).
    """

    def __init__(
        self,
        type_names: Sequence[str],
        p: int,
        form: str = "mace",
        pair_cutoffs: torch.Tensor | None = None,
    ):
        super().__init__()
        from ase.data import atomic_numbers, covalent_radii

        if form not in FORMS:
            raise ValueError(f"pair_repulsion_form must be one of {sorted(FORMS)}, got {form!r}")
        self.form = FORMS[form]
        unknown = [name for name in type_names if name not in atomic_numbers]
        if unknown:
            raise ValueError(f"pair_repulsion needs elements as type_names; {unknown} are not")
        numbers = [atomic_numbers[name] for name in type_names]
        if form == "mace":
            radii = torch.tensor([float(covalent_radii[z]) for z in numbers], dtype=torch.float64)
            pair_cutoffs = radii[:, None] + radii[None, :]
        elif pair_cutoffs is None:
            raise ValueError("the 'lammps' ZBL form needs the model's pair cutoffs")
        # derived from the spec, so not part of a model file's state
        self.register_buffer(
            "numbers", torch.tensor(numbers, dtype=torch.float64), persistent=False
        )
        self.register_buffer(
            "pair_cutoffs", pair_cutoffs.to(torch.float64).clone(), persistent=False
        )
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
        """(n_edges,) float64, eV: each edge's share, V(r) / 2 (arguments as ``forward``).

        Eagerly only the edges inside their cutoff are evaluated (with the mace form's
        covalent cutoffs a small part of the edges: 170 bytes and 0.4 µs per evaluated edge
        with its backward, one CPU thread); a trace (packages, ``torch.compile``) evaluates
        every edge, its shapes independent of the data."""
        type_i, type_j = atom_type[edge_index[0]], atom_type[edge_index[1]]
        r = torch.linalg.vector_norm(edge_vec.to(torch.float64), dim=1)
        cutoff = self.pair_cutoffs[type_i, type_j]
        if traced(edge_vec):
            return self._pair_energies(r, cutoff, type_i, type_j)
        near = (r < cutoff).nonzero().squeeze(1)
        pair = self._pair_energies(r[near], cutoff[near], type_i[near], type_j[near])
        return r.new_zeros(r.shape[0]).index_copy(0, near, pair)

    def _pair_energies(
        self, r: torch.Tensor, cutoff: torch.Tensor, type_i: torch.Tensor, type_j: torch.Tensor
    ) -> torch.Tensor:
        """V(r) / 2 (module docstring) of pairs at distances ``r`` (Å) with their cutoffs."""
        form = self.form
        z_i, z_j = self.numbers[type_i], self.numbers[type_j]
        x = r * (z_i**form.exponent + z_j**form.exponent) / form.screening  # r / a
        terms = zip(form.coefficients, form.decays, strict=True)
        phi = sum(c * torch.exp(-d * x) for c, d in terms)
        smooth = envelope(r / cutoff, self.p) * (r < cutoff)  # o3.radial.polynomial_cutoff's
        return 0.5 * form.coulomb * z_i * z_j / r * phi * smooth
