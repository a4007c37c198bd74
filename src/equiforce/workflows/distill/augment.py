"""Structures the teacher labels besides the training set: rattled, MD and normal-mode samples.

* rattled copies: Gaussian displacements of every training structure at several scales
  (cheap, generated from the seed on every run);
* Langevin MD driven by the teacher (``equiforce.md.run_md``) from a few training structures
  at one or more temperatures; each trajectory is cached as an extxyz file named by a hash of
  the teacher, the start structure and the settings, written atomically, so reruns and
  further students reuse it;
* normal-mode samples: the teacher's Hessian at a few training structures (central differences
  of its forces), mass weighted and diagonalised; modes with positive curvature are displaced
  with harmonic amplitudes ``sqrt(kB T) / omega`` times standard normal numbers; cached the
  same way.

Under several ranks the trajectories and normal-mode samples are shared out: rank r makes
the cache files r, r + size, ...; after a barrier every rank reads them all.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from equiforce.train.distributed import World
from equiforce.workflows.distill.config import (
    AugmentConfig,
    MDConfig,
    NormalModeConfig,
    RattleConfig,
)
from equiforce.workflows.distill.store import structure_key
from equiforce.workflows.distill.teacher import Teacher


def evenly_spaced(items: Sequence[Any], count: int) -> list[Any]:
    """``count`` items spread evenly over ``items`` (all of them when fewer)."""
    if count >= len(items):
        return list(items)
    return [items[int(k)] for k in np.linspace(0, len(items) - 1, count).round()]


def rattled(structures: Sequence[Any], config: RattleConfig, seed: int) -> list[Any]:
    """Copies with N(0, scale^2) displacements of every position component.

    Args:
        structures: ASE ``Atoms``.
        config: scales (Å) and copies per structure and scale.
        seed: seeds the displacements.

    Returns:
        ``len(scales) * copies * len(structures)`` new ``Atoms`` (no calculator).
    """
    rng = np.random.default_rng([seed, 1])
    out = []
    for scale in config.scales:
        for _ in range(config.copies):
            for atoms in structures:
                copy = _bare(atoms)
                copy.positions = atoms.positions + rng.normal(0.0, scale, atoms.positions.shape)
                out.append(copy)
    return out


def _bare(atoms):
    """Geometry-only copy (numbers, positions, cell, pbc)."""
    from ase import Atoms

    return Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def _cache_file(cache_dir: Path, kind: str, teacher: Teacher, atoms, settings: Any) -> Path:
    text = repr((teacher.fingerprint, structure_key(atoms), settings))
    return cache_dir / f"{kind}-{hashlib.sha256(text.encode()).hexdigest()[:20]}.xyz"


def _cached_frames(path: Path, make: Callable[[], list[Any]]) -> list[Any]:
    """Frames of ``path``, or ``make()`` written there atomically first."""
    from ase.io import read, write

    if not path.exists():
        frames = make()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".xyz", dir=path.parent)
        os.close(fd)
        try:
            write(tmp, frames, format="extxyz")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return [_bare(atoms) for atoms in read(path, index=":", format="extxyz")]


def _shared_frames(
    jobs: Sequence[tuple[Path, Callable[[], list[Any]]]], world: World, what: str
) -> list[Any]:
    """The frames of every ``(cache file, make)`` job, concatenated; this rank makes the
    missing files of its share (jobs rank, rank + size, ...), then waits for the others."""
    if world.distributed:
        for path, make in jobs[world.rank :: world.size]:
            _cached_frames(path, make)
        world.barrier(f"{what}: waiting for the other ranks' shares")
    return [atoms for path, make in jobs for atoms in _cached_frames(path, make)]


def md_snapshots(
    teacher: Teacher,
    starts: Sequence[Any],
    config: MDConfig,
    seed: int,
    cache_dir: Path,
    progress: bool = True,
    world: World | None = None,
) -> list[Any]:
    """Snapshots of teacher-driven Langevin MD (one trajectory per start and temperature).

    Args:
        teacher: drives the dynamics.
        starts: starting structures.
        config: temperatures, snapshots, interval, time step, friction.
        seed: seeds velocities and thermostat noise (offset per trajectory).
        cache_dir: where trajectories are cached.
        progress: show MD progress bars.
        world: the ranks, which share the trajectories out (None: one).

    Returns:
        ``len(starts) * len(temperatures) * n_snapshots`` ``Atoms``.
    """
    from equiforce.md.dynamics import run_md

    n_steps = config.n_snapshots * config.interval
    jobs = []
    for t_index, temperature in enumerate(config.temperatures):
        for s_index, atoms in enumerate(starts):
            run_seed = seed + 1000 * t_index + s_index
            settings = (
                temperature,
                n_steps,
                config.interval,
                config.timestep_fs,
                config.friction,
                run_seed,
            )

            def make(atoms=atoms, temperature=temperature, run_seed=run_seed):
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "md.xyz"
                    run_md(
                        _bare(atoms),
                        teacher.calculator(),
                        "nvt",
                        temperature,
                        config.timestep_fs,
                        n_steps,
                        config.friction,
                        path,
                        config.interval,
                        run_seed,
                        progress,
                    )
                    from ase.io import read

                    frames = read(path, index=":", format="extxyz")
                return [_bare(a) for a in frames[-config.n_snapshots :]]

            jobs.append((_cache_file(cache_dir, "md", teacher, atoms, settings), make))
    return _shared_frames(jobs, world or World(), "teacher MD")


def teacher_hessian(teacher: Teacher, atoms, step: float) -> np.ndarray:
    """(3 n_atoms, 3 n_atoms) float64 Hessian, eV/Å^2, by central differences of forces."""
    n = 3 * len(atoms)
    hessian = np.zeros((n, n))
    for k in range(n):
        columns = []
        for sign in (1.0, -1.0):
            moved = _bare(atoms)
            flat = moved.positions.reshape(-1)
            flat[k] += sign * step
            moved.positions = flat.reshape(-1, 3)
            (labels,) = teacher.label([moved])
            columns.append(labels.forces.reshape(-1))
        hessian[:, k] = -(columns[0] - columns[1]) / (2.0 * step)
    return 0.5 * (hessian + hessian.T)


def normal_mode_samples(
    teacher: Teacher,
    starts: Sequence[Any],
    config: NormalModeConfig,
    seed: int,
    cache_dir: Path,
    world: World | None = None,
) -> list[Any]:
    """Harmonic samples along the teacher's normal modes at ``config.temperature``.

    Modes whose mass-weighted curvature is below 1e-4 of the largest (translations,
    rotations, soft or unstable directions of a non-minimum) are not displaced.

    Returns:
        ``len(starts) * n_samples`` ``Atoms``.
    """
    from ase import units

    kt = units.kB * config.temperature
    jobs = []
    for s_index, atoms in enumerate(starts):
        settings = (config.n_samples, config.temperature, config.step, seed + s_index)

        def make(atoms=atoms, s_index=s_index):
            hessian = teacher_hessian(teacher, atoms, config.step)
            inv_sqrt_mass = np.repeat(atoms.get_masses() ** -0.5, 3)
            dynamical = hessian * inv_sqrt_mass[:, None] * inv_sqrt_mass[None, :]
            omega2, modes = np.linalg.eigh(dynamical)
            keep = omega2 > 1e-4 * omega2.max()
            amplitude = np.sqrt(kt / omega2[keep])  # sqrt(amu) Å
            rng = np.random.default_rng([seed, 2, s_index])
            samples = []
            for _ in range(config.n_samples):
                q = rng.standard_normal(int(keep.sum())) * amplitude
                shift = (modes[:, keep] @ q) * inv_sqrt_mass
                copy = _bare(atoms)
                copy.positions = atoms.positions + shift.reshape(-1, 3)
                samples.append(copy)
            return samples

        jobs.append((_cache_file(cache_dir, "modes", teacher, atoms, settings), make))
    return _shared_frames(jobs, world or World(), "teacher normal modes")


def augmented_structures(
    teacher: Teacher,
    structures: Sequence[Any],
    config: AugmentConfig,
    seed: int,
    cache_dir: Path,
    progress: bool = True,
    world: World | None = None,
) -> dict[str, list[Any]]:
    """All augmentations of ``structures``, by kind (``rattle``, ``md``, ``normal_modes``);
    ``world``: the ranks that share the teacher's work out (None: one)."""
    md, modes = config.md, config.normal_modes
    out = {"rattle": rattled(structures, config.rattle, seed)}
    md_starts = evenly_spaced(structures, md.n_starts) if md.temperatures else []
    out["md"] = md_snapshots(teacher, md_starts, md, seed, cache_dir, progress, world)
    mode_starts = evenly_spaced(structures, modes.n_starts)
    out["normal_modes"] = normal_mode_samples(teacher, mode_starts, modes, seed, cache_dir, world)
    return out
