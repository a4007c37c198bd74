"""One MPI rank's share of the energy: its local atoms, with ghost atoms around them.

LAMMPS gives each rank its local atoms and copies of the atoms around its sub-domain (ghosts,
periodic images included) out to r_max. The rank's graph holds the edges centred on local
atoms; the energy is the sum of the local atoms' energies and ``-dE/dx`` is taken for local
and ghost atoms alike (LAMMPS adds ghost forces into their owners: ``newton on``).

A strictly local model (Allegro) needs nothing more. A message-passing model (MACE) reads, in
layer k >= 1, the features its neighbours computed in layer k - 1; a ghost has no complete
neighbourhood on this rank, so before each such layer the ghost rows are overwritten with their
owners' (``HaloExchange``: a forward communication; its backward adds the gradient of every
ghost row into its owner's row, a reverse communication). The ghost shell then stays at r_max
whatever the number of layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from equiforce.data import keys
from equiforce.models.contract import PotentialInterface, run_layers
from equiforce.precision import current_policy, precision_scope

# ``communicate(rows, reverse)``: rows (n_all, F) float64 contiguous, changed in place: forward
# copies owners' rows into their ghost rows, reverse adds ghost rows into their owners' rows
Communicate = Callable[[torch.Tensor, bool], None]


class HaloExchange(torch.autograd.Function):
    """Ghost rows of a per-atom tensor := their owners' rows; backward: the reverse sum."""

    @staticmethod
    def forward(ctx, halo: torch.Tensor, n_local: int, communicate: Communicate) -> torch.Tensor:
        """(n_all, F) halo -> (n_all, F): local rows unchanged, ghost rows from their owners."""
        ctx.n_local, ctx.communicate = n_local, communicate
        rows = halo.detach().to(torch.float64).contiguous().clone()
        communicate(rows, False)
        return rows.to(halo.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        """Each owner row gets its ghosts' gradients; ghost inputs had no effect (zero)."""
        rows = grad.to(torch.float64).contiguous().clone()
        ctx.communicate(rows, True)
        rows[ctx.n_local :] = 0.0
        return rows.to(grad.dtype), None, None


@dataclass
class DomainResult:
    """What one rank hands back to LAMMPS.

    Attributes:
        energy: sum of the local atoms' energies, eV.
        node_energy: (n_local,) float64, eV.
        forces: (n_all, 3) float64, eV/Å: ``-dE/dx`` of local and ghost atoms.
    """

    energy: float
    node_energy: torch.Tensor
    forces: torch.Tensor


def evaluate_domain(
    potential: PotentialInterface,
    pos: torch.Tensor,
    atom_type: torch.Tensor,
    n_local: int,
    edge_index: torch.Tensor,
    communicate: Communicate | None = None,
) -> DomainResult:
    """Energy of one rank's local atoms and its derivatives (module docstring).

    Args:
        potential: the model; its energy model runs layer by layer (``run_layers``).
        pos: (n_all, 3) float64, Å: local atoms first, then ghosts.
        atom_type: (n_all,) int64 model type indices.
        n_local: number of local atoms.
        edge_index: (2, n_edges) int64 ``[centre, neighbour]``, centres local, pairs closer
            than r_max.
        communicate: the halo exchange of a message-passing model (``Communicate``); None
            for one domain without ghosts or a strictly local model.

    Returns:
        The local energies and the forces on all atoms.
    """
    model = potential.energy_model
    if model.message_passing_layers and communicate is None:
        raise ValueError("a message-passing model needs a halo exchange (communicate)")
    n_all = pos.shape[0]
    if n_all == 0:  # a rank without atoms still takes part in every (collective) exchange:
        # one placeholder atom without edges, which no communication list names
        pos, atom_type = pos.new_zeros(1, 3), atom_type.new_zeros(1)
    pos = pos.to(potential.device).detach().requires_grad_(True)
    centre, neighbour = edge_index.to(potential.device)
    inputs = {
        keys.ATOM_TYPE: atom_type.to(potential.device),
        keys.BATCH: torch.zeros_like(atom_type, device=potential.device),
        keys.EDGE_INDEX: torch.stack([centre, neighbour]),
        keys.EDGE_VEC: pos[neighbour] - pos[centre],
    }

    def exchange(index: int, halo: torch.Tensor) -> torch.Tensor:
        return HaloExchange.apply(halo, n_local, communicate)

    with torch.enable_grad(), precision_scope(current_policy(potential)):
        out = run_layers(model, inputs, exchange if communicate is not None else None)
        node_energy = out[keys.NODE_ENERGY][:n_local]
        energy = node_energy.sum()
        (grad,) = torch.autograd.grad(energy, pos, allow_unused=True)
    forces = torch.zeros_like(pos) if grad is None else -grad
    forces = forces[:n_all].detach().cpu()
    return DomainResult(float(energy.detach()), node_energy.detach().cpu(), forces)
