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

Heat-flux (centroid) virials, ``evaluate_domain(positions=...)``: LAMMPS's ``compute
centroid/stress/atom`` wants ``W_k = sum_i (x_i - x_k) (x) dE_i/dx_k`` per atom k, the sum over
every atom i whose energy depends on k, with ``x_i - x_k`` the displacement between the two
copies that actually interact. ``W_k = dPhi/dx_k - x_k (x) dE/dx_k`` with the energy moment
``Phi^a = sum_i x_i^a E_i`` (positions held fixed; Langer et al., PRB 108, L100302 (2023)):
three more backward passes, one per component a. Within a rank every row is one copy at its own
position (the caller gives one row per copy), so the edges need no image shifts; what crosses
the halo exchange into an owner's row lives in a frame shifted by ``T = x_ghost - x_owner``
(a periodic image, or 0), so the exchange's reverse of the moment's gradient subtracts ``T^a``
times the energy's gradient of the same rows (``CentroidPasses``). This is exact for any
number of layers and ranks; a strictly local model needs none of it (its E_i depends only on
the edges centred at i, and an edge's virial is its neighbour's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from equiforce.data import keys
from equiforce.data.charge_spin import STATE_INFO_KEYS, electronic_state
from equiforce.models.contract import LOCAL_ATOMS, PotentialInterface, run_layers
from equiforce.models.local_blocks import BlockPlan, SavedBytes
from equiforce.precision import current_policy, precision_scope

# LAMMPS's order of a per-atom virial's 9 components, xx yy zz xy xz yz yx zx zy: (position,
# gradient) axes of W^ab
LAMMPS_VIRIAL_ORDER = ([0, 1, 2, 0, 0, 1, 1, 2, 2], [0, 1, 2, 1, 2, 2, 0, 0, 1])

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


@dataclass
class CentroidPasses:
    """The backward passes of the heat-flux virials, as the halo exchanges see them.

    Attributes:
        shift: (n_all, 3) float64, Å: each row's position minus its owner's (0 for local
            rows; a lattice vector for a periodic image).
        component: None in the energy's backward pass; a in 0, 1, 2 in the backward pass of
            the energy moment ``sum_i x_i^a E_i`` (module docstring).
    """

    shift: torch.Tensor
    component: int | None = None


class HaloExchange(torch.autograd.Function):
    """Ghost rows of a per-atom tensor := their owners' rows; backward: the reverse sum."""

    @staticmethod
    def forward(
        ctx,
        halo: torch.Tensor,
        n_local: int,
        n_all: int,
        communicate: Communicate,
        passes: CentroidPasses | None,
    ) -> torch.Tensor:
        """(n_local or n_all, F) halo -> (n_all, F): local rows unchanged, ghost rows from
        their owners (the halo's own ghost rows, if it has any, are not read). ``passes``:
        the heat-flux virials' backward passes (None: the energy's only)."""
        ctx.n_local, ctx.n_rows, ctx.communicate = n_local, halo.shape[0], communicate
        ctx.passes = passes
        rows = halo.new_empty((n_all, halo.shape[1]), dtype=torch.float64)
        rows[:n_local] = halo[:n_local].detach()
        rows[n_local:] = 0.0  # LAMMPS writes every ghost row; zeros keep unused ones defined
        communicate(rows, False)
        return rows.to(halo.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None, None]:
        """Each owner row gets its ghosts' gradients; ghost inputs had no effect (zero).
        In a moment's pass the ghost rows move into their owners' frame first (module
        docstring), with the energy pass's ghost rows of this same exchange."""
        rows = grad.to(torch.float64).contiguous().clone()
        passes, ghosts = ctx.passes, rows[ctx.n_local :]
        if passes is not None and passes.component is None:
            ctx.energy_ghosts = ghosts.clone()
        elif passes is not None:
            ghosts -= passes.shift[ctx.n_local :, passes.component, None] * ctx.energy_ghosts
        ctx.communicate(rows, True)
        rows[ctx.n_local :] = 0.0
        return rows[: ctx.n_rows].to(grad.dtype), None, None, None, None


@dataclass
class DomainResult:
    """What one rank hands back to LAMMPS.

    Attributes:
        energy: sum of the local (mapped) atoms' energies, eV.
        node_energy: (n_local,) float64, eV; 0 for atoms of unmapped types.
        pair_gradient: (n_edges, 3) float64, eV/Å: ``dE/dr_ij`` of each edge, in the order
            of ``edge_index``.
        times: where the call's time went.
        centroid_virial: (n_all, 3, 3) float64, eV: this rank's share of each row's heat-flux
            virial ``W^ab`` (a of the position, b of the gradient); the shares of a ghost
            row belong to its owner. None unless asked for (``positions``).
    """

    energy: float
    node_energy: torch.Tensor
    pair_gradient: torch.Tensor
    times: DomainTimes = field(default_factory=DomainTimes)
    centroid_virial: torch.Tensor | None = None

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
    positions: torch.Tensor | None = None,
    state: Mapping[str, float] = keys.GRAPH_STATE_DEFAULTS,
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
        positions: (n_all, 3) float64, Å, of every row, with one row per copy of an atom
            (each ghost copy, periodic images of local atoms included, a row of its own):
            also compute the heat-flux virials (``DomainResult.centroid_virial``, module
            docstring); every rank must ask for them in the same call. None: not.
        state: the whole system's total charge and spin multiplicity
            (``keys.GRAPH_STATE_KEYS``; ``lammps_state``), for a model that conditions on them
            (``graph_inputs``); default: a neutral singlet.

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
        positions = None if positions is None else positions.new_zeros(1, 3)
    mapped = (atom_type >= 0).to(device)
    atom_type = atom_type.clamp(min=0).to(device)
    edge_vec = edge_vec.to(device).detach().requires_grad_(True)
    inputs = {
        keys.ATOM_TYPE: atom_type,
        keys.BATCH: torch.zeros_like(atom_type),
        keys.EDGE_INDEX: edge_index.to(device),
        keys.EDGE_VEC: edge_vec,
    }
    for name in model.graph_inputs:  # the box is one structure
        inputs[name] = torch.tensor([float(state[name])], dtype=torch.float64, device=device)
    n_all = atom_type.shape[0]

    def timed(rows: torch.Tensor, reverse: bool) -> None:
        start = time.perf_counter()
        communicate(rows, reverse)
        times.exchange += time.perf_counter() - start

    passes = None
    if positions is not None:  # centred: the moment's rounding scales with |x| (any origin
        # per rank will do: the owner shifts below are measured between centred positions)
        positions = positions.to(torch.float64)
        positions = positions - positions.mean(dim=0)
        shift = torch.zeros_like(positions)
        if communicate is not None and model.message_passing_layers:
            shift = _owner_shift(positions, n_local, timed)
        positions, passes = positions.to(device), CentroidPasses(shift.to(device))

    def exchange(index: int, halo: torch.Tensor) -> torch.Tensor:
        return HaloExchange.apply(halo, n_local, n_all, timed, passes)

    blocking = getattr(potential, "blocking", None)
    if (
        model.strictly_local
        and blocking is not None
        and edge_vec.shape[0] > blocking.min_edges
        and passes is None
    ):
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
        retain = passes is not None
        (grad,) = torch.autograd.grad(energy, edge_vec, allow_unused=True, retain_graph=retain)
        if passes is not None:
            moment = _moment_gradient(node_energy, positions[:n_local], edge_vec, passes)
    times.backward = time.perf_counter() - start - times.forward
    grad = (torch.zeros_like(edge_vec) if grad is None else grad).detach().to(torch.float64)
    centroid_virial = None
    if passes is not None:
        centroid_virial = _centroid_virial(moment, grad, positions, inputs[keys.EDGE_INDEX])
    return DomainResult(
        float(energy.detach()),
        node_energy.detach().to(torch.float64),
        grad,
        times,
        centroid_virial,
    )


def lammps_state(
    potential: PotentialInterface, where: str, charge: float | None, spin: float | None
) -> dict[str, float]:
    """The total charge and spin multiplicity a LAMMPS run gives its model: those given,
    else a neutral singlet (as an ASE structure without them).

    Args:
        potential: the model.
        where: the command that gave them, for the messages (e.g. ``"pair_style equiforce"``).
        charge: net charge of the whole system, e, or None.
        spin: its spin multiplicity 2S + 1, or None.

    Returns:
        ``{name: value}`` for ``keys.GRAPH_STATE_KEYS``.

    Raises:
        ValueError: a value for a quantity the model does not condition on, or one it
            cannot embed (``check_graph_inputs``), named.
    """
    info = {key: value for key, value in (("charge", charge), ("spin", spin)) if value is not None}
    state = {  # validated as a structure's info is (a multiplicity below 1 named)
        name: electronic_state(info, STATE_INFO_KEYS[name], name, where)
        for name in keys.GRAPH_STATE_KEYS
    }
    for name in keys.GRAPH_STATE_KEYS:
        given = STATE_INFO_KEYS[name] in info
        if given and name not in potential.energy_model.graph_inputs:
            raise ValueError(f"{where}: {name} given, but the model does not condition on it")
    batch = {name: torch.tensor([value], dtype=torch.float64) for name, value in state.items()}
    try:
        potential.energy_model.check_graph_inputs(batch)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return state


def lammps_order(virials):
    """(n, 3, 3) per-atom virials -> (n, 9) in LAMMPS's order (``LAMMPS_VIRIAL_ORDER``);
    NumPy or torch."""
    rows, columns = LAMMPS_VIRIAL_ORDER
    return virials[:, rows, columns]


def _owner_shift(positions: torch.Tensor, n_local: int, communicate: Communicate) -> torch.Tensor:
    """(n_all, 3) float64 Å: each row's position minus its owner's, each in its own rank's
    frame (one forward exchange)."""
    owners = positions.detach().cpu().clone()
    owners[n_local:] = 0.0
    communicate(owners, False)
    return positions.cpu() - owners


def _moment_gradient(
    node_energy: torch.Tensor,
    local_positions: torch.Tensor,
    edge_vec: torch.Tensor,
    passes: CentroidPasses,
) -> torch.Tensor:
    """(n_edges, a, b) float64, Å eV/Å: ``dPhi^a/dr_ij^b`` of the energy moment
    ``Phi^a = sum_i x_i^a E_i`` over the local atoms, positions held fixed (three backward
    passes, after the energy's, which must have kept the graph)."""
    gradients = []
    for component in range(3):
        passes.component = component
        weights = local_positions[:, component].to(node_energy.dtype)
        (gradient,) = torch.autograd.grad(
            (weights * node_energy).sum(), edge_vec, allow_unused=True, retain_graph=component < 2
        )
        gradients.append(torch.zeros_like(edge_vec) if gradient is None else gradient)
    return torch.stack(gradients, dim=1).detach().to(torch.float64)


def _centroid_virial(
    moment: torch.Tensor, grad: torch.Tensor, positions: torch.Tensor, edge_index: torch.Tensor
) -> torch.Tensor:
    """(n_all, 3, 3) float64 eV: ``W_k = dPhi/dx_k - x_k (x) dE/dx_k`` per row from the edges'
    ``dPhi^a/dr_ij`` (n_edges, 3, 3) and ``dE/dr_ij`` (n_edges, 3): ``r_ij = x_j - x_i``,
    so x_j gets each edge's gradient and x_i its negative."""
    centre, neighbour = edge_index
    virial = positions.new_zeros(positions.shape[0], 3, 3)
    virial.index_add_(0, neighbour, moment - positions[neighbour, :, None] * grad[:, None, :])
    virial.index_add_(0, centre, positions[centre, :, None] * grad[:, None, :] - moment)
    return virial


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
