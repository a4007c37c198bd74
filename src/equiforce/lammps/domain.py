"""One MPI rank's share of the energy: its local atoms, with ghost atoms around them.

LAMMPS (``pair_style equiforce``, or ``pair_style mliap unified`` through
``equiforce.lammps.mliap``) gives each rank its local atoms and copies of the atoms around its
sub-domain (ghosts, periodic images included) out to r_max. The rank's graph holds the edges
centred on local atoms; the energy is the sum of the local atoms' energies. What goes back is
the gradient of that energy with respect to every edge vector, ``dE/dr_ij`` with
``r_ij = x_j - x_i``: the force on the centre is ``+dE/dr_ij``, on the neighbour
``-dE/dr_ij`` (ghosts included: LAMMPS adds ghost forces into their owners, ``newton on``),
and the edge's virial ``-r_ij (x) dE/dr_ij`` (global, and per atom half to each end).

A strictly local model (Allegro) needs nothing more; on a large domain it runs in blocks of
centre atoms (``Potential.blocking``, ``equiforce.models.local_blocks``), as the ASE path
does, so that its intermediates stay near the caches. A message-passing model (MACE) reads, in
layer k >= 1, the features its neighbours computed in layer k - 1; a ghost has no complete
neighbourhood on this rank, so before each such layer the ghost rows are overwritten with their
owners' (``HaloExchange``: a forward communication; its backward adds the gradient of every
ghost row into its owner's row, a reverse communication). The ghost shell then stays at r_max
whatever the number of layers. The batch names the local atoms (``LOCAL_ATOMS``), so the model
runs its node-wise work on their rows only and the exchange fills the ghost rows. The
exchange is a ``Communicate`` function; the plugin's goes through LAMMPS's
``comm->forward_comm`` / ``reverse_comm``, ML-IAP's through its data object's
``forward_exchange`` / ``reverse_exchange``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from equiforce.data import keys
from equiforce.models.contract import LOCAL_ATOMS, PotentialInterface, run_layers
from equiforce.models.local_blocks import BlockPlan, SavedBytes
from equiforce.precision import current_policy, precision_scope

# ``communicate(rows, reverse)``: rows (n_all, F) float64 contiguous, changed in place: forward
# copies owners' rows into their ghost rows, reverse adds ghost rows into their owners' rows
Communicate = Callable[[torch.Tensor, bool], None]


@dataclass
class DomainTimes:
    """Wall seconds of one ``evaluate_domain`` call (``time.perf_counter``).

    Attributes:
        forward: the layers (``run_layers``), halo exchanges included.
        backward: ``dE/dr_ij`` (autograd), reverse exchanges included.
        exchange: inside ``communicate`` (both directions; waiting for other ranks included).
        blocks: model passes (several: a strictly local model in blocks of centre atoms,
            whose forward and backward interleave and are all counted in ``forward``).
        node_rows: rows of the model's per-atom outputs (``node_energy``): the rows its
            node-wise work ran on, n_local when it skips the ghosts (``LOCAL_ATOMS``).
    """

    forward: float = 0.0
    backward: float = 0.0
    exchange: float = 0.0
    blocks: int = 1
    node_rows: int = 0


class HaloExchange(torch.autograd.Function):
    """Ghost rows of a per-atom tensor := their owners' rows; backward: the reverse sum."""

    @staticmethod
    def forward(
        ctx, halo: torch.Tensor, n_local: int, n_all: int, communicate: Communicate
    ) -> torch.Tensor:
        """(n_local or n_all, F) halo -> (n_all, F): local rows unchanged, ghost rows from
        their owners (the halo's own ghost rows, if it has any, are not read)."""
        ctx.n_local, ctx.n_rows, ctx.communicate = n_local, halo.shape[0], communicate
        rows = halo.new_empty((n_all, halo.shape[1]), dtype=torch.float64)
        rows[:n_local] = halo[:n_local].detach()
        rows[n_local:] = 0.0  # LAMMPS writes every ghost row; zeros keep unused ones defined
        communicate(rows, False)
        return rows.to(halo.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        """Each owner row gets its ghosts' gradients; ghost inputs had no effect (zero)."""
        rows = grad.to(torch.float64).contiguous().clone()
        ctx.communicate(rows, True)
        rows[ctx.n_local :] = 0.0
        return rows[: ctx.n_rows].to(grad.dtype), None, None, None


@dataclass
class DomainResult:
    """What one rank hands back to LAMMPS.

    Attributes:
        energy: sum of the local (mapped) atoms' energies, eV.
        node_energy: (n_local,) float64, eV; 0 for atoms of unmapped types.
        pair_gradient: (n_edges, 3) float64, eV/Å: ``dE/dr_ij`` of each edge, in the order
            of ``edge_index``.
        times: where the call's time went.
    """

    energy: float
    node_energy: torch.Tensor
    pair_gradient: torch.Tensor
    times: DomainTimes = field(default_factory=DomainTimes)

    def forces(self, edge_index: torch.Tensor, n_all: int) -> torch.Tensor:
        """(n_all, 3) float64 eV/Å ``-dE/dx`` of local and ghost atoms from the edges."""
        forces = self.pair_gradient.new_zeros(n_all, 3)
        edge_index = edge_index.to(forces.device)
        forces.index_add_(0, edge_index[0], self.pair_gradient)
        forces.index_add_(0, edge_index[1], -self.pair_gradient)
        return forces


def evaluate_domain(
    potential: PotentialInterface,
    atom_type: torch.Tensor,
    n_local: int,
    edge_index: torch.Tensor,
    edge_vec: torch.Tensor,
    communicate: Communicate | None = None,
) -> DomainResult:
    """Energy of one rank's local atoms and its edge gradients (module docstring).

    Args:
        potential: the model; its energy model runs layer by layer (``run_layers``).
        atom_type: (n_all,) int64 model type indices of the local atoms, then the ghosts;
            -1 for an atom of a type the model does not cover (``pair_coeff ... NULL`` under
            ``pair_style hybrid``): it must be in no edge, and its energy is not counted.
        n_local: number of local atoms.
        edge_index: (2, n_edges) int64 ``[centre, neighbour]``, centres local, pairs closer
            than r_max.
        edge_vec: (n_edges, 3) float64, Å: ``r_ij = x_j - x_i`` of each edge.
        communicate: the halo exchange of a message-passing model (``Communicate``); None
            for one domain without ghosts or a strictly local model.

    Returns:
        The local energies and ``dE/dr_ij`` of every edge, float64 on the model's device.
    """
    model = potential.energy_model
    if model.message_passing_layers and communicate is None:
        raise ValueError("a message-passing model needs a halo exchange (communicate)")
    times = DomainTimes()
    device = potential.device
    if atom_type.shape[0] == 0:  # a rank without atoms still takes part in every
        # (collective) exchange: one placeholder atom without edges, which no exchange names
        atom_type = atom_type.new_full((1,), -1)
    mapped = (atom_type >= 0).to(device)
    atom_type = atom_type.clamp(min=0).to(device)
    edge_vec = edge_vec.to(device).detach().requires_grad_(True)
    inputs = {
        keys.ATOM_TYPE: atom_type,
        keys.BATCH: torch.zeros_like(atom_type),
        keys.EDGE_INDEX: edge_index.to(device),
        keys.EDGE_VEC: edge_vec,
    }
    n_all = atom_type.shape[0]

    def timed(rows: torch.Tensor, reverse: bool) -> None:
        start = time.perf_counter()
        communicate(rows, reverse)
        times.exchange += time.perf_counter() - start

    def exchange(index: int, halo: torch.Tensor) -> torch.Tensor:
        return HaloExchange.apply(halo, n_local, n_all, timed)

    blocking = getattr(potential, "blocking", None)
    if model.strictly_local and blocking is not None and edge_vec.shape[0] > blocking.min_edges:
        return _evaluate_blocks(potential, inputs, n_local, mapped, blocking)
    start = time.perf_counter()
    if model.message_passing_layers and n_local > 0:  # node-wise work on the local rows only
        inputs[LOCAL_ATOMS] = n_local  # (the kernels take no 0-row tensors: a rank without
        # local atoms runs its few ghost rows, or the placeholder, as before)
    with torch.enable_grad(), precision_scope(current_policy(potential)):
        out = run_layers(model, inputs, exchange if communicate is not None else None)
        times.node_rows = out[keys.NODE_ENERGY].shape[0]
        node_energy = torch.where(mapped[:n_local], out[keys.NODE_ENERGY][:n_local], 0.0)
        energy = node_energy.sum()
        times.forward = time.perf_counter() - start
        (grad,) = torch.autograd.grad(energy, edge_vec, allow_unused=True)
    times.backward = time.perf_counter() - start - times.forward
    grad = torch.zeros_like(edge_vec) if grad is None else grad
    return DomainResult(
        float(energy.detach()),
        node_energy.detach().to(torch.float64),
        grad.detach().to(torch.float64),
        times,
    )


def _evaluate_blocks(potential, inputs, n_local, mapped, blocking) -> DomainResult:
    """``evaluate_domain`` of a strictly local model in blocks of centre atoms.

    Blocks as ``Potential`` cuts them (``BlockPlan``; the first block measures the model's
    autograd-saved bytes per edge and sizes the others to ``blocking.block_bytes``); each
    block's energy is differentiated with respect to its own edge vectors.
    """
    times = DomainTimes()
    start = time.perf_counter()
    edge_vec = inputs[keys.EDGE_VEC].detach()
    n_edges = edge_vec.shape[0]
    # the plan carries per-edge lattice shifts; LAMMPS's ghosts are real positions: none
    no_shift = edge_vec.new_zeros(1, 3).expand(n_edges, 3)
    plan = BlockPlan({**inputs, keys.EDGE_SHIFT: no_shift})
    vec_sorted = edge_vec if plan.order is None else edge_vec.index_select(0, plan.order)
    energies, gradients = [], []

    def run(first_atom: int, last_atom: int) -> None:
        block = plan.block(first_atom, last_atom)
        first, last = plan.edge_ptr[first_atom], plan.edge_ptr[last_atom]
        vec = vec_sorted[first:last].clone().requires_grad_(True)
        block.inputs[keys.EDGE_VEC] = vec
        out = block.keep_centres(run_layers(potential.energy_model, block.inputs))
        node_energy = out[keys.NODE_ENERGY]
        ids = torch.arange(first_atom, last_atom, device=vec.device)
        node_energy = torch.where(mapped[first_atom:last_atom] & (ids < n_local), node_energy, 0.0)
        grad = None
        if node_energy.requires_grad:  # a block of ghosts only has no edges
            (grad,) = torch.autograd.grad(node_energy.sum(), vec, allow_unused=True)
        energies.append(node_energy.detach())
        times.blocks = len(energies)
        gradients.append(torch.zeros_like(vec) if grad is None else grad)

    with torch.enable_grad(), precision_scope(current_policy(potential)):
        probe = plan.ranges(0, blocking.probe_edges)[0]
        with SavedBytes() as saved:
            run(*probe)
        per_edge = saved.nbytes / max(1, plan.n_edges(*probe))
        for first_atom, last_atom in plan.ranges(probe[1], blocking.edges_per_block(per_edge)):
            run(first_atom, last_atom)
    node_energy = torch.cat(energies).to(torch.float64)
    times.node_rows = node_energy.shape[0]
    node_energy = node_energy[:n_local]
    grad = torch.cat(gradients).to(torch.float64)
    if plan.order is not None:
        grad = torch.empty_like(grad).index_copy(0, plan.order, grad)
    times.forward = time.perf_counter() - start
    return DomainResult(float(node_energy.sum()), node_energy, grad, times)
