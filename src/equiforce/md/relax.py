"""Structure relaxation: positions and (for 3D-periodic cells) the cell, one by one or batched.

``relax_structures`` runs ASE's FIRE, BFGS or LBFGS on each structure with any ASE calculator; with
``cell=True`` a 3D-periodic structure relaxes inside ASE's ``FrechetCellFilter`` under a
hydrostatic ``pressure_GPa`` (positions only for molecules and slabs). ``relax_batched``
relaxes all structures at once through TorchSim's batched FIRE (``frechet_cell_fire`` for
cells) with ``equiforce.md.torchsim.EquiforceModel``: one model call per step for the whole
batch. Both return one ``RelaxResult`` per structure, in input order, and hand each to
``on_result`` as soon as it is ready in that order: ``append_relaxed`` appends it to an extxyz
file (energy, forces, stress, and per frame ``relax_converged``, ``relax_steps``,
``relax_fmax``, ``relax_cell``), and ``read_relaxed`` takes such a file back as the finished
part of a run over the same input (``equiforce relax --resume``).

Convergence is ASE's: the largest force norm is below ``fmax`` (eV/Å); with a cell filter the
filter's cell "forces" (virial / number of atoms) count too.

Constraints: ``relax_structures`` applies any ASE constraint (ASE's optimizers do), and with
``symmetry_tolerance`` keeps the space group spglib finds in the starting structure within
that tolerance (Å): ASE's ``FixSymmetry`` symmetrises the structure to it, then its forces,
stress and steps, so the relaxed structure has it exactly (recorded as ``relax_spacegroup``,
e.g. ``"Fm-3m (225)"``).
``relax_batched`` applies ``FixAtoms`` (the fixed atoms' forces are zero, so FIRE never moves
them, and they are left out of the convergence test and the result's forces, as ASE's
constrained forces; in a cell relaxation they keep their fractional coordinates, following
the cell as under ASE's cell filter) and refuses, naming the structure, any other
constraint; with ``symmetry_tolerance`` it symmetrises each structure as
``FixSymmetry`` does and averages the forces and stress over its space group
(``equiforce.md.torchsim.SymmetrizedModel``), so FIRE's steps keep it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Literal, Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator

if TYPE_CHECKING:
    from equiforce.md.torchsim import EquiforceModel

Optimizer = Literal["fire", "bfgs", "lbfgs"]
OPTIMIZERS = ("fire", "bfgs", "lbfgs")  # ASE's FIRE, BFGS, LBFGS
CellMode = Literal["full", "constant-volume", "hydrostatic"]
# how a relaxing cell may change: every component, its shape at constant volume, or its volume
# at constant shape; as keyword arguments of ASE's FrechetCellFilter and of TorchSim's
# frechet_cell_fire alike
CELL_MODES: dict[str, dict[str, bool]] = {
    "full": {},
    "constant-volume": {"constant_volume": True},
    "hydrostatic": {"hydrostatic_strain": True},
}


@dataclass(frozen=True)
class RelaxResult:
    """One relaxed structure.

    Attributes:
        atoms: the final structure, carrying a ``SinglePointCalculator`` with its energy (eV),
            forces (eV/Å) and, for 3D-periodic cells, stress (eV/Å^3).
        converged: whether the largest force fell below ``fmax`` within the step budget.
        n_steps: optimizer steps taken (0: already converged).
        fmax: the largest force norm at the end, eV/Å (cell forces included with ``cell``).
        cell_relaxed: whether the cell was a degree of freedom.
        spacegroup: the space group the relaxation kept (``FixSymmetry``), as
            ``"symbol (number)"``, or None (symmetry not fixed).
    """

    atoms: Atoms
    converged: bool
    n_steps: int
    fmax: float
    cell_relaxed: bool
    spacegroup: str | None = None

    @property
    def energy(self) -> float:
        """Final potential energy, eV."""
        return float(self.atoms.get_potential_energy())


def _check_options(fmax: float, steps: int, optimizer: str) -> None:
    """Raise unless ``fmax`` > 0, ``steps`` >= 0 and the optimizer is one of ``OPTIMIZERS``."""
    if not fmax > 0:
        raise ValueError(f"fmax must be positive, got {fmax} eV/Å")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")


def frozen_copy(
    atoms: Atoms, energy: float, forces: np.ndarray, stress: np.ndarray | None
) -> Atoms:
    """A copy of ``atoms`` with its final numbers attached as a SinglePointCalculator."""
    final = atoms.copy()
    results = {"energy": float(energy), "forces": np.asarray(forces, dtype=np.float64)}
    if stress is not None and atoms.pbc.all():
        results["stress"] = np.asarray(stress, dtype=np.float64)
    final.calc = SinglePointCalculator(final, **results)
    return final


def relax_structure(
    atoms: Atoms,
    calculator: Calculator,
    fmax: float = 0.05,
    steps: int = 500,
    optimizer: Optimizer = "fire",
    cell: bool = False,
    pressure_GPa: float = 0.0,
    symmetry_tolerance: float | None = None,
    cell_mode: CellMode = "full",
) -> RelaxResult:
    """Relax one structure with ASE's FIRE, BFGS or LBFGS.

    Args:
        atoms: the starting structure; not modified.
        calculator: any ASE calculator (stress needed with ``cell``).
        fmax: force convergence threshold, eV/Å.
        steps: most optimizer steps.
        optimizer: ``"fire"``, ``"bfgs"`` or ``"lbfgs"`` (limited-memory BFGS: for large
            structures, where BFGS's dense 3N x 3N Hessian costs).
        cell: relax the cell too (``FrechetCellFilter``), for 3D-periodic structures only.
        pressure_GPa: external hydrostatic pressure for the cell relaxation, GPa.
        symmetry_tolerance: keep the space group spglib finds within this tolerance, Å
            (ASE's ``FixSymmetry``, needs spglib), or None.
        cell_mode: with ``cell``, how the cell may change (``CELL_MODES``): ``"full"``,
            ``"constant-volume"`` (its shape relaxes; the pressure then does nothing) or
            ``"hydrostatic"`` (its volume, at constant shape).

    Returns:
        The ``RelaxResult``.

    Raises:
        ValueError: a bad option, ``symmetry_tolerance`` <= 0, or with it no 3D cell.
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS, FIRE, LBFGS

    _check_options(fmax, steps, optimizer)
    given_constraints = atoms.constraints
    atoms = atoms.copy()
    atoms.calc = calculator
    spacegroup = None
    if symmetry_tolerance is not None:
        spacegroup = _fix_symmetry(atoms, symmetry_tolerance)
    with_cell = bool(cell and atoms.pbc.all())
    target = atoms
    if with_cell:
        target = FrechetCellFilter(
            atoms, scalar_pressure=pressure_GPa * units.GPa, **_cell_mode(cell_mode)
        )
    optimizers = {"fire": FIRE, "bfgs": BFGS, "lbfgs": LBFGS}
    dynamics = optimizers[optimizer](target, logfile=None)
    converged = bool(dynamics.run(fmax=fmax, steps=steps))
    final_fmax = float(np.linalg.norm(target.get_forces(), axis=1).max(initial=0.0))
    stress = atoms.get_stress() if atoms.pbc.all() else None
    final = frozen_copy(atoms, atoms.get_potential_energy(), atoms.get_forces(), stress)
    final.set_constraint([constraint.copy() for constraint in given_constraints])
    return RelaxResult(
        atoms=final,
        converged=converged,
        n_steps=int(dynamics.nsteps),
        fmax=final_fmax,
        cell_relaxed=with_cell,
        spacegroup=spacegroup,
    )


def _cell_mode(mode: str) -> dict[str, bool]:
    """The cell filter's keyword arguments of ``mode``.

    Raises:
        ValueError: not one of ``CELL_MODES``.
    """
    if mode not in CELL_MODES:
        raise ValueError(f"cell_mode must be one of {list(CELL_MODES)}, got {mode!r}")
    return CELL_MODES[mode]


def _fix_symmetry(atoms: Atoms, tolerance: float) -> str:
    """Add ASE's ``FixSymmetry`` at ``tolerance`` (Å) to the constraints of ``atoms``, which
    it first symmetrises to the space group spglib finds within that tolerance (cell and
    positions move by less than it); the space group, ``"symbol (number)"``.

    Raises:
        ValueError: ``tolerance`` <= 0, or no 3D cell (a molecule without a box).
        ImportError: spglib is missing (named, with its install command).
    """
    if not tolerance > 0:
        raise ValueError(f"symmetry_tolerance must be positive, got {tolerance} Å")
    if atoms.cell.rank < 3:
        raise ValueError(
            f"{atoms.get_chemical_formula()} has no 3D cell: keeping its symmetry needs one "
            "(spglib finds space groups); put the molecule in a box"
        )
    try:
        import spglib  # noqa: F401  (ASE's symmetry tools import it when they run)
    except ImportError as err:
        message = "keeping the symmetry needs spglib: pip install 'equiforce[sim]'"
        raise ImportError(message) from err
    from ase.constraints import FixSymmetry
    from ase.spacegroup.symmetrize import check_symmetry

    fix = FixSymmetry(atoms, symprec=tolerance)  # symmetrises atoms first
    atoms.set_constraint([*atoms.constraints, fix])
    dataset = check_symmetry(atoms, tolerance)
    return f"{dataset.international} ({dataset.number})"


def relaxed_crystal(
    crystal: Atoms, calculator: Calculator, fmax: float = 1e-4, volume_ratio: float | None = None
) -> RelaxResult:
    """A crystal relaxed for its properties (phonons, elastic constants, equations of state):
    positions and cell at 0 GPa, or with ``volume_ratio`` at that times its volume (its
    cell scaled, then its shape relaxed at that volume), its space group kept
    (``FixSymmetry`` at 1e-3 Å), BFGS to ``fmax`` (eV/Å) in at most 2000 steps.

    Raises:
        RuntimeError: the relaxation did not converge (its largest force named).
    """
    start, mode, where = crystal, "full", ""
    if volume_ratio is not None:
        start = crystal.copy()
        start.set_cell(crystal.cell.array * volume_ratio ** (1 / 3), scale_atoms=True)
        mode, where = "constant-volume", f" at {volume_ratio:.3f} times its volume"
    result = relax_structure(
        start,
        calculator,
        fmax=fmax,
        steps=2000,
        optimizer="bfgs",
        cell=True,
        symmetry_tolerance=1e-3,
        cell_mode=mode,
    )
    if not result.converged:
        raise RuntimeError(
            f"{crystal.get_chemical_formula()}{where}: the relaxation stopped at fmax "
            f"{result.fmax:.2e} eV/Å after {result.n_steps} steps (> {fmax}); relax it with "
            "equiforce relax and start from the result"
        )
    return result


def relax_structures(
    frames: Sequence[Atoms],
    calculator: Calculator,
    progress: bool = False,
    on_result: Callable[[RelaxResult], None] | None = None,
    **options,
) -> list[RelaxResult]:
    """``relax_structure`` on each frame in turn (options as there); ``on_result`` is called
    with each result as soon as it is ready (e.g. ``append_relaxed``)."""
    from tqdm.auto import tqdm

    results = []
    for atoms in tqdm(frames, disable=not progress, desc="relax", unit="structure"):
        results.append(relax_structure(atoms, calculator, **options))
        if on_result is not None:
            on_result(results[-1])
    return results


def relax_batched(
    frames: Sequence[Atoms],
    model: EquiforceModel,
    fmax: float = 0.05,
    steps: int = 500,
    cell: bool = False,
    pressure_GPa: float = 0.0,
    max_batch_atoms: int | None = 5000,
    on_result: Callable[[RelaxResult], None] | None = None,
    symmetry_tolerance: float | None = None,
    cell_mode: CellMode = "full",
) -> list[RelaxResult]:
    """Relax all frames at once with TorchSim's batched FIRE (ASE flavour).

    3D-periodic structures and the others (molecules, slabs) run as separate batches
    (TorchSim 0.3 keeps one pbc flag per state), one after the other, each of at most
    ``max_batch_atoms`` atoms (``equiforce.md.torchsim.state_groups``). A structure leaves
    its batch at the step it converges, which is its result; the rest step on until all have
    converged or ``steps`` is reached.

    Args:
        frames: structures (``FixAtoms`` the only constraint applied).
        model: the TorchSim model (``EquiforceModel``, stress on for ``cell``).
        fmax: force convergence threshold, eV/Å.
        steps: most FIRE steps.
        cell: relax the cells of the periodic structures too (``frechet_cell_fire``).
        pressure_GPa: external hydrostatic pressure for the cell relaxation, GPa.
        max_batch_atoms: the most atoms of one batch (a larger structure runs alone); None:
            one batch per kind (periodic / not).
        on_result: called with each result in input order, as soon as a batch has finished
            every structure before it (e.g. ``append_relaxed``: a run stopped later keeps
            them).
        symmetry_tolerance: keep the space group spglib finds in each structure within this
            tolerance, Å (as ``relax_structure``'s; module docstring), or None.
        cell_mode: with ``cell``, how the cells may change (``relax_structure``'s).

    Returns:
        One ``RelaxResult`` per frame, in input order.

    Raises:
        ValueError: a structure with a constraint other than ``FixAtoms``, ``FixAtoms``
            with ``symmetry_tolerance``, or (with it) no 3D cell (named).
    """
    from equiforce.md.torchsim import check_elements, state_groups

    _check_options(fmax, steps, "fire")
    freedom = _cell_mode(cell_mode)
    _check_constraints(frames, symmetry_tolerance is not None)
    check_elements(frames, model)
    operations: list | None = None
    spacegroups: list[str | None] = [None] * len(frames)
    if symmetry_tolerance is not None:
        frames, spacegroups, operations = _symmetrized(frames, symmetry_tolerance)
    groups = state_groups(frames, max_batch_atoms)
    results: list[RelaxResult | None] = [None] * len(frames)
    handed = 0  # results given to on_result: the input's first ones
    for group in groups:
        periodic = bool(frames[group[0]].pbc.all())
        kept = None if operations is None else [operations[i] for i in group]
        relaxed = _relax_group(
            [frames[i] for i in group],
            model,
            fmax,
            steps,
            freedom if cell and periodic else None,
            pressure_GPa,
            kept,
        )
        for index, result in zip(group, relaxed, strict=True):
            results[index] = dataclasses.replace(result, spacegroup=spacegroups[index])
        while on_result is not None and handed < len(frames) and results[handed] is not None:
            on_result(results[handed])
            handed += 1
    return results  # type: ignore[return-value]


def _check_constraints(frames: Sequence[Atoms], symmetry: bool) -> None:
    """Raise unless every constraint of ``frames`` is a ``FixAtoms`` of a structure whose
    symmetry is not kept (what ``relax_batched`` applies)."""
    from ase.constraints import FixAtoms

    for index, frame in enumerate(frames):
        name = f"structure {index} ({frame.get_chemical_formula()})"
        for constraint in frame.constraints:
            if not isinstance(constraint, FixAtoms):
                raise ValueError(
                    f"{name} has the constraint {type(constraint).__name__}: a batched relaxation "
                    "applies FixAtoms only; relax it without --batched"
                )
            if symmetry:
                raise ValueError(
                    f"{name} has FixAtoms and its symmetry would be kept: a batched "
                    "relaxation keeps the symmetry of unconstrained structures only; relax it "
                    "without --batched"
                )


def _symmetrized(
    frames: Sequence[Atoms], tolerance: float
) -> tuple[list[Atoms], list[str], list[tuple[np.ndarray, np.ndarray]]]:
    """Each frame symmetrised to the space group spglib finds within ``tolerance`` (Å), as
    ``FixSymmetry`` does; the groups (``"symbol (number)"``) and their operations
    (``SymmetrizedModel``'s: rotations (K, 3, 3), atom maps (K, n_atoms)).

    Raises:
        ValueError: a frame without a 3D cell (named by index).
    """
    copies, spacegroups, operations = [], [], []
    for index, frame in enumerate(frames):
        atoms = frame.copy()
        try:
            spacegroups.append(_fix_symmetry(atoms, tolerance))
        except ValueError as error:
            raise ValueError(f"structure {index}: {error}") from error
        fix = atoms.constraints[-1]
        operations.append((np.asarray(fix.rotations), np.asarray(fix.symm_map)))
        atoms.set_constraint()
        copies.append(atoms)
    return copies, spacegroups, operations


def _relax_group(
    frames: list[Atoms],
    model: EquiforceModel,
    fmax: float,
    steps: int,
    freedom: dict[str, bool] | None,
    pressure_GPa: float,
    operations: list[tuple[np.ndarray, np.ndarray]] | None,
) -> list[RelaxResult]:
    """Batched FIRE over structures of one periodicity; results at first convergence.

    A structure leaves the batch at the step it converges (TorchSim states slice by system),
    so later steps evaluate the model on the structures still relaxing only. ``freedom``: the
    cell relaxation's ``CELL_MODES`` entry, or None (fixed cells); ``operations``: each
    structure's symmetry operations (``_symmetrized``), or None.
    """
    import torch
    import torch_sim as ts

    from equiforce.md.torchsim import (
        CellAxesModel,
        FixedAtomsModel,
        SymmetrizedModel,
        atoms_to_state,
        fixed_atoms,
    )

    systems = model  # named the structures of its state's systems (their charge and spin)
    systems.set_systems(frames)
    model = CellAxesModel(model)  # slabs periodic along their axes only
    mask = fixed_atoms(frames)  # FIRE's velocities of atoms without forces stay zero
    fixed = None if mask is None else FixedAtomsModel(model, torch.as_tensor(mask).to(model.device))
    symmetric = None if operations is None else SymmetrizedModel(model, operations)
    driver = symmetric or fixed or model
    cell = freedom is not None
    if cell:
        init, step = ts.optimizers.frechet_cell_fire(
            driver, scalar_pressure=pressure_GPa * units.GPa, **freedom
        )
    else:
        init, step = ts.optimizers.fire(driver)
    state = init(atoms_to_state(frames, model.device, model.dtype))
    snapshots: list[RelaxResult | None] = [None] * len(frames)
    active = list(range(len(frames)))  # frame index of each system of ``state``
    for n_steps in range(steps + 1):
        if n_steps > 0:
            state = step(state)
        system_fmax = _system_fmax(state, cell)
        done = system_fmax < fmax
        for local, index in enumerate(active):
            if done[local] or n_steps == steps:
                snapshots[index] = _snapshot(
                    frames[index],
                    state,
                    local,
                    bool(done[local]),
                    n_steps,
                    cell,
                    float(system_fmax[local]),
                )
        remaining = [local for local in range(len(active)) if not done[local]]
        if not remaining or n_steps == steps:
            break
        if len(remaining) < len(active):
            if fixed is not None:
                kept = torch.tensor(remaining, device=state.system_idx.device)
                fixed.keep(torch.isin(state.system_idx, kept))
            if symmetric is not None:
                symmetric.keep(remaining)
            state = state[remaining]
            active = [active[local] for local in remaining]
            systems.set_systems([frames[index] for index in active])
    systems.set_systems(None)
    return snapshots  # type: ignore[return-value]


def _system_fmax(state, cell: bool) -> np.ndarray:
    """(n_systems,) largest force norm per system, cell forces included with ``cell``."""
    import torch

    from equiforce.md.batched_state import system_count

    norms = state.forces.norm(dim=1)
    fmax = torch.zeros(system_count(state), dtype=norms.dtype, device=norms.device)
    fmax = fmax.scatter_reduce(0, state.system_idx, norms, reduce="amax", include_self=True)
    if cell:
        fmax = torch.maximum(fmax, state.cell_forces.norm(dim=2).max(dim=1).values)
    return fmax.detach().cpu().numpy().astype(np.float64)


def _snapshot(
    atoms: Atoms, state, index: int, converged: bool, n_steps: int, cell: bool, fmax: float
) -> RelaxResult:
    """System ``index`` of a TorchSim optimizer state as a ``RelaxResult``."""
    mask = (state.system_idx == index).cpu().numpy()
    final = atoms.copy()
    final.positions = state.positions.detach().cpu().numpy()[mask].astype(np.float64)
    if atoms.pbc.all():
        final.set_cell(state.cell[index].detach().cpu().numpy().T.astype(np.float64))
    stress = None
    if getattr(state, "stress", None) is not None and atoms.pbc.all():
        from ase.stress import full_3x3_to_voigt_6_stress

        stress = full_3x3_to_voigt_6_stress(state.stress[index].detach().cpu().numpy())
    energy = float(state.energy[index])
    forces = state.forces.detach().cpu().numpy()[mask]
    return RelaxResult(
        atoms=frozen_copy(final, energy, forces, stress),
        converged=converged,
        n_steps=n_steps,
        fmax=fmax,
        cell_relaxed=cell,
    )


def _relaxed_frame(result: RelaxResult) -> Atoms:
    """The frame a result is written as: energy, forces, (3D-periodic) stress, and in its
    info ``relax_converged``, ``relax_steps``, ``relax_fmax`` (eV/Å), ``relax_cell`` and
    (symmetry kept) ``relax_spacegroup``."""
    atoms = result.atoms.copy()
    atoms.calc = result.atoms.calc
    atoms.info.update(
        relax_converged=result.converged,
        relax_steps=result.n_steps,
        relax_fmax=result.fmax,
        relax_cell=result.cell_relaxed,
    )
    if result.spacegroup is not None:
        atoms.info["relax_spacegroup"] = result.spacegroup
    return atoms


def append_relaxed(result: RelaxResult, handle: IO[str]) -> None:
    """Append one relaxed structure to an open extxyz file and flush it (a run stopped
    later keeps every structure finished before)."""
    from ase.io import write

    write(handle, _relaxed_frame(result), format="extxyz")
    handle.flush()


def _complete_frames(path: Path) -> int:
    """Bytes of ``path`` holding whole extxyz frames (count line, comment, that many atom
    lines, each ending in a newline): a frame cut by a kill while it was written ends
    before it."""
    complete = 0
    with open(path, "rb") as handle:
        while True:
            count = handle.readline()
            if not count.endswith(b"\n") or not count.strip().isdigit():
                return complete
            lines = [handle.readline() for _ in range(int(count) + 1)]
            if not all(line.endswith(b"\n") for line in lines):
                return complete
            complete = handle.tell()


def read_relaxed(path: str | os.PathLike, frames: Sequence[Atoms]) -> list[RelaxResult]:
    """The results in ``path`` (written by ``append_relaxed``), checked to
    be the relaxations of the first structures of ``frames``, in order. A last frame cut
    short (a kill while it was written) is removed from the file.

    Raises:
        FileNotFoundError: no such file.
        ValueError: more results than structures, or a result whose atoms are not those of
            the structure at its position (naming both), or a frame without the ``relax_*``
            fields.
    """
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no relaxed structures to resume from")
    os.truncate(path, _complete_frames(path))
    done = read(path, index=":") if path.stat().st_size else []
    if len(done) > len(frames):
        raise ValueError(f"{path}: {len(done)} relaxed structures, the input has {len(frames)}")
    results = []
    for index, (atoms, start) in enumerate(zip(done, frames, strict=False)):
        if not np.array_equal(atoms.numbers, start.numbers):
            raise ValueError(
                f"{path}, frame {index}: {atoms.get_chemical_formula()} is not the input's "
                f"structure {index} ({start.get_chemical_formula()}): not this input's run"
            )
        missing = [
            k for k in ("relax_converged", "relax_steps", "relax_fmax") if k not in atoms.info
        ]
        if missing:
            raise ValueError(f"{path}, frame {index}: no {', '.join(missing)} (not a relax output)")
        results.append(
            RelaxResult(
                atoms=atoms,
                converged=bool(atoms.info["relax_converged"]),
                n_steps=int(atoms.info["relax_steps"]),
                fmax=float(atoms.info["relax_fmax"]),
                cell_relaxed=bool(atoms.info.get("relax_cell", False)),
                spacegroup=atoms.info.get("relax_spacegroup"),
            )
        )
    return results


def format_relax_summary(results: Sequence[RelaxResult]) -> str:
    """One line per structure: index, formula, converged, steps, final fmax, energy."""
    header = f"{'#':>4}  {'formula':<14}{'converged':<11}{'steps':>6}  {'fmax eV/Å':>10}  energy eV"
    lines = [header]
    for index, result in enumerate(results):
        lines.append(
            f"{index:>4}  {result.atoms.get_chemical_formula():<14}"
            f"{'yes' if result.converged else 'NO':<11}{result.n_steps:>6}  "
            f"{result.fmax:>10.4f}  {result.energy:.6f}"
        )
    n_converged = sum(result.converged for result in results)
    lines.append(f"{n_converged} of {len(results)} converged")
    return "\n".join(lines)
