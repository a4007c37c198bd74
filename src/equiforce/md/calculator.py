"""ASE calculator over any equiforce ``Potential`` (a model object or a saved model file) or an
exported package (``.pt2``, ``equiforce.export``).

The model stack (``equiforce.models``) is imported only for model objects and files, so a
calculator over a package needs torch, numpy, vesin and ase only.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import (
    Calculator,
    PropertyNotImplementedError,
    all_changes,
    compare_atoms,
)
from ase.stress import full_3x3_to_voigt_6_stress

from equiforce.data import keys
from equiforce.data.charge_spin import STATE_INFO_KEYS
from equiforce.export.package import ExportedPotential, atoms_batch, load_exported
from equiforce.precision import PrecisionPolicy, apply_policy, current_policy, precision_scope

if TYPE_CHECKING:
    from equiforce.models.potential import Potential

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _ignored_state(conditions: set[str]) -> tuple[str, ...]:
    """The per-structure state (``keys.GRAPH_STATE_KEYS``) a model with these inputs ignores."""
    return tuple(name for name in keys.GRAPH_STATE_KEYS if name not in conditions)


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}") from None


def load_potential(
    model: Potential | str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    precision: str | PrecisionPolicy | None = None,
) -> Potential:
    """A ``Potential`` ready for inference: loaded, on ``device``, in eval mode, checked.

    Shared by the ASE calculator and the TorchSim model (``equiforce.md.torchsim``).

    Args:
        model: a ``Potential`` (copied first when it needs another device, dtype or
            precision; otherwise used as is) or the path of a model file or checkpoint.
        device: torch device to run on.
        dtype: parameter dtype (``"float32"``/``"float64"`` or a ``torch.dtype``); None keeps
            the model's; another dtype runs the model in that dtype's plain float mode.
        precision: a precision mode name or ``PrecisionPolicy`` (sets the dtype, so ``dtype``
            must then be None); None keeps the model's (a file: the policy saved with it).

    Returns:
        The potential, checked against the model contract as it will run.
    """
    from equiforce.models.check import check_model
    from equiforce.models.io import load_model

    device = torch.device(device)
    target_dtype = _resolve_dtype(dtype)
    if isinstance(precision, str):
        precision = PrecisionPolicy.from_name(precision)
    if precision is not None and target_dtype is not None:
        raise ValueError("give either dtype or precision (which sets the dtype), not both")
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, map_location=device)
    else:
        moved = next(model.parameters()).device != device
        cast = target_dtype is not None and target_dtype != model.dtype
        if moved or cast or precision is not None:
            model = copy.deepcopy(model)
    if target_dtype not in (None, model.dtype):  # a plain dtype: that dtype's float mode
        precision = PrecisionPolicy.from_name(str(target_dtype).removeprefix("torch."))
    model = model.to(device=device).eval()
    if precision is not None:
        apply_policy(model, precision)
    check_model(model)  # as it will run: after the dtype and precision changes
    return model


class QuickChangeCheck:
    """ASE's ``Calculator.check_state`` without its cost for unchanged properties: mixed into
    a ``Calculator`` (before it in the bases), what changed since the last calculation is
    ASE's ``compare_atoms`` answer, asked only about the properties that are not bitwise
    equal.

    ASE compares every property within a tolerance (``np.allclose``, ~15 µs each; 73 µs of
    each MD step, where only the positions change); a bitwise-equal property is equal within
    any tolerance, so leaving it out changes no answer (28 µs per step).
    """

    def check_state(self, atoms: Atoms, tol: float = 1e-15) -> list[str]:
        """The properties that changed since the last calculation (``ase.calculators.
        calculator.all_changes`` names), within ``tol`` as ASE compares them."""
        if self.atoms is None:
            return super().check_state(atoms, tol)
        previous = self.atoms
        same = {
            name
            for name in ("cell", "pbc")
            if np.array_equal(getattr(previous, name), getattr(atoms, name))
        }
        shared = previous.arrays.keys() & atoms.arrays.keys() & set(all_changes)  # not momenta
        same |= {
            name for name in shared if np.array_equal(previous.arrays[name], atoms.arrays[name])
        }
        return compare_atoms(
            previous, atoms, tol=tol, excluded_properties=set(self.ignored_changes) | same
        )


def atomic_virials(batch: dict[str, torch.Tensor], edge_gradient: torch.Tensor) -> torch.Tensor:
    """Per-atom virials of one structure, (n_atoms, 3, 3) float64 eV: each edge's virial
    ``-r_ij (x) dE/dr_ij``, symmetrised, half to each of its two atoms (LAMMPS's ``compute
    stress/atom`` split, symmetrised so that each atom's tensor rotates with the structure);
    their sum is the structure's virial ``-dE/d(strain)``.

    Args:
        batch: the structure's batch (one graph; positions, cell, edge_index, edge_shift).
        edge_gradient: (n_edges, 3) ``dE/dr_ij``, eV/Å (the model's ``edge_gradient``).
    """
    centre, neighbour = batch[keys.EDGE_INDEX]
    positions = batch[keys.POSITIONS].to(torch.float64)
    cell = batch[keys.CELL].to(torch.float64).reshape(3, 3)
    vectors = positions[neighbour] - positions[centre] + batch[keys.EDGE_SHIFT].double() @ cell
    virial = -0.5 * vectors[:, :, None] * edge_gradient.to(torch.float64)[:, None, :]
    virial = 0.5 * (virial + virial.transpose(1, 2))
    atoms = torch.zeros(positions.shape[0], 3, 3, dtype=torch.float64, device=positions.device)
    return atoms.index_add_(0, centre, virial).index_add_(0, neighbour, virial)


class EquiforceCalculator(QuickChangeCheck, Calculator):
    """Energy, forces and stress of an equiforce model for ``ase.Atoms``, and per atom the
    energies (``get_potential_energies``) and stresses (``get_stresses``).

    Stress is available for structures periodic along all three cell vectors only; asking for
    it otherwise raises ASE's ``PropertyNotImplementedError``. Elements the model does not know
    raise a ``ValueError`` naming the element and the model's types. Per-atom energies are the
    model's own decomposition (what LAMMPS's ``compute pe/atom`` gives); per-atom stresses
    (Voigt, eV/Å^3, summing to the stress; 3D-periodic cells) split each edge's virial half to
    each atom (``atomic_virials``). A package has them when exported with ``--per-atom``.

    A script running MD of thousands of atoms with it should call
    ``equiforce.allocator.retain_freed_memory()`` once, as the ``equiforce`` command line does:
    each step then reuses the pages of its large per-step tensors instead of faulting them in
    again (a 999-atom MACE step 1.15x faster on CPU). The calculator does not change the
    process's ``malloc`` settings itself.

    Args:
        model: a ``Potential``, the path of a file written by ``equiforce.models.save_model``
            (or a training checkpoint), or the path of a package written by ``equiforce
            export`` (``.pt2``: runs in the precision and on the device type it was exported
            for, so ``dtype``, ``precision`` and ``compile`` must stay unset). A ``Potential``
            that needs a different device or dtype is copied first; otherwise it is used as is
            and put in eval mode.
        device: torch device to run on, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: model parameter dtype, ``"float32"``/``"float64"`` or a ``torch.dtype``; None
            keeps the model's; another dtype runs the model in that dtype's plain float mode.
            Positions, energies, forces and stress stay float64 either way.
        precision: a precision mode name (``equiforce.precision.MODES``, e.g.
            ``"bf16-mixed"``) or a ``PrecisionPolicy`` to run the model in (it sets the
            parameter dtype, so ``dtype`` must then be None); None keeps the model as it is
            (a model file: the policy saved with it). Each call runs in the policy's matmul
            precision (``equiforce.precision.precision_scope``).
        compile: run the model through ``equiforce.models.compile_potential``: True for
            Inductor, or a ``torch.compile`` backend name. The first call of each kind
            (energy only, forces, forces and stress) traces and compiles (minutes on a CPU);
            later calls on any atom count reuse it. Pays off for long MD of small systems with
            small models, where per-operation overhead dominates (16-32-channel MACEs on a
            15-atom molecule: 1.9-2.4x faster on one CPU thread; a 128-channel one: no gain;
            docs/distillation.md); large MACE systems can run slower than eager.
        **kwargs: passed to ``ase.calculators.calculator.Calculator``.

    Example:
        >>> atoms.calc = EquiforceCalculator("model.pt", device="cpu")
        >>> atoms.get_potential_energy()
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies", "stresses"]

    def __init__(
        self,
        model: Potential | str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
        precision: str | PrecisionPolicy | None = None,
        compile: bool | str = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.device = torch.device(device)
        # Set once stress is asked for: from then on every force call on a 3D-periodic cell
        # also returns the stress, so NPT and cell relaxation (forces, then stress, of the same
        # positions) cost one model call per step instead of two.
        self._stress_wanted = False
        if isinstance(model, (str, os.PathLike)) and Path(model).suffix == ".pt2":
            if dtype is not None or precision is not None or compile:
                raise ValueError(
                    f"{model}: a package runs as exported; dtype, precision and compile apply "
                    "to model files"
                )
            self.model = self._call = load_exported(model, self.device)
            self._ignored_state = _ignored_state(set(self.model.inputs))
            return
        self.model = self._call = self._eager(model, _resolve_dtype(dtype), precision)
        self._ignored_state = _ignored_state(set(self.model.energy_model.graph_inputs))
        if compile:
            from equiforce.models.compile import compile_potential  # torch.compile machinery

            backend = "inductor" if compile is True else str(compile)
            self._call = compile_potential(self.model, backend=backend).eval()

    def _eager(self, model, target_dtype: torch.dtype | None, precision):
        """The model object or file as a ``Potential`` on ``self.device``, checked."""
        return load_potential(model, self.device, target_dtype, precision)

    @property
    def dtype(self) -> torch.dtype:
        """Model parameter dtype."""
        return self.model.dtype

    def batch_key(self) -> tuple:
        """What a structure's batch depends on besides the structure (species, r_max, device):
        calculators with equal keys can evaluate one batch (``CommitteeCalculator``)."""
        return tuple(self.model.type_names), float(self.model.r_max), self.device

    def batch(self, atoms: Atoms) -> dict[str, torch.Tensor]:
        """The model inputs of ``atoms`` (``export.package.atoms_batch``: neighbour list
        within ``r_max``), on ``self.device``; warns once where ``atoms.info`` gives a charge
        or spin the model does not condition on (it computes a neutral singlet)."""
        batch = atoms_batch(atoms, self.model.type_names, self.model.r_max, self.device)
        for name in self._ignored_state:  # from info, checked by atoms_batch: no device sync
            value = atoms.info.get(STATE_INFO_KEYS[name])
            if value is not None and float(value) != keys.GRAPH_STATE_DEFAULTS[name]:
                warnings.warn(
                    f"the structure's {name} is {float(value):g}, but the model does not "
                    f"condition on it: its results are those of "
                    f"{name} = {keys.GRAPH_STATE_DEFAULTS[name]:g}",
                    stacklevel=2,
                )
                self._ignored_state = ()  # once per calculator
                break
        return batch

    def _call_scope(self) -> contextlib.AbstractContextManager:
        """The matmul precision of a model call: the model's policy (a package: none, it was
        compiled in its precision at export)."""
        if isinstance(self.model, ExportedPotential):
            return contextlib.nullcontext()
        return precision_scope(current_policy(self.model))

    def energies_and_forces(self, frames: Sequence[Atoms]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Energies and forces of several structures in one model call: their graphs
        collated into one batch (an exported package, whose program takes one graph: one
        call each). The numbers equal ``calculate``'s of each structure to round-off.

        Args:
            frames: the structures (any sizes; species among the model's).

        Returns:
            energies (n_frames,) float64 eV and the forces, (n_atoms_k, 3) float64 eV/Å each.
        """
        from equiforce.data.batch import collate

        if isinstance(self.model, ExportedPotential):
            graphs = [[self.batch(atoms)] for atoms in frames]
        else:
            graphs = [[self.batch(atoms) for atoms in frames]]
        energies, forces = [], []
        for group in graphs:
            batch = collate(group) if len(group) > 1 else group[0]
            with torch.enable_grad(), self._call_scope():
                out = self._call(batch, create_graph=False, compute_forces=True)
            energies.append(out[keys.ENERGY].detach().cpu().numpy().astype(np.float64))
            sizes = [len(graph[keys.POSITIONS]) for graph in group]
            flat = out[keys.FORCES].detach().cpu().numpy().astype(np.float64)
            forces += np.split(flat, np.cumsum(sizes)[:-1])
        return np.concatenate(energies), forces

    def get_hessian(
        self, atoms: Atoms | None = None, rows_of: Sequence[int] | None = None
    ) -> np.ndarray:
        """The exact Hessian of the energy with respect to the positions, by double backward
        (``equiforce.models.hessian``; no finite differences): (3 n_atoms, 3 n_atoms)
        float64, eV/Å^2, row and column ``3 i + a`` the component ``a`` of atom ``i``
        (mace-torch's ``get_hessian`` layout, flattened). Vibrational frequencies of a
        molecule, or a supercell's phonons (``equiforce.md.phonons``), follow from it and the
        masses.

        Args:
            atoms: the structure (None: the last one calculated).
            rows_of: only the rows of these atoms, (3 len(rows_of), 3 n_atoms) in their
                order: one backward pass per row (Hessian-vector products with unit
                vectors), so a few atoms' rows of a large structure cost a few passes.

        Raises:
            ValueError: no structure given or set, or an exported package (not
                differentiable; use the model file).
        """
        from equiforce.models.hessian import hessian, hessian_vector_product

        atoms = self.atoms if atoms is None else atoms
        if atoms is None:
            raise ValueError("get_hessian needs a structure")
        if isinstance(self.model, ExportedPotential):
            raise ValueError("an exported package is not differentiable: use the model file")
        batch = self.batch(atoms)
        with torch.enable_grad(), self._call_scope():
            if rows_of is None:
                matrix = hessian(self.model, batch)
            else:
                rows = 3 * torch.as_tensor(list(rows_of), dtype=torch.long)[:, None]
                flat = (rows + torch.arange(3)).reshape(-1)
                basis = torch.zeros(len(flat), 3 * len(atoms), dtype=torch.float64)
                basis[torch.arange(len(flat)), flat] = 1.0  # one unit vector per row
                probes = basis.reshape(len(flat), len(atoms), 3).to(self.device)
                matrix = hessian_vector_product(self.model, batch, probes)
                matrix = matrix.reshape(len(flat), 3 * len(atoms))
        return matrix.detach().cpu().numpy().astype(np.float64)

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | tuple[str, ...] = ("energy",),
        system_changes: list[str] = all_changes,
    ) -> None:
        """Fill ``self.results`` with energy (eV), forces (n_atoms, 3) eV/Å, stress (Voigt, eV/Å^3).

        Args:
            atoms: the structure (ASE keeps a copy in ``self.atoms``).
            properties: requested names; forces are computed unless only energies are
                asked for, stress when asked for and, once it has been, with every later force
                call on a 3D-periodic cell (one call per step for NPT and cell filters).
            system_changes: what changed since the last call (ASE bookkeeping).

        Raises:
            PropertyNotImplementedError: stress requested for a structure that is not periodic
                along all three cell vectors.
        """
        super().calculate(atoms, properties, system_changes)
        self.evaluate(self.batch(self.atoms), properties)

    def evaluate(
        self, batch: dict[str, torch.Tensor], properties: list[str] | tuple[str, ...]
    ) -> None:
        """Fill ``self.results`` for ``self.atoms`` from its ``batch`` (``calculate`` after
        the batch; ``CommitteeCalculator`` hands its members one batch); ``properties`` and
        the errors as in ``calculate``."""
        want_stress, want_stresses = "stress" in properties, "stresses" in properties
        for name in ("stress", "stresses"):
            if name in properties and not self.atoms.pbc.all():
                raise PropertyNotImplementedError(
                    f"{name} needs a cell periodic in 3D; this structure has pbc={self.atoms.pbc}"
                )
        # An energy-only request (finite differences, screening) skips the backward pass.
        want_forces = not set(properties) <= {"energy", "free_energy", "energies"}
        self._stress_wanted = self._stress_wanted or want_stress
        want_stress = want_stress or (want_forces and self._stress_wanted and self.atoms.pbc.all())
        options = {"compute_forces": want_forces, "compute_stress": want_stress}
        call = self._call
        if isinstance(self.model, ExportedPotential):
            for name, key in (("energies", keys.NODE_ENERGY), ("stresses", keys.EDGE_GRADIENT)):
                if name in properties and key not in self.model.outputs:
                    raise PropertyNotImplementedError(
                        f"{name}: this package was exported without per-atom outputs "
                        "(equiforce export --per-atom)"
                    )
        elif want_stresses:  # the edge gradients: the eager model (a compiled one has none)
            call, options["compute_edge_gradients"] = self.model, True
        with torch.enable_grad(), self._call_scope():
            out = call(batch, create_graph=False, **options)
        energy = float(out[keys.ENERGY].detach().cpu()[0])
        self.results = {"energy": energy, "free_energy": energy}
        if "energies" in properties:
            energies = out[keys.NODE_ENERGY].detach().cpu().numpy().astype(np.float64)
            self.results["energies"] = energies
        if want_stresses:
            virials = atomic_virials(batch, out[keys.EDGE_GRADIENT].detach())
            stresses = -virials.cpu().numpy() / abs(self.atoms.get_volume())
            self.results["stresses"] = full_3x3_to_voigt_6_stress(stresses)
        if want_forces:
            self.results["forces"] = out[keys.FORCES].detach().cpu().numpy().astype(np.float64)
        if want_stress:
            stress = out[keys.STRESS].detach().cpu().numpy()[0].astype(np.float64)
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
