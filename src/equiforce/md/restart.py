"""Restart files of ``run_md``: a run killed at any point continues exactly.

Every ``restart_every`` steps and after the last, ``run_md`` writes one ``.npz`` file
atomically (``equiforce.files.atomic_write``), so a kill leaves the previous complete file.
It holds what the next steps depend on, to the bit:

* the atoms' positions, momenta and cell (float64);
* the integrator's numbers: every numeric attribute of the ASE dynamics object and of its
  Nosé–Hoover chains (``_thermostat``, ``_barostat``: MTK's cell momenta and chain variables),
  ``nsteps`` among them;
* the state of the random generator that draws the Langevin noise (numpy's
  ``bit_generator.state``);
* what the run has recorded: the sampled energies, temperatures (volume, pressure), the bond
  monitor's arrays, the number of trajectory frames written (and, for extended XYZ, the
  file's size then), the wall time so far; with a committee's ``UncertaintyWatch``, its trace,
  its flagged frames' figures and the size of its frames file (``UncertaintyWatch.state``);
* the settings that define the run (ensemble, temperatures, time step, friction, seed, sampling
  interval, NPT coupling, the atoms' numbers): a resumed call that gives others is refused,
  naming the setting. The length (``n_steps``) may grow: a finished run can be extended.

``load_restart`` reads such a file (``restart_to_resume``: the file a resumed call continues,
checked against the call); ``Restart.restore_atoms`` and ``Restart.restore`` put the
state back before the run goes on; ``keep_frames`` cuts a trajectory back to the frames the
restart file counted (those written after it are written again, identically: the resumed run
appends to it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from ase import Atoms

from equiforce.files import atomic_write

RESTART_FORMAT = 1
_NESTED = ("_thermostat", "_barostat")  # ASE's MTK integrators keep their chains in these


def numeric_state(obj: Any, prefix: str) -> dict[str, np.ndarray]:
    """Every number and numeric array attribute of ``obj`` (and of its Nosé–Hoover chain
    objects), as arrays keyed ``prefix.name`` (``prefix._thermostat.name``, ...)."""
    state = {}
    for name, value in vars(obj).items():
        key = f"{prefix}.{name}"
        if name in _NESTED and value is not None:
            state.update(numeric_state(value, key))
        elif isinstance(value, (int, float, np.number)) or (
            isinstance(value, np.ndarray) and value.dtype.kind in "biuf"
        ):
            state[key] = np.array(value)
    return state


def put_numeric_state(obj: Any, prefix: str, arrays: Mapping[str, np.ndarray]) -> None:
    """Set back what ``numeric_state(obj, prefix)`` saved (arrays stay arrays, numbers
    numbers of their own type)."""
    for name, value in vars(obj).items():
        key = f"{prefix}.{name}"
        if name in _NESTED and value is not None:
            put_numeric_state(value, key, arrays)
        elif key in arrays:
            saved = arrays[key]
            setattr(
                obj, name, saved.copy() if isinstance(value, np.ndarray) else type(value)(saved)
            )


@dataclass(frozen=True)
class Restart:
    """The content of a restart file.

    Attributes:
        path: the file.
        meta: settings (``"settings"``), ``"n_steps_done"``, ``"n_frames"`` (trajectory frames
            written) and ``"trajectory_bytes"`` (an extended XYZ trajectory's size then, else
            None; both lists, one per structure, in ``run_batched_md``'s files),
            ``"wall_time_s"`` and the generator state (``"rng"``).
        arrays: ``positions`` (n, 3) Å, ``momenta`` (n, 3) ASE units, ``cell`` (3, 3) Å,
            ``rows`` (n_samples, 4) time fs / potential eV / kinetic eV / temperature K,
            ``cell_rows`` (n_samples, 2) volume Å^3 / pressure GPa (NPT), the numeric state
            of the integrator (``dynamics.*``) and bond monitor (``bonds.*``), and an
            uncertainty watch's ``state()`` (``watch.*``).
    """

    path: Path
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def n_steps_done(self) -> int:
        """Steps the run had taken when the file was written."""
        return int(self.meta["n_steps_done"])

    @property
    def n_frames(self) -> int:
        """Trajectory frames written by then."""
        return int(self.meta["n_frames"])

    @property
    def trajectory_bytes(self) -> int | None:
        """An extended XYZ trajectory's size by then (None for ``.traj`` or none)."""
        return self.meta["trajectory_bytes"]

    @property
    def wall_time_s(self) -> float:
        """Wall time of the integration by then, s."""
        return float(self.meta["wall_time_s"])

    def check_settings(self, settings: Mapping[str, Any]) -> None:
        """Raise naming the first setting that differs from the run's.

        Raises:
            ValueError: ``"<file>: the run was started with <name> = <value>; this call
                gives <value>"``.
        """
        saved = self.meta["settings"]
        for name, value in _jsonable(settings).items():
            if saved.get(name) != value:
                raise ValueError(
                    f"{self.path}: the run was started with {name} = {saved.get(name)!r}; this "
                    f"call gives {value!r}: resume with the run's settings"
                )

    def restore_atoms(self, atoms: Atoms) -> None:
        """Positions, momenta and cell of the file, bypassing constraints (they are the
        state the constrained run reached)."""
        atoms.set_cell(self.arrays["cell"], scale_atoms=False)
        atoms.arrays["positions"][:] = self.arrays["positions"]
        atoms.set_momenta(self.arrays["momenta"], apply_constraint=False)

    def restore(
        self, dynamics: Any, rng: np.random.Generator, recorder: Any, watch: Any = None
    ) -> None:
        """The integrator's numbers, the generator's state, the recorder's samples and the
        uncertainty watch's record (when the run has one)."""
        put_numeric_state(dynamics, "dynamics", self.arrays)
        rng.bit_generator.state = self.meta["rng"]
        recorder.rows = [tuple(row) for row in self.arrays["rows"].tolist()]
        if recorder.cell_rows is not None:
            recorder.cell_rows = [tuple(row) for row in self.arrays["cell_rows"].tolist()]
        put_numeric_state(recorder.bonds, "bonds", self.arrays)
        if watch is not None:
            watch.restore({k[6:]: v for k, v in self.arrays.items() if k.startswith("watch.")})


def _jsonable(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as JSON would give them back (tuples as lists, numpy as Python)."""
    return json.loads(json.dumps(settings, default=lambda value: np.asarray(value).tolist()))


def save_restart(
    path: str | os.PathLike,
    atoms: Atoms,
    dynamics: Any,
    rng: np.random.Generator,
    recorder: Any,
    settings: Mapping[str, Any],
    n_frames: int,
    trajectory_bytes: int | None,
    wall_time_s: float,
    watch: Any = None,
) -> Path:
    """Write the restart file of the run's current state atomically (module docstring).

    Args:
        path: the ``.npz`` file.
        atoms: the MD's atoms.
        dynamics: the ASE integrator.
        rng: the generator of its noise.
        recorder: ``equiforce.md.sampling.Recorder`` of the run.
        settings: what defines the run (``check_settings`` compares them on resume).
        n_frames: trajectory frames written so far.
        trajectory_bytes: an extended XYZ trajectory's size now (flushed), else None.
        wall_time_s: integration wall time so far, s.
        watch: the run's ``UncertaintyWatch``, or None.
    """
    meta = {
        "format": RESTART_FORMAT,
        "settings": _jsonable(settings),
        "n_steps_done": int(dynamics.nsteps),
        "n_frames": int(n_frames),
        "trajectory_bytes": trajectory_bytes,
        "wall_time_s": float(wall_time_s),
        "rng": rng.bit_generator.state,
    }
    arrays = {
        "positions": atoms.get_positions(),
        "momenta": atoms.get_momenta(),
        "cell": atoms.cell.array.copy(),
        "rows": np.array(recorder.rows, dtype=np.float64).reshape(-1, 4),
        **numeric_state(dynamics, "dynamics"),
        **numeric_state(recorder.bonds, "bonds"),
    }
    if watch is not None:
        arrays.update({f"watch.{name}": value for name, value in watch.state().items()})
    if recorder.cell_rows is not None:
        arrays["cell_rows"] = np.array(recorder.cell_rows, dtype=np.float64).reshape(-1, 2)
    arrays["meta"] = np.array(json.dumps(meta))
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))


def load_restart(path: str | os.PathLike) -> Restart:
    """Read a restart file.

    Raises:
        FileNotFoundError: no such file (naming it).
        ValueError: not a restart file of this format (naming it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no restart file: nothing to resume")
    try:
        with np.load(path, allow_pickle=False) as content:
            arrays = {name: content[name] for name in content.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: not a readable MD restart file ({exc})") from exc
    if meta.get("format") != RESTART_FORMAT:
        raise ValueError(
            f"{path}: restart format {meta.get('format')}, this equiforce reads {RESTART_FORMAT}"
        )
    return Restart(path, meta, arrays)


def restart_to_resume(
    restart_path: str | os.PathLike | None,
    resume: bool,
    settings: dict,
    n_steps: int,
) -> Restart | None:
    """The restart file ``resume`` continues, checked against this call (None: a new run)."""
    if not resume:
        return None
    if restart_path is None:
        raise ValueError("resume needs the restart_path of the run to continue")
    restart = load_restart(restart_path)
    restart.check_settings(settings)
    if restart.n_steps_done >= n_steps:
        raise ValueError(
            f"{restart_path}: the run has taken {restart.n_steps_done} steps already; give "
            f"more than that as the number of steps to extend it"
        )
    return restart


def keep_frames(path: Path, n_frames: int, n_bytes: int | None) -> None:
    """Cut the trajectory ``path`` back to the first ``n_frames`` frames the restart file
    counted: an extended XYZ file is truncated to its size then (``n_bytes``); an ASE
    ``.traj`` file (which counts its frames) is rewritten atomically with its first
    ``n_frames``, one frame at a time, when it has more.

    Raises:
        ValueError: the file holds fewer frames (or bytes) than the restart file counted
            (it was replaced or cut since), naming it.
    """
    if not path.is_file():
        if n_frames:
            raise FileNotFoundError(f"{path}: the trajectory the restart file continues is gone")
        return
    if n_bytes is not None:  # extended XYZ: the restart file knows its size
        if path.stat().st_size < n_bytes:
            raise ValueError(f"{path}: shorter than the {n_frames} frames the restart file counts")
        os.truncate(path, n_bytes)
        return
    from ase.io.trajectory import Trajectory

    with Trajectory(str(path)) as reader:
        if len(reader) < n_frames:
            raise ValueError(
                f"{path}: {len(reader)} frames, the restart file counts {n_frames} written"
            )
        if len(reader) == n_frames:
            return
        scratch = path.with_name(f".{path.name}.partial")
        with Trajectory(str(scratch), "w") as writer:
            for k in range(n_frames):
                writer.write(reader[k])
    os.replace(scratch, path)
