"""``Potential``: energies, forces and stress from any architecture.

An architecture (MACE, Allegro, ...) is an ``AtomicEnergyModel`` (``equiforce.models.contract``,
where the contract between them is written and ``equiforce.models.check`` checks it): a module
mapping a batch dict that contains ``edge_vec`` to per-atom energies. ``Potential`` wraps it
with the geometry and the derivatives, identical for every architecture, and satisfies the
contract's ``PotentialInterface``:

* geometry boundary: edge vectors are formed in float64 from float64 positions, cell and
  integer lattice shifts; the architecture casts them to its own dtype;
* readout boundary: per-atom energies come back in float64 and are summed per graph;
* forces are ``-dE/dpos`` and the virial ``-dE/dstrain`` by autograd, where a symmetric strain
  ``eps`` deforms positions and cell as ``x -> x (1 + eps)``; stress = ``dE/deps / volume``
  (ASE sign convention).

Inference on large structures (``create_graph`` False, more than ``block_edges`` edges) of a
strictly local energy model (``equiforce.models.local_blocks``: Allegro, not MACE) runs in
blocks of centre atoms: forces and virial come from each block's ``dE/d(edge_vec) = g_e``,
``F_i += g_ij``, ``F_j -= g_ij`` and ``dE/deps = sym(sum_e r_e (x) g_e)``, the same quantities
as the whole-graph autograd (equal to ~1e-12 in float64, ``tests/models/test_local_blocks.py``).

These boundaries hold under every precision policy (``equiforce.precision``): a policy changes
the parameter dtype and what runs in bf16/fp16 *inside* the energy model, never the float64
geometry, energy sum or derivatives (``tests/precision/test_apply.py`` checks every output's
dtype in every mode).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Collection

import torch
from torch import nn

from equiforce.data import keys
from equiforce.models.local_blocks import Block, BlockPlan, BlockSettings, SavedBytes
from equiforce.nn.edge_pairs import PAIR_FIRST, PAIR_OF_EDGE, EdgePairs, edge_pairs

NODE_FEATURES = "node_features"  # (n_atoms, n_features) model dtype, invariant per-atom features
# optional batch entry, an ``equiforce.nn.edge_pairs.EdgePairs``: the bonds of the edges,
# given to an energy model that declares ``uses_edge_pairs`` unless per-edge gradients are asked
EDGE_PAIRS = "edge_pairs"


class Potential(nn.Module):
    """Energy, forces, virial and stress from an atomic energy model.

    Args:
        energy_model: the architecture, an ``AtomicEnergyModel`` (it holds the spec).
        family: registered architecture name (``"mace"``, ...).

    Attributes:
        blocking: when and how inference of a strictly local model runs in blocks of
            centre atoms (``local_blocks.BlockSettings``; None: never); not saved.
        pair_edges: give an energy model that ``uses_edge_pairs`` (MACE) the bonds of the
            edges (``EDGE_PAIRS``, ``equiforce.nn.edge_pairs``) on eager calls that ask for
            no per-edge gradients, so that it evaluates its radial functions once per bond;
            equal to the per-edge evaluation to rounding. False: per edge unless the batch
            carries its pairs (``PAIR_INPUTS`` of ``equiforce.nn.edge_pairs``, as an exported
            MACE package's program takes them). Not saved.
    """

    def __init__(self, energy_model: nn.Module, family: str):
        super().__init__()
        self.energy_model = energy_model
        self.family = family
        self.blocking: BlockSettings | None = BlockSettings()
        self.pair_edges = True

    @property
    def spec(self) -> Any:
        """The energy model's frozen spec (a ``ModelSpec``), saved verbatim in model files."""
        return self.energy_model.spec

    @property
    def type_names(self) -> list[str]:
        """The energy model's chemical symbols, in ``atom_type`` order."""
        return self.energy_model.type_names

    @property
    def r_max(self) -> float:
        """The energy model's cutoff radius, Å."""
        return self.energy_model.r_max

    @property
    def dtype(self) -> torch.dtype:
        """Model (parameter) dtype."""
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    def forward(
        self,
        data: dict[str, torch.Tensor],
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool | None = None,
        compute_edge_gradients: bool = False,
        extra_outputs: Collection[str] = (),
        check_inputs: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Predict energies and, on request, forces and stress for a batch.

        Args:
            data: batch dict (see ``equiforce.data.keys``); not modified.
            compute_forces: return ``forces`` (n_atoms, 3) float64, eV/Å.
            compute_stress: return ``stress`` and ``virial`` (n_graphs, 3, 3) float64 in
                eV/Å^3 and eV; graphs without a 3D cell get zero stress.
            create_graph: keep the derivative graph (needed to train on forces); defaults
                to ``self.training``.
            compute_edge_gradients: return ``edge_gradient`` (n_edges, 3) float64, eV/Å,
                ``dE/dr_ij`` of every edge (forces are their sums, ``f_i = sum_j g_ij -
                sum_j g_ji``; an edge's virial is ``-r_ij (x) g_ij``): what per-atom virials
                (LAMMPS ``compute stress/atom``) are made of.
            extra_outputs: the energy model's optional outputs to return too
                (``AtomicEnergyModel.outputs``: ``node_features``, ``edge_energy``); only
                made when asked.
            check_inputs: check the per-structure state against what the model embeds
                (``AtomicEnergyModel.check_graph_inputs``, data-dependent); a traced call
                passes False and its caller checks the real batch before.

        Returns:
            Dict with ``energy`` (n_graphs,) float64 eV, ``node_energy`` (n_atoms,) float64,
            the requested derivatives and ``extra_outputs``.

        Raises:
            ValueError: an extra output the energy model does not declare, or a batch without
                a per-graph state the model conditions on (``graph_inputs``) or with one it
                cannot embed (``check_inputs``).
        """
        create_graph = self.training if create_graph is None else create_graph
        inputs = select_inputs(self.energy_model, data)
        if check_inputs:
            self.energy_model.check_graph_inputs(inputs)
        if PAIR_FIRST in data and self.energy_model.uses_edge_pairs:  # the batch's own bonds
            inputs[EDGE_PAIRS] = EdgePairs(data[PAIR_FIRST], data[PAIR_OF_EDGE])
        inputs[keys.POSITIONS] = inputs[keys.POSITIONS].to(torch.float64)
        inputs[keys.CELL] = inputs[keys.CELL].to(torch.float64)
        # create_graph first: a traced (compiled) call must not read the edge count
        blocked = (
            not create_graph
            and self.blocking is not None
            and self.energy_model.strictly_local
            and inputs[keys.EDGE_INDEX].shape[1] > self.blocking.min_edges
        )
        extra = frozenset(extra_outputs)
        if blocked:
            out, de_dpos, de_dstrain = self._blocked_forward(
                inputs, compute_forces, compute_stress, compute_edge_gradients, extra
            )
        else:
            out, de_dpos, de_dstrain = self._whole_forward(
                inputs, compute_forces, compute_stress, create_graph, compute_edge_gradients, extra
            )
        if compute_forces:
            out[keys.FORCES] = -de_dpos
        if compute_stress:
            volume = torch.linalg.det(data[keys.CELL].to(torch.float64)).abs()
            safe = torch.where(volume > 0, volume, torch.ones_like(volume))
            stress = de_dstrain / safe[:, None, None]
            out[keys.STRESS] = torch.where(volume[:, None, None] > 0, stress, 0.0)
            out[keys.VIRIAL] = -de_dstrain
        return out

    def _whole_forward(
        self,
        inputs: dict[str, torch.Tensor],
        compute_forces: bool,
        compute_stress: bool,
        create_graph: bool,
        compute_edge_gradients: bool,
        extra_outputs: frozenset[str],
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """One pass over the whole batch; derivatives by autograd through a strain.

        Returns:
            The model's outputs plus ``energy`` (and ``edge_gradient`` when asked); ``dE/dpos``
            (n_atoms, 3) and ``dE/deps`` (n_graphs, 3, 3) float64 (None when not requested).
        """
        n_graphs = int(inputs[keys.PTR].shape[0]) - 1
        pos, cell, batch = inputs[keys.POSITIONS], inputs[keys.CELL], inputs[keys.BATCH]
        if compute_forces or compute_stress or compute_edge_gradients:
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
        inputs = dict(inputs)
        inputs[keys.POSITIONS] = pos_strained
        inputs[keys.CELL] = cell
        inputs[keys.EDGE_VEC] = edge_vectors(pos_strained, cell, inputs)
        if compute_edge_gradients:
            inputs.pop(EDGE_PAIRS, None)
        elif EDGE_PAIRS not in inputs and self.pair_edges and self.energy_model.uses_edge_pairs:
            inputs[EDGE_PAIRS] = edge_pairs(inputs[keys.EDGE_INDEX], inputs[keys.EDGE_SHIFT])
        out = dict(self.energy_model(inputs, extra_outputs))
        out[keys.ENERGY] = graph_energy(out[keys.NODE_ENERGY], batch, n_graphs)
        if not (compute_forces or compute_stress or compute_edge_gradients):
            return out, None, None
        wrt = [pos] + ([strain] if strain is not None else [])
        wrt += [inputs[keys.EDGE_VEC]] if compute_edge_gradients else []
        grads = torch.autograd.grad(
            out[keys.ENERGY].sum(), wrt, create_graph=create_graph, allow_unused=True
        )
        grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt, strict=True)]
        if compute_edge_gradients:
            out[keys.EDGE_GRADIENT] = grads.pop()
        return out, grads[0], grads[1] if strain is not None else None

    def _blocked_forward(
        self,
        inputs: dict[str, torch.Tensor],
        compute_forces: bool,
        compute_stress: bool,
        compute_edge_gradients: bool,
        extra_outputs: frozenset[str],
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None, torch.Tensor | None]:
        """Blocks of centre atoms (``local_blocks.BlockPlan``); returns as ``_whole_forward``.

        Each block's energy is differentiated with respect to its edge vectors only. Outputs
        are detached when derivatives are computed (no graph is kept, as with
        ``create_graph=False`` on the whole batch).
        """
        n_graphs = int(inputs[keys.PTR].shape[0]) - 1
        pos, batch = inputs[keys.POSITIONS], inputs[keys.BATCH]
        need_grad = compute_forces or compute_stress or compute_edge_gradients
        de_dpos = torch.zeros_like(pos) if need_grad else None
        virial_sum = pos.new_zeros(n_graphs, 9) if compute_stress else None
        plan = BlockPlan(inputs)
        probe = plan.ranges(0, self.blocking.probe_edges)[0]
        sums = (inputs, de_dpos, virial_sum, compute_edge_gradients, extra_outputs)
        with SavedBytes() as saved:
            pieces = [self._block_pass(plan.block(*probe), *sums)]
        per_edge = saved.nbytes / max(1, plan.n_edges(*probe))
        for start, stop in plan.ranges(probe[1], self.blocking.edges_per_block(per_edge)):
            pieces.append(self._block_pass(plan.block(start, stop), *sums))
        out = plan.merge(pieces)
        out[keys.ENERGY] = graph_energy(out[keys.NODE_ENERGY], batch, n_graphs)
        de_dstrain = None
        if virial_sum is not None:
            full = virial_sum.view(n_graphs, 3, 3)
            de_dstrain = 0.5 * (full + full.transpose(1, 2))
        return out, de_dpos if compute_forces else None, de_dstrain

    def _block_pass(
        self,
        block: Block,
        inputs: dict[str, torch.Tensor],
        de_dpos: torch.Tensor | None,
        virial_sum: torch.Tensor | None,
        keep_edge_gradients: bool,
        extra_outputs: frozenset[str],
    ) -> dict[str, torch.Tensor]:
        """Evaluate one block; accumulate its ``dE/dpos`` and ``sum_e r_e (x) dE/dr_e``.

        Args:
            block: the block (``BlockPlan.block``).
            inputs: the whole batch (float64 ``pos`` and ``cell``).
            de_dpos: (n_atoms, 3) float64 accumulator, or None (no derivatives).
            virial_sum: (n_graphs, 9) float64 accumulator, or None (no stress).
            keep_edge_gradients: add the block's ``dE/dr_e`` as ``edge_gradient``.
            extra_outputs: the energy model's optional outputs wanted.

        Returns:
            The model's outputs of the block's centre atoms and edges (detached when
            derivatives are taken).
        """
        batch = inputs[keys.BATCH]
        geometry = {
            keys.EDGE_INDEX: block.edge_index,
            keys.EDGE_SHIFT: block.edge_shift,
            keys.BATCH: batch,
        }
        vec = edge_vectors(inputs[keys.POSITIONS], inputs[keys.CELL], geometry)
        if de_dpos is not None:
            vec.requires_grad_(True)
        block.inputs[keys.EDGE_VEC] = vec
        out = block.keep_centres(dict(self.energy_model(block.inputs, extra_outputs)))
        if de_dpos is None:
            return out
        (g,) = torch.autograd.grad(out[keys.NODE_ENERGY].sum(), vec, allow_unused=True)
        g = torch.zeros_like(vec) if g is None else g
        centre, neighbour = block.edge_index
        de_dpos.index_add_(0, neighbour, g)
        de_dpos.index_add_(0, centre, -g)
        if virial_sum is not None:
            outer = (vec.detach().unsqueeze(2) * g.unsqueeze(1)).reshape(-1, 9)
            virial_sum.index_add_(0, batch.index_select(0, centre), outer)
        if keep_edge_gradients:
            out[keys.EDGE_GRADIENT] = g
        return {name: value.detach() for name, value in out.items()}

    def spec_dict(self) -> dict[str, Any]:
        """The spec as a plain dict (JSON/YAML friendly)."""
        return dataclasses.asdict(self.spec)


def select_inputs(energy_model: nn.Module, data: dict[str, torch.Tensor]) -> dict:
    """The entries of ``data`` an energy model reads: ``keys.MODEL_INPUT_KEYS`` (those
    present) and the per-structure state it conditions on (``graph_inputs``).

    Raises:
        ValueError: ``data`` lacks a state quantity the model conditions on (named).
    """
    inputs = {name: data[name] for name in keys.MODEL_INPUT_KEYS if name in data}
    for name in energy_model.graph_inputs:
        if name not in data:
            raise ValueError(
                f"the model conditions on {name!r} (per structure), which this batch lacks; "
                "build batches with equiforce.data (graph.model_inputs, collate)"
            )
        inputs[name] = data[name]
    return inputs


def graph_energy(node_energy: torch.Tensor, batch: torch.Tensor, n_graphs: int) -> torch.Tensor:
    """Sum of float64 per-atom energies (n_atoms,) per graph -> (n_graphs,) float64, eV."""
    if node_energy.dtype != torch.float64:
        raise TypeError("energy models must return float64 node energies")
    energy = torch.zeros(n_graphs, dtype=torch.float64, device=node_energy.device)
    return energy.index_add(0, batch, node_energy)


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
    centre, neighbour = data[keys.EDGE_INDEX].unbind(0)
    shift = data[keys.EDGE_SHIFT].to(pos.dtype)
    # index_select, not advanced indexing: a few µs less per op and per backward (index's
    # backward is an accumulating index_put), ~15 µs of a molecule's energy + forces call
    edge_cell = cell.index_select(0, data[keys.BATCH].index_select(0, centre))
    vec = pos.index_select(0, neighbour) - pos.index_select(0, centre)
    # (E, 1, 3) @ (E, 3, 3): one bmm (an einsum adds a permute and a view per operand)
    return vec + torch.bmm(shift.unsqueeze(1), edge_cell).squeeze(1)
