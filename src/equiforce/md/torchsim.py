"""TorchSim model interface for any equiforce model: batched energies, forces and stress.

``EquiforceModel`` is a ``torch_sim.models.interface.ModelInterface``, so TorchSim's
integrators (``ts.nvt_langevin``, ``ts.nve``, ``ts.npt_langevin``, ...), optimizers
(``ts.optimizers.fire``, ``frechet_cell_fire``) and runners (``ts.integrate``,
``ts.optimize``) drive an equiforce model on many systems of different sizes at once: every
call evaluates the whole batch in one model call.

Supported torch-sim: 0.3.0 (the release that installs on Python 3.11; ``pip install
equiforce[sim]``). Its ``SimState`` stores cells as *column* vectors and ``pbc`` as one bool
for the whole batch; this interface also accepts ``pbc`` as a bool tensor of shape (3,) or
(n_systems, 3) (per system, for direct model calls on mixed batches), and treats a system
whose cell is all zeros as non-periodic (a molecule), as the ASE calculator does.

One bool per state cannot say which axes of a slab are periodic, so structures not periodic
in 3D (molecules and slabs) share states with ``pbc`` False in which ``atoms_to_state`` zeroes
every non-periodic cell vector, and ``CellAxesModel`` runs a model on such a state with each
system periodic exactly along its non-zero cell vectors. TorchSim never wraps positions in a
``pbc`` False state; a slab's atoms may leave its cell sideways, which the neighbour list
handles.

The batch is built with the same neighbour list (``equiforce.data.neighbors``, vesin on the
CPU) and the same geometry/derivative path (``Potential``) as ``EquiforceCalculator``, so the
two agree to float64 round-off (``tests/md/test_torchsim.py``). torch-sim itself is imported
only here; ``import equiforce`` does not need it.
"""

from __future__ import annotations

import copy
import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from equiforce.data import keys
from equiforce.data.charge_spin import atoms_state
from equiforce.data.neighbors import neighbor_list
from equiforce.md.batched_state import system_count
from equiforce.md.calculator import load_potential
from equiforce.precision import PrecisionPolicy, current_policy, precision_scope

try:
    import torch_sim as ts
    from torch_sim.models.interface import ModelInterface
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "equiforce.md.torchsim needs torch-sim: pip install 'equiforce[sim]' "
        "(torch-sim-atomistic==0.3.0)"
    ) from error

if TYPE_CHECKING:
    from ase import Atoms

    from equiforce.models.potential import Potential

__all__ = [
    "SUPPORTED_TORCH_SIM",
    "CellAxesModel",
    "CommitteeModel",
    "EquiforceModel",
    "FixedAtomsModel",
    "SymmetrizedModel",
    "atoms_to_state",
    "check_elements",
    "fixed_atoms",
    "state_groups",
]

SUPPORTED_TORCH_SIM = ">=0.3.0,<0.4"  # tested with 0.3.0; 0.4+ needs Python 3.12 here


class EquiforceModel(ModelInterface):
    """An equiforce ``Potential`` behind TorchSim's ``ModelInterface``.

    Args:
        model: a ``Potential`` or the path of a model file / training checkpoint.
        device: torch device of the model and of the states it accepts; None: the model's
            (a file: CPU).
        dtype: dtype of TorchSim states and of the returned energy/forces/stress (float64
            by default). The model's geometry and derivatives run in float64 regardless.
        model_dtype: parameter dtype to run the model in (None keeps the model's).
        precision: precision mode name or ``PrecisionPolicy`` to run the model in (None
            keeps the model's; exclusive with ``model_dtype``).
        compute_forces: return ``forces`` (n_atoms, 3), eV/Å.
        compute_stress: return ``stress`` (n_systems, 3, 3), eV/Å^3, ASE sign (zero for
            systems without a 3D cell).
    """

    def __init__(
        self,
        model: Potential | str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float64,
        model_dtype: str | torch.dtype | None = None,
        precision: str | PrecisionPolicy | None = None,
        compute_forces: bool = True,
        compute_stress: bool = True,
    ) -> None:
        super().__init__()
        if device is None:
            device = "cpu" if isinstance(model, (str, os.PathLike)) else model.device
        self._device = torch.device(device)
        self._dtype = dtype
        self._compute_forces = bool(compute_forces)
        self._compute_stress = bool(compute_stress)
        self._memory_scales_with = "n_atoms_x_density"
        self.model = load_potential(model, self._device, model_dtype, precision)
        # the charge and spin of each system (``set_systems``): not in TorchSim's SimState
        self._system_state: dict[str, torch.Tensor] | None = None
        self.type_names = list(self.model.type_names)
        self.r_max = float(self.model.r_max)
        from ase.data import atomic_numbers as symbol_to_z

        table = torch.full((119,), -1, dtype=torch.long)
        for index, name in enumerate(self.type_names):
            table[symbol_to_z[name]] = index
        self.register_buffer("_type_of_z", table.to(self._device), persistent=False)

    @property
    def graph_inputs(self) -> tuple[str, ...]:
        """The per-structure state the model conditions on (``AtomicEnergyModel.graph_inputs``:
        total charge, spin multiplicity), which ``set_systems`` gives it."""
        return tuple(self.model.energy_model.graph_inputs)

    def set_systems(self, structures: Sequence[Atoms] | None) -> None:
        """Name the structures that the coming calls' systems are, in order (None: forget).

        TorchSim's SimState carries no charge or spin; a model that conditions on them
        (``graph_inputs``) takes each system's from its structure's ``info`` (``charge``,
        ``spin``: ``data.charge_spin.atoms_state``). The batched drivers call it whenever the
        systems of their state change.

        Raises:
            ValueError: a charge or spin that is not a number (the structure named).
        """
        if structures is None or not self.graph_inputs:
            self._system_state = None
            return
        states = [atoms_state(atoms, f"structure {k}") for k, atoms in enumerate(structures)]
        self._system_state = {
            name: torch.tensor([state[name] for state in states], dtype=torch.float64).to(
                self._device
            )
            for name in self.graph_inputs
        }

    @ModelInterface.compute_stress.setter
    def compute_stress(self, value: bool) -> None:
        """Switch stress on or off."""
        self._compute_stress = bool(value)

    @ModelInterface.compute_forces.setter
    def compute_forces(self, value: bool) -> None:
        """Switch forces on or off."""
        self._compute_forces = bool(value)

    def forward(self, state: ts.SimState | dict[str, Any], **_: Any) -> dict[str, torch.Tensor]:
        """Energies, forces and stress of every system of ``state`` in one model call.

        Args:
            state: a ``SimState`` or a dict with ``positions`` (n_atoms, 3) Å, ``cell``
                (n_systems, 3, 3) Å as column vectors, ``atomic_numbers`` (n_atoms,),
                ``system_idx`` (n_atoms,) and ``pbc`` (bool, (3,) or (n_systems, 3)). Not
                modified.

        Returns:
            ``energy`` (n_systems,) eV, and as configured ``forces`` (n_atoms, 3) eV/Å and
            ``stress`` (n_systems, 3, 3) eV/Å^3, all in ``self.dtype``, detached.

        Raises:
            ValueError: an element the model does not know (named with its system and atom).
        """
        if isinstance(state, dict):
            state = ts.SimState(**state, masses=torch.ones_like(state["positions"][:, 0]))
        batch = self.batch(state)
        with torch.enable_grad(), precision_scope(current_policy(self.model)):
            out = self.model(
                batch,
                compute_forces=self._compute_forces,
                compute_stress=self._compute_stress,
                create_graph=False,
            )
        results = {"energy": out[keys.ENERGY].detach().to(self._dtype)}
        if self._compute_forces:
            results["forces"] = out[keys.FORCES].detach().to(self._dtype)
        if self._compute_stress:
            results["stress"] = out[keys.STRESS].detach().to(self._dtype)
        return results

    def batch(self, state: ts.SimState) -> dict[str, torch.Tensor]:
        """The equiforce batch dict of a state (neighbour lists within ``r_max`` per system).

        Returns:
            Batch dict with ``pos``, ``atom_type``, ``edge_index``, ``edge_shift``, ``cell``
            (row vectors, zeros for non-periodic systems), ``batch`` and ``ptr``.
        """
        system_idx = state.system_idx.to(self._device)
        n_systems = system_count(state)
        counts = torch.bincount(system_idx, minlength=n_systems)
        ptr = torch.zeros(n_systems + 1, dtype=torch.long, device=self._device)
        ptr[1:] = torch.cumsum(counts, 0)
        positions = state.positions.detach().to(self._device, torch.float64)
        cells = state.cell.detach().to(torch.float64).transpose(1, 2)  # rows: lattice vectors
        pbc = _system_pbc(state.pbc, cells)
        pos_np, cell_np, ptr_np = positions.cpu().numpy(), cells.cpu().numpy(), ptr.tolist()
        edge_index, edge_shift = [], []
        for b in range(n_systems):
            cell_np[b] = cell_np[b] if pbc[b].any() else 0.0
            index, shift = neighbor_list(
                pos_np[ptr_np[b] : ptr_np[b + 1]], cell_np[b], pbc[b], self.r_max
            )
            edge_index.append(index + ptr_np[b])
            edge_shift.append(shift)
        edge_index_np = np.concatenate(edge_index, axis=1)
        return {
            keys.POSITIONS: positions,
            keys.ATOM_TYPE: self._atom_types(state.atomic_numbers.to(self._device), ptr),
            keys.EDGE_INDEX: torch.as_tensor(edge_index_np).to(self._device),
            keys.EDGE_SHIFT: torch.as_tensor(np.concatenate(edge_shift)).to(self._device),
            keys.CELL: torch.as_tensor(cell_np).to(self._device),
            keys.BATCH: system_idx.long(),
            keys.PTR: ptr,
            **self._graph_state(n_systems),
        }

    def _graph_state(self, n_systems: int) -> dict[str, torch.Tensor]:
        """The systems' charge and spin for a model that conditions on them (``set_systems``)."""
        if not self.graph_inputs:
            return {}
        given = self._system_state
        if given is None or len(next(iter(given.values()))) != n_systems:
            count = "none" if given is None else len(next(iter(given.values())))
            raise ValueError(
                f"the model conditions on each structure's {' and '.join(self.graph_inputs)}, "
                f"which TorchSim's SimState does not carry: {n_systems} systems, the "
                f"structures of {count} named (EquiforceModel.set_systems)"
            )
        return dict(given)

    def _atom_types(self, atomic_numbers: torch.Tensor, ptr: torch.Tensor) -> torch.Tensor:
        numbers = atomic_numbers.long()
        valid = (numbers > 0) & (numbers < len(self._type_of_z))
        types = torch.where(valid, self._type_of_z[numbers.clamp(0, 118)], -1)
        unknown = torch.nonzero(types < 0)
        if len(unknown):
            from ase.data import chemical_symbols

            atom = int(unknown[0, 0])
            system = int(torch.searchsorted(ptr, atom, right=True)) - 1
            z = int(numbers[atom])
            element = chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"
            raise ValueError(
                f"system {system}: element {element} (atom {atom - int(ptr[system])}) is unknown "
                f"to the model, which knows {self.type_names}"
            )
        return types


def _system_pbc(pbc: bool | torch.Tensor, cells: torch.Tensor) -> np.ndarray:
    """(n_systems, 3) bool: the state's pbc per system, off for systems with a zero cell."""
    n_systems = cells.shape[0]
    flags = torch.as_tensor(pbc, dtype=torch.bool).cpu()
    if flags.ndim == 0:
        flags = flags.expand(3)
    if flags.shape == (3,):
        flags = flags.expand(n_systems, 3)
    if flags.shape != (n_systems, 3):
        raise ValueError(f"pbc must be a bool, (3,) or (n_systems={n_systems}, 3), got {pbc}")
    has_cell = (cells != 0).any(dim=2).any(dim=1).cpu()
    return (flags & has_cell[:, None]).numpy()


def atoms_to_state(
    atoms: list, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64
) -> ts.SimState:
    """A TorchSim state of structures that are all periodic in 3D or none of them.

    TorchSim 0.3 keeps one ``pbc`` flag per state, so a mix of 3D-periodic and other
    structures is refused (naming the structures). A state of the others (molecules and
    slabs) has ``pbc`` False and each structure's non-periodic cell vectors zeroed (a
    molecule's whole cell): run a model on it through ``CellAxesModel`` (module docstring).

    Args:
        atoms: ``ase.Atoms`` list.
        device: torch device of the state.
        dtype: float dtype of positions, masses and cells.

    Raises:
        ValueError: a mix of 3D-periodic structures and others.
    """
    kinds = {bool(a.pbc.all()) for a in atoms}
    if len(kinds) != 1:
        pbcs = [a.pbc.tolist() for a in atoms]
        raise ValueError(
            "a TorchSim 0.3 state needs structures all periodic along x, y, z or none of "
            f"them (one pbc flag per state); got pbc {pbcs}"
        )
    periodic = kinds.pop()
    copies = []
    for frame in atoms:
        frame = frame.copy()
        if not periodic:
            frame.cell = frame.cell.array * frame.pbc[:, None]
            frame.pbc = False
        copies.append(frame)
    state = ts.io.atoms_to_state(copies, torch.device(device), dtype)
    state.pbc = periodic
    return state


class _Wrapped(ModelInterface):
    """A TorchSim model around another: its device, dtype and output flags."""

    def __init__(self, model: ModelInterface) -> None:
        super().__init__()
        self.model = model
        self._device, self._dtype = model.device, model.dtype
        self._compute_forces, self._compute_stress = model.compute_forces, model.compute_stress
        self._memory_scales_with = model.memory_scales_with


class CellAxesModel(_Wrapped):
    """A model on states of molecules and slabs: each system periodic along exactly its
    non-zero cell vectors (``atoms_to_state``'s states of structures not periodic in 3D).

    On a ``pbc`` True state it is the model itself. A committee's spreads stay on
    ``model`` (``force_uncertainty``, ``energy_uncertainty`` of the last call).

    Args:
        model: an ``EquiforceModel`` (or ``CommitteeModel``).
    """

    def forward(self, state: ts.SimState, **_: Any) -> dict[str, torch.Tensor]:
        """The model's energies, forces (and stress: zero for systems not 3D-periodic)."""
        if state.pbc:
            return self.model(state)
        periodic = state.cell.transpose(1, 2).abs().sum(dim=2) > 0  # (n_systems, 3): rows
        return self.model(
            {
                "positions": state.positions,
                "cell": state.cell,
                "atomic_numbers": state.atomic_numbers,
                "system_idx": state.system_idx,
                "pbc": periodic,
            }
        )


class FixedAtomsModel(_Wrapped):
    """A model under ASE's ``FixAtoms``: the fixed atoms feel no force and, with an anchor,
    are seen where they are held whatever the state says.

    An optimizer's or integrator's step then never moves them (velocity Verlet, FIRE), or
    moves them only inside a step whose forces they must not change (Langevin's noise, after
    which the caller puts them back at ``anchor``). The forces returned are ASE's
    constrained ones (zero rows for fixed atoms).

    Args:
        model: the model (``EquiforceModel``, ``CellAxesModel``, ...).
        fixed: (n_atoms,) bool, the state's fixed atoms.
        anchor: (n_atoms, 3) Å, where the fixed atoms are held (other rows unused); None:
            where the state has them.
    """

    def __init__(
        self, model: ModelInterface, fixed: torch.Tensor, anchor: torch.Tensor | None = None
    ) -> None:
        super().__init__(model)
        self.fixed, self.anchor = fixed, anchor

    def forward(self, state: ts.SimState, **_: Any) -> dict[str, torch.Tensor]:
        """The model's outputs, the fixed atoms' forces zero."""
        if self.anchor is not None:
            state = copy.copy(state)
            state.positions = torch.where(self.fixed[:, None], self.anchor, state.positions)
        out = dict(self.model(state))
        out["forces"] = out["forces"].masked_fill(self.fixed[:, None], 0.0)
        return out

    def keep(self, atoms: torch.Tensor) -> None:
        """Keep the rows of the atoms a sliced state kept ((n_atoms,) bool)."""
        self.fixed = self.fixed[atoms]
        self.anchor = None if self.anchor is None else self.anchor[atoms]


class SymmetrizedModel(_Wrapped):
    """A model whose forces and stress are averaged over each system's space group, as ASE's
    ``FixSymmetry`` averages them (``ase.spacegroup.symmetrize``'s ``symmetrize_rank1`` and
    ``symmetrize_rank2``): an optimizer that starts from a symmetric structure at rest and
    steps along these forces (and, relaxing the cell, this stress) keeps its symmetry.

    With ``C_k = L^T r_k L^-T`` (L the cell vectors as rows, r_k the operation's rotation in
    fractional coordinates), atom i's force ``f_i`` contributes ``C_k f_i / K`` to atom
    ``maps[k, i]``, and the stress is ``sum_k C_k^T sigma C_k / K`` (K operations). Each call
    takes the state's current cells (a symmetric deformation leaves the C_k unchanged).

    Args:
        model: the model (``CellAxesModel``, ...).
        operations: per system of the states it will see, in order: ``(rotations, maps)``,
            (K, 3, 3) integer rotations in fractional coordinates and (K, n_atoms) the atom
            each atom goes to (``FixSymmetry``'s ``rotations`` and ``symm_map``).
    """

    def __init__(
        self, model: ModelInterface, operations: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> None:
        super().__init__(model)
        self.operations = list(operations)
        self._index()

    def _index(self) -> None:
        """Flat tensors of every system's operations (``op_*``) and of every (operation,
        atom) pair (``pair_*``), atoms numbered across the state."""
        rotations, op_system, op_weight, pair_op, pair_src, pair_dst = [], [], [], [], [], []
        first_atom = first_op = 0
        for system, (rotation, maps) in enumerate(self.operations):
            n_ops, n_atoms = maps.shape
            rotations.append(rotation)
            op_system += [system] * n_ops
            op_weight += [1.0 / n_ops] * n_ops
            pair_op.append(np.repeat(np.arange(first_op, first_op + n_ops), n_atoms))
            pair_src.append(np.tile(np.arange(first_atom, first_atom + n_atoms), n_ops))
            pair_dst.append(first_atom + maps.reshape(-1))
            first_atom, first_op = first_atom + n_atoms, first_op + n_ops
        device, dtype = self.device, self.dtype

        def index(parts: list) -> torch.Tensor:
            return torch.as_tensor(np.concatenate(parts), dtype=torch.long, device=device)

        self.rotations = torch.as_tensor(np.concatenate(rotations), dtype=dtype, device=device)
        self.op_system = torch.as_tensor(op_system, dtype=torch.long, device=device)
        self.op_weight = torch.as_tensor(op_weight, dtype=dtype, device=device)
        self.pair_op, self.pair_src, self.pair_dst = map(index, (pair_op, pair_src, pair_dst))

    def forward(self, state: ts.SimState, **_: Any) -> dict[str, torch.Tensor]:
        """The model's outputs with the forces and (where given) the stress symmetrized."""
        out = dict(self.model(state))
        columns = state.cell[self.op_system]  # L^T of each operation's system
        cartesian = columns @ self.rotations @ torch.linalg.inv(columns)  # (n_ops, 3, 3)
        forces = out["forces"]
        moved = (cartesian[self.pair_op] @ forces[self.pair_src].unsqueeze(-1)).squeeze(-1)
        weights = self.op_weight[self.pair_op, None]
        out["forces"] = torch.zeros_like(forces).index_add_(0, self.pair_dst, moved * weights)
        if out.get("stress") is not None:
            stress = out["stress"]
            turned = cartesian.transpose(1, 2) @ stress[self.op_system] @ cartesian
            turned = turned * self.op_weight[:, None, None]
            out["stress"] = torch.zeros_like(stress).index_add_(0, self.op_system, turned)
        return out

    def keep(self, systems: Sequence[int]) -> None:
        """Keep the operations of the systems a sliced state kept (their indices, in order)."""
        self.operations = [self.operations[system] for system in systems]
        self._index()


def check_elements(atoms: Sequence, model: EquiforceModel) -> None:
    """Raise, naming the structure (its index in ``atoms``), its first element the model does
    not know (a state's own error can only name the system within the state)."""
    known = set(model.type_names)
    for index, frame in enumerate(atoms):
        unknown = [symbol for symbol in frame.get_chemical_symbols() if symbol not in known]
        if unknown:
            raise ValueError(
                f"structure {index} ({frame.get_chemical_formula()}): element {unknown[0]} is "
                f"unknown to the model, which knows {model.type_names}"
            )


def fixed_atoms(atoms: Sequence) -> np.ndarray | None:
    """(n_atoms,) bool: the atoms of ``atoms`` (concatenated) a ``FixAtoms`` holds; None
    when there are none. Other constraints are not looked at (the caller refuses them)."""
    fixed = [np.zeros(len(frame), dtype=bool) for frame in atoms]
    for frame, mask in zip(atoms, fixed, strict=True):
        for constraint in frame.constraints:
            mask[constraint.get_indices()] = True
    fixed = np.concatenate(fixed)
    return fixed if fixed.any() else None


def state_groups(atoms: Sequence, max_atoms: int | None) -> list[list[int]]:
    """How many structures share each TorchSim state: the indices of each group.

    3D-periodic structures and the others (molecules, slabs) go to different groups
    (TorchSim 0.3 keeps one ``pbc`` flag per state); each kind is split, in input order, into
    groups of at most ``max_atoms`` atoms (a larger structure gets a group of its own), which
    bounds the memory of a model call.

    Args:
        atoms: ``ase.Atoms`` list.
        max_atoms: the most atoms of a group, or None (one group per kind).

    Raises:
        ValueError: ``max_atoms`` < 1.
    """
    if max_atoms is not None and max_atoms < 1:
        raise ValueError(f"the most atoms per batch must be >= 1, got {max_atoms}")
    groups: dict[bool, list[list[int]]] = {True: [], False: []}
    sizes: dict[bool, int] = {True: 0, False: 0}
    for index, frame in enumerate(atoms):
        kind = bool(frame.pbc.all())
        full = max_atoms is not None and sizes[kind] + len(frame) > max_atoms
        if not groups[kind] or full:
            groups[kind].append([])
            sizes[kind] = 0
        groups[kind][-1].append(index)
        sizes[kind] += len(frame)
    return groups[True] + groups[False]


class CommitteeModel(EquiforceModel):
    """A committee of equiforce models behind TorchSim's ``ModelInterface``.

    Returns the members' mean energy, forces and stress (one batch, one neighbour list, each
    member called on it) and keeps, for the last call, the spreads ``CommitteeCalculator``
    gives (``equiforce.md.committee``, calibration scales included):
    ``energy_uncertainty`` (n_systems,) eV and ``force_uncertainty`` (n_atoms,) eV/Å, as
    float64 NumPy arrays.

    Args:
        members: ``Potential`` objects or model files, of one species list and cutoff.
        force_spread_scale, energy_spread_scale, force_spread_scale_by_species: the
            committee's calibration (``CommitteeCalculator``).
        **options: ``EquiforceModel``'s keyword arguments (device, dtype, precision, ...),
            applied to every member.

    Raises:
        ValueError: no members, or a member with other species or another cutoff (named).
    """

    def __init__(
        self,
        members: Sequence[Potential | str | os.PathLike],
        force_spread_scale: float = 1.0,
        energy_spread_scale: float = 1.0,
        force_spread_scale_by_species: dict[str, float] | None = None,
        **options: Any,
    ) -> None:
        from equiforce.md.committee import force_spread_factors

        if len(members) == 0:
            raise ValueError("a committee needs at least one model")
        super().__init__(members[0], **options)
        self.members = [self.model]
        for index, member in enumerate(members[1:], start=1):
            potential = load_potential(
                member, self._device, options.get("model_dtype"), options.get("precision")
            )
            if list(potential.type_names) != self.type_names or potential.r_max != self.r_max:
                raise ValueError(
                    f"committee member {index} knows {list(potential.type_names)} with r_max "
                    f"{potential.r_max} Å; member 0 {self.type_names} with {self.r_max} Å"
                )
            self.members.append(potential)
        self.force_spread_scale = float(force_spread_scale)
        self.energy_spread_scale = float(energy_spread_scale)
        self.force_spread_scale_by_species = dict(force_spread_scale_by_species or {})
        self._spread_factors = force_spread_factors(  # per atom type
            self.type_names, self.force_spread_scale, self.force_spread_scale_by_species
        )
        self.energy_uncertainty: np.ndarray | None = None
        self.force_uncertainty: np.ndarray | None = None

    @property
    def graph_inputs(self) -> tuple[str, ...]:
        """The per-structure state any member conditions on."""
        wanted = {name for member in self.members for name in member.energy_model.graph_inputs}
        return tuple(name for name in keys.GRAPH_STATE_KEYS if name in wanted)

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike], **options: Any) -> CommitteeModel:
        """Model files and/or committee folders, with a folder's calibration scales
        (``equiforce.md.committee.committee_members``, ``spread_scales``)."""
        from equiforce.md.committee import committee_members, spread_scales

        return cls(committee_members(paths), **spread_scales(paths), **options)

    def forward(self, state: ts.SimState | dict[str, Any], **_: Any) -> dict[str, torch.Tensor]:
        """The members' mean (as ``EquiforceModel.forward``); the spreads are kept."""
        from equiforce.md.committee import force_spread

        if isinstance(state, dict):
            state = ts.SimState(**state, masses=torch.ones_like(state["positions"][:, 0]))
        batch = self.batch(state)
        outs = []
        for member in self.members:
            with torch.enable_grad(), precision_scope(current_policy(member)):
                outs.append(
                    member(
                        batch,
                        compute_forces=True,
                        compute_stress=self._compute_stress,
                        create_graph=False,
                    )
                )
        energies = np.stack([o[keys.ENERGY].detach().cpu().to(torch.float64).numpy() for o in outs])
        forces = np.stack([o[keys.FORCES].detach().cpu().to(torch.float64).numpy() for o in outs])
        mean = forces.mean(axis=0)
        factors = self._spread_factors[batch[keys.ATOM_TYPE].cpu().numpy()]
        self.energy_uncertainty = self.energy_spread_scale * energies.std(axis=0)
        self.force_uncertainty = factors * force_spread(forces, mean)

        def average(name: str) -> torch.Tensor:
            stacked = torch.stack([o[name].detach() for o in outs])
            return stacked.mean(dim=0).to(self._dtype)

        results = {"energy": average(keys.ENERGY)}
        if self._compute_forces:
            results["forces"] = average(keys.FORCES)
        if self._compute_stress:
            results["stress"] = average(keys.STRESS)
        return results
