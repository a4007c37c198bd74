"""``Potential``: the model interface shared by every architecture, trainer and calculator.

An architecture (MACE, Allegro, ...) is an *atomic energy model*: a module mapping a batch dict
that contains ``edge_vec`` to per-atom energies. ``Potential`` wraps it with the geometry and
the derivatives, identical for every architecture:

* geometry boundary: edge vectors are formed in float64 from float64 positions, cell and
  integer lattice shifts; the architecture casts them to its own dtype;
* readout boundary: per-atom energies come back in float64 and are summed per graph;
* forces are ``-dE/dpos`` and the virial ``-dE/dstrain`` by autograd, where a symmetric strain
  ``eps`` deforms positions and cell as ``x -> x (1 + eps)``; stress = ``dE/deps / volume``
  (ASE sign convention).

These boundaries hold under every precision policy (``equiforce.precision``): a policy changes
the parameter dtype and what runs in bf16/fp16 *inside* the energy model, never the float64
geometry, energy sum or derivatives (``tests/precision/test_apply.py`` checks every output's
dtype in every mode).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from equiforce.data import keys

NODE_FEATURES = "node_features"  # (n_atoms, n_features) model dtype, invariant per-atom features


class Potential(nn.Module):
    """Energy, forces, virial and stress from an atomic energy model.

    Args:
        energy_model: module with ``forward(data: dict) -> dict`` returning at least
            ``node_energy`` (n_atoms,) float64 in eV; it reads ``edge_vec``, ``edge_index``,
            ``atom_type``, ``batch``. It exposes ``type_names`` and ``r_max``.
        family: registered architecture name (``"mace"``, ...).
        spec: the architecture's frozen spec dataclass; saved verbatim in checkpoints.
    """

    def __init__(self, energy_model: nn.Module, family: str, spec: Any):
        super().__init__()
        self.energy_model = energy_model
        self.family = family
        self.spec = spec

    @property
    def type_names(self) -> list[str]:
        """Chemical symbols in the order of ``atom_type`` indices."""
        return list(self.spec.type_names)

    @property
    def r_max(self) -> float:
        """Cutoff radius, Å."""
        return float(self.spec.r_max)

    @property
    def dtype(self) -> torch.dtype:
        """Model (parameter) dtype."""
        return next(self.parameters()).dtype

    def forward(
        self,
        data: dict[str, torch.Tensor],
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predict energies and, on request, forces and stress for a batch.

        Args:
            data: batch dict (see ``equiforce.data.keys``); not modified.
            compute_forces: return ``forces`` (n_atoms, 3) float64, eV/Å.
            compute_stress: return ``stress`` and ``virial`` (n_graphs, 3, 3) float64 in
                eV/Å^3 and eV; graphs without a 3D cell get zero stress.
            create_graph: keep the derivative graph (needed to train on forces); defaults
                to ``self.training``.

        Returns:
            Dict with ``energy`` (n_graphs,) float64 eV, ``node_energy`` (n_atoms,) float64,
            and the requested derivatives, plus any extra outputs of the energy model.
        """
        create_graph = self.training if create_graph is None else create_graph
        inputs = {name: data[name] for name in keys.MODEL_INPUT_KEYS if name in data}
        n_graphs = int(inputs[keys.PTR].shape[0]) - 1
        pos = inputs[keys.POSITIONS].to(torch.float64)
        cell = inputs[keys.CELL].to(torch.float64)
        batch = inputs[keys.BATCH]
        need_grad = compute_forces or compute_stress
        if need_grad:
            pos = pos.detach().requires_grad_(True)
        strain = None
        if compute_stress:
            strain = torch.zeros(n_graphs, 3, 3, dtype=torch.float64, device=pos.device)
            strain.requires_grad_(True)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            pos_strained = pos + torch.einsum("ni,nij->nj", pos, symmetric[batch])
            cell = cell + torch.bmm(cell, symmetric)
        else:
            pos_strained = pos
        inputs[keys.POSITIONS] = pos_strained
        inputs[keys.CELL] = cell
        inputs[keys.EDGE_VEC] = edge_vectors(pos_strained, cell, inputs)
        out = dict(self.energy_model(inputs))
        node_energy = out[keys.NODE_ENERGY]
        if node_energy.dtype != torch.float64:
            raise TypeError("energy models must return float64 node energies")
        energy = torch.zeros(n_graphs, dtype=torch.float64, device=pos.device)
        energy = energy.index_add(0, batch, node_energy)
        out[keys.ENERGY] = energy
        if need_grad:
            wrt = [pos] + ([strain] if strain is not None else [])
            grads = torch.autograd.grad(
                energy.sum(), wrt, create_graph=create_graph, allow_unused=True
            )
            grads = [
                torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt, strict=True)
            ]
            if compute_forces:
                out[keys.FORCES] = -grads[0]
            if strain is not None:
                volume = torch.linalg.det(data[keys.CELL].to(torch.float64)).abs()
                safe = torch.where(volume > 0, volume, torch.ones_like(volume))
                stress = grads[1] / safe[:, None, None]
                out[keys.STRESS] = torch.where(volume[:, None, None] > 0, stress, 0.0)
                out[keys.VIRIAL] = -grads[1]
        return out

    def spec_dict(self) -> dict[str, Any]:
        """The spec as a plain dict (JSON/YAML friendly)."""
        return dataclasses.asdict(self.spec)


def edge_vectors(
    pos: torch.Tensor, cell: torch.Tensor, data: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Vectors from centre to neighbour including periodic shifts.

    Args:
        pos: (n_atoms, 3) float64, Å.
        cell: (n_graphs, 3, 3) float64, Å.
        data: batch dict with ``edge_index`` (2, n_edges), ``edge_shift`` (n_edges, 3) and
            ``batch`` (n_atoms,).

    Returns:
        (n_edges, 3) float64, Å: ``pos[j] - pos[i] + edge_shift @ cell[graph of i]``.
    """
    centre, neighbour = data[keys.EDGE_INDEX][0], data[keys.EDGE_INDEX][1]
    shift = data[keys.EDGE_SHIFT].to(pos.dtype)
    edge_cell = cell[data[keys.BATCH][centre]]
    return pos[neighbour] - pos[centre] + torch.einsum("ei,eij->ej", shift, edge_cell)
