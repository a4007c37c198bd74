"""``precision-audit``: what each precision mode costs in accuracy and gains in speed.

For one model file and one labelled data file, every mode (``equiforce.precision.MODES``)
runs the same weights, and the audit reports per mode:

* deviation from the float64 evaluation of the same weights: energy per structure (RMS and
  max, meV; RMS per atom, meV/atom) and force components (RMS and max, meV/Å);
* errors against the labels (energy per atom RMSE, meV/atom; force RMSE, meV/Å), through
  ``equiforce.train.evaluate``;
* ms per energy+forces call on the first structure: median of ``timing_repeats`` calls after
  2 warm-up rounds, the modes interleaved call by call (``equiforce.measure.timing``, as
  ``equiforce bench``); and the peak memory of one such call over the memory in use before
  it (``equiforce.measure.memory.peak_memory_mb``: CPU resident set, high-water mark reset
  through ``/proc/self/clear_refs``; CUDA ``torch.cuda.max_memory_allocated``);
* ``same_arithmetic_as``: the earlier mode whose energies and forces on every audited
  structure are bit-identical to this mode's (``tf32`` = ``float32`` on a CPU, where PyTorch
  ignores the TF32 setting). Such a mode runs the same arithmetic, so it is not timed again:
  its ms/call and peak memory are the other mode's (speed ratio 1 by construction). Timing it
  separately could only measure noise; an audit that timed the modes one after another once
  reported tf32 1.7x faster than float32 with bit-identical results (each mode's block met
  different load on the shared cores, and the first paid the warm-up).
* the total-energy drift of a short NVE run from the first structure (``equiforce.md``),
  meV/atom/ps;
* the rotation error: forces of rotated structures against rotated forces, RMS relative to
  the force RMS, checked against the mode's named tolerance (``SYMMETRY_RTOL``).

A mode is *within tolerance* when its force RMS deviation is at most ``force_tol`` (meV/Å),
its energy RMS deviation at most ``energy_tol`` (meV/atom) and its rotation error within its
tolerance; the fastest such mode is the recommendation.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import asdict, dataclass
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch
from ase import Atoms

from equiforce.data.batch import batch_to, collate
from equiforce.data.graph import Configuration, configuration_to_graph
from equiforce.files import atomic_write_text
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.dynamics import run_md
from equiforce.measure.memory import peak_memory_mb
from equiforce.measure.timing import device_sync, interleave, summarize, time_call
from equiforce.models.potential import Potential
from equiforce.precision import (
    MODES,
    PrecisionPolicy,
    apply_policy,
    current_policy,
    precision_scope,
)
from equiforce.train.evaluate import Predictions, errors_of, predict

# Relative rotation error of the forces allowed per arithmetic (RMS of F(Rx) - R F(x) over
# the force RMS): rounding of the lowest precision in the model, with a margin.
SYMMETRY_RTOL = {"float64": 1e-9, "float32": 1e-4, "fp16": 1e-2, "bf16": 5e-2}

_MILLI = 1000.0


@dataclass(frozen=True)
class AuditOptions:
    """Settings of an audit.

    Attributes:
        modes: mode names to audit, in report order (the float64 reference always runs).
        force_tol: largest acceptable force RMS deviation from float64, meV/Å.
        energy_tol: largest acceptable energy RMS deviation from float64, meV/atom.
        batch_size: structures per forward pass for the deviations and errors.
        timing_repeats: timed calls per mode (after 2 warm-up rounds of all modes); 0: no
            timing (``ms_per_call`` and ``peak_memory_MB`` are None, no recommendation),
            for callers that time the modes themselves (``equiforce compress``).
        md_steps: NVE steps for the drift (0 skips the MD).
        md_timestep_fs: NVE time step, fs.
        md_temperature_K: initial-velocity temperature, K.
        seed: seeds the rotation and the MD velocities.
        device: torch device.
    """

    modes: tuple[str, ...] = tuple(MODES)
    force_tol: float = 1.0
    energy_tol: float = 1.0
    batch_size: int = 16
    timing_repeats: int = 10
    md_steps: int = 200
    md_timestep_fs: float = 0.5
    md_temperature_K: float = 300.0
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class ModeAudit:
    """Audit figures of one mode (see the module docstring for definitions and units)."""

    mode: str
    energy_dev_rms_meV: float
    energy_dev_max_meV: float
    energy_dev_rms_meV_per_atom: float
    forces_dev_rms_meV_per_A: float
    forces_dev_max_meV_per_A: float
    energy_rmse_meV_per_atom: float | None
    forces_rmse_meV_per_A: float | None
    ms_per_call: float | None
    peak_memory_MB: float | None
    nve_drift_meV_per_atom_per_ps: float | None
    rotation_error_rel: float
    rotation_tol_rel: float
    within_tolerance: bool
    same_arithmetic_as: str | None = None


@dataclass(frozen=True)
class AuditResult:
    """All modes of an audit and the recommendation.

    Attributes:
        modes: one ``ModeAudit`` per audited mode.
        fastest_within_tolerance: name of the fastest mode within tolerance (float64 always
            is), or None when no audited mode is or the modes were not timed.
        options: the settings used.
        n_structures: structures compared.
        n_atoms_timed: atoms of the structure used for timing, memory and MD.
    """

    modes: list[ModeAudit]
    fastest_within_tolerance: str | None
    options: AuditOptions
    n_structures: int
    n_atoms_timed: int


def run_audit(
    model: Potential, structures: Sequence[Configuration], options: AuditOptions
) -> AuditResult:
    """Audit every mode of ``options.modes`` for ``model`` on ``structures``.

    Args:
        model: the potential (any dtype); not modified (each mode runs on a copy).
        structures: labelled (or unlabelled) structures; the first one is used for timing,
            memory, the MD and (with the others) the rotation check.
        options: settings.

    Raises:
        ValueError: no structures, or an unknown mode.
    """
    if not structures:
        raise ValueError("the audit needs at least one structure")
    unknown = [m for m in options.modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown precision modes {unknown}; known: {list(MODES)}")
    reference = _predictions(_in_mode(model, MODES["float64"], options), structures, options)
    rotation = _random_rotation(options.seed)
    candidates = {name: _in_mode(model, MODES[name], options) for name in options.modes}
    preds = {
        name: _predictions(candidate, structures, options) for name, candidate in candidates.items()
    }
    same = same_arithmetic(preds)
    if options.timing_repeats > 0:
        timed = {name: m for name, m in candidates.items() if name not in same}
        speed = _speed_and_memory(timed, structures[0], options)
        speed.update({name: speed[first] for name, first in same.items()})
    else:
        speed = {name: {"ms_per_call": None, "peak_memory_MB": None} for name in candidates}
    audits = [
        _audit_mode(
            candidate,
            MODES[name],
            structures,
            preds[name],
            reference,
            rotation,
            options,
            speed[name],
            same.get(name),
        )
        for name, candidate in candidates.items()
    ]
    within = [a for a in audits if a.within_tolerance and a.ms_per_call is not None]
    fastest = min(within, key=lambda a: a.ms_per_call).mode if within else None
    return AuditResult(audits, fastest, options, len(structures), structures[0].n_atoms)


def _in_mode(model: Potential, policy: PrecisionPolicy, options: AuditOptions) -> Potential:
    return apply_policy(copy.deepcopy(model).to(options.device), policy).eval()


def _predictions(
    model: Potential, structures: Sequence[Configuration], options: AuditOptions
) -> Predictions:
    return predict(model, structures, batch_size=options.batch_size)


def same_arithmetic(preds: dict[str, Predictions]) -> dict[str, str]:
    """Mode -> the first earlier mode (in ``preds`` order) with bit-identical predictions.

    Energies and forces are compared exactly (``np.array_equal``); modes that differ from
    every earlier one are absent.
    """
    same: dict[str, str] = {}
    names = list(preds)
    for i, name in enumerate(names):
        for first in names[:i]:
            if first not in same and _identical(preds[name], preds[first]):
                same[name] = first
                break
    return same


def _identical(a: Predictions, b: Predictions) -> bool:
    return np.array_equal(a.energy, b.energy) and np.array_equal(a.forces, b.forces)


def _speed_and_memory(
    models: dict[str, Potential], structure: Configuration, options: AuditOptions
) -> dict[str, dict[str, float | None]]:
    """Mode -> ``ms_per_call`` and ``peak_memory_MB`` of energy+forces calls on ``structure``.

    The modes' calls alternate (``interleave``: 2 warm-up rounds, then ``timing_repeats``
    timed ones) so that load from elsewhere hits all modes alike; the median is reported.
    """
    device = torch.device(options.device)
    calls = {name: _single_call(model, structure, device) for name, model in models.items()}
    timers = {name: partial(time_call, call, device_sync(device)) for name, call in calls.items()}
    times = interleave(timers, warmup=2, repeats=options.timing_repeats)
    return {
        name: {
            "ms_per_call": summarize(times[name]).median_ms,
            "peak_memory_MB": peak_memory_mb(call, device),
        }
        for name, call in calls.items()
    }


def _audit_mode(
    model: Potential,
    policy: PrecisionPolicy,
    structures: Sequence[Configuration],
    pred: Predictions,
    reference: Predictions,
    rotation: np.ndarray,
    options: AuditOptions,
    speed: dict[str, float | None],
    same_as: str | None,
) -> ModeAudit:
    energy_dev = _MILLI * (pred.energy - reference.energy)
    forces_dev = _MILLI * (pred.forces - reference.forces)
    errors = errors_of(structures, pred).metrics
    rotation_error = _rotation_error(model, structures, pred, rotation, options)
    tolerance = SYMMETRY_RTOL[policy.autocast if policy.autocast != "none" else policy.model_dtype]
    energy_rms_per_atom = _rms(energy_dev / pred.n_atoms)
    forces_rms = _rms(forces_dev)
    within = (
        forces_rms <= options.force_tol
        and energy_rms_per_atom <= options.energy_tol
        and rotation_error <= tolerance
    )
    return ModeAudit(
        mode=policy.name,
        energy_dev_rms_meV=_rms(energy_dev),
        energy_dev_max_meV=float(np.abs(energy_dev).max()),
        energy_dev_rms_meV_per_atom=energy_rms_per_atom,
        forces_dev_rms_meV_per_A=forces_rms,
        forces_dev_max_meV_per_A=float(np.abs(forces_dev).max()),
        energy_rmse_meV_per_atom=errors["energy_per_atom"].rmse if "energy" in errors else None,
        forces_rmse_meV_per_A=errors["forces"].rmse if "forces" in errors else None,
        **speed,
        nve_drift_meV_per_atom_per_ps=_nve_drift(model, structures[0], options),
        rotation_error_rel=rotation_error,
        rotation_tol_rel=tolerance,
        within_tolerance=within,
        same_arithmetic_as=same_as,
    )


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def _single_call(
    model: Potential, structure: Configuration, device: torch.device
) -> Callable[[], None]:
    """An energy+forces call of ``model`` on ``structure`` (graph built once)."""
    batch = batch_to(
        collate([configuration_to_graph(structure, model.type_names, model.r_max)]), device
    )

    def call() -> None:
        with torch.enable_grad(), precision_scope(current_policy(model)):
            model(batch, compute_forces=True, create_graph=False)

    return call


def _random_rotation(seed: int) -> np.ndarray:
    """A proper rotation matrix (3, 3), uniformly random, from ``seed``."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _rotated(structure: Configuration, rotation: np.ndarray) -> Configuration:
    """The structure rotated by ``rotation`` (cell too), labels dropped."""
    return dataclasses.replace(
        structure,
        positions=structure.positions @ rotation.T,
        cell=structure.cell @ rotation.T,
        energy=None,
        forces=None,
        stress=None,
    )


def _rotation_error(
    model: Potential,
    structures: Sequence[Configuration],
    pred: Predictions,
    rotation: np.ndarray,
    options: AuditOptions,
) -> float:
    """RMS of ``F(Rx) - R F(x)`` over the force RMS (relative rotation error)."""
    rotated = predict(model, [_rotated(s, rotation) for s in structures], options.batch_size)
    difference = rotated.forces - pred.forces @ rotation.T
    scale = _rms(pred.forces)
    return _rms(difference) / scale if scale > 0 else _rms(difference)


def _nve_drift(model: Potential, structure: Configuration, options: AuditOptions) -> float | None:
    if options.md_steps < 1:
        return None
    calculator = EquiforceCalculator(model, device=options.device)
    result = run_md(
        Atoms(
            structure.atomic_numbers, structure.positions, cell=structure.cell, pbc=structure.pbc
        ),
        calculator,
        ensemble="nve",
        temperature_K=options.md_temperature_K,
        timestep_fs=options.md_timestep_fs,
        n_steps=options.md_steps,
        log_interval=max(1, options.md_steps // 50),
        seed=options.seed,
    )
    return result.energy_drift


# (title, width, format, ModeAudit field)
_COLUMNS = (
    ("mode", 11, "", "mode"),
    ("dE rms", 9, ".3g", "energy_dev_rms_meV"),
    ("dE max", 9, ".3g", "energy_dev_max_meV"),
    ("dF rms", 9, ".3g", "forces_dev_rms_meV_per_A"),
    ("dF max", 9, ".3g", "forces_dev_max_meV_per_A"),
    ("E RMSE", 9, ".4g", "energy_rmse_meV_per_atom"),
    ("F RMSE", 9, ".4g", "forces_rmse_meV_per_A"),
    ("ms/call", 9, ".2f", "ms_per_call"),
    ("peak MB", 9, ".1f", "peak_memory_MB"),
    ("drift", 9, ".3g", "nve_drift_meV_per_atom_per_ps"),
    ("rot err", 9, ".2g", "rotation_error_rel"),
    ("ok", 5, "", "within_tolerance"),
)


def _cell(value: object, width: int, fmt: str) -> str:
    if value is None:
        return f"{'-':>{width}}"
    if isinstance(value, bool):
        return f"{'yes' if value else 'no':>{width}}"
    if isinstance(value, str):
        return f"{value:<{width}}"
    return f"{value:>{width}{fmt}}"


def format_audit_table(result: AuditResult) -> str:
    """A fixed-width table, one row per mode, with units and the recommendation."""
    lines = [
        f"{result.n_structures} structures; ms/call, peak memory and NVE on the first "
        f"({result.n_atoms_timed} atoms)",
        "dE: energy deviation from float64 (meV/structure); dF: force deviation (meV/Å); "
        "E/F RMSE vs labels (meV/atom, meV/Å); drift: NVE meV/atom/ps; rot err: relative",
        "".join(
            _cell(title, width, "") if i == 0 else f"{title:>{width}}"
            for i, (title, width, _, _) in enumerate(_COLUMNS)
        ),
    ]
    for audit in result.modes:
        lines.append(
            "".join(_cell(getattr(audit, field), width, fmt) for _, width, fmt, field in _COLUMNS)
        )
    for audit in result.modes:
        if audit.same_arithmetic_as is not None:
            lines.append(
                f"{audit.mode}: bit-identical to {audit.same_arithmetic_as} on every structure "
                f"(same arithmetic; timed once, speed ratio 1 by construction)"
            )
    options = result.options
    best = result.fastest_within_tolerance or "none"
    lines.append(
        f"fastest mode within tolerance (dF rms <= {options.force_tol} meV/Å, dE rms <= "
        f"{options.energy_tol} meV/atom, rotation error within its tolerance): {best}"
    )
    return "\n".join(lines)


def audit_to_json(result: AuditResult, path: str | os.PathLike | None = None) -> str:
    """The audit as JSON text, also written atomically to ``path`` when given."""
    payload = {
        "n_structures": result.n_structures,
        "n_atoms_timed": result.n_atoms_timed,
        "fastest_within_tolerance": result.fastest_within_tolerance,
        "options": {**asdict(result.options), "modes": list(result.options.modes)},
        "symmetry_rtol": SYMMETRY_RTOL,
        "modes": [asdict(a) for a in result.modes],
    }
    text = json.dumps(payload, indent=2) + "\n"
    if path is not None:
        atomic_write_text(text, path)
    return text
