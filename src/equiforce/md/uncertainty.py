"""Watching a committee's force spread during MD: flag frames over a threshold, or stop.

``UncertaintyWatch`` is given to ``run_md`` (``equiforce md --max-uncertainty X``). After
every step it reads the calculator's per-atom ``force_uncertainty`` (``CommitteeCalculator``;
computed with the forces of that step, so watching costs nothing extra) and keeps the largest
atom's value. A frame whose largest spread exceeds ``threshold`` is flagged: kept in memory
(``flagged``), appended to ``path`` (extxyz, with ``step``, ``time_fs``,
``max_force_uncertainty``, ``energy_uncertainty`` in ``info`` and the per-atom
``force_uncertainty`` array) and, once ``stop_after`` frames are flagged, the run stops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

Action = Literal["stop", "flag"]


@dataclass(frozen=True)
class FlaggedFrame:
    """A frame whose committee spread exceeded the threshold.

    Attributes:
        step: MD step (0 is the starting structure).
        time_fs: simulation time, fs.
        max_force_uncertainty: largest per-atom force spread, eV/Å.
        energy_uncertainty: energy spread, eV.
        atoms: the structure (positions, cell, momenta; no calculator).
    """

    step: int
    time_fs: float
    max_force_uncertainty: float
    energy_uncertainty: float
    atoms: Any = field(repr=False, compare=False)


@dataclass(frozen=True)
class UncertaintySummary:
    """What an ``UncertaintyWatch`` saw over a run.

    Attributes:
        threshold: the threshold, eV/Å.
        action: ``"stop"`` or ``"flag"``.
        n_flagged: frames over the threshold.
        stopped_early: whether the run stopped because of them.
        max_force_uncertainty: largest per-atom spread over all steps, eV/Å.
        first_flagged_step: step of the first flagged frame, or None.
        flagged_steps: steps of the flagged frames.
        frames_path: where the flagged frames were written, or None.
        trace_step, trace_max: (n_steps + 1,) step and largest per-atom spread (eV/Å) of
            every step.
    """

    threshold: float
    action: str
    n_flagged: int
    stopped_early: bool
    max_force_uncertainty: float
    first_flagged_step: int | None
    flagged_steps: list[int]
    frames_path: Path | None
    trace_step: np.ndarray = field(repr=False)
    trace_max: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly figures (the trace left out)."""
        return {
            "threshold_eV_A": self.threshold,
            "action": self.action,
            "n_flagged": self.n_flagged,
            "stopped_early": self.stopped_early,
            "max_force_uncertainty_eV_A": self.max_force_uncertainty,
            "first_flagged_step": self.first_flagged_step,
            "flagged_steps": self.flagged_steps,
            "frames": None if self.frames_path is None else str(self.frames_path),
        }


class UncertaintyWatch:
    """Flags MD frames whose largest per-atom committee force spread exceeds ``threshold``.

    Args:
        threshold: eV/Å, > 0.
        action: ``"stop"`` ends the run at the first flagged frame; ``"flag"`` records every
            flagged frame and runs on (up to ``stop_after``).
        path: extxyz file the flagged frames are appended to (created fresh), or None.
        stop_after: with ``"flag"``, stop once this many frames are flagged (None: never).
    """

    def __init__(
        self,
        threshold: float,
        action: Action = "stop",
        path: str | os.PathLike | None = None,
        stop_after: int | None = None,
    ):
        if not threshold > 0:
            raise ValueError(f"the uncertainty threshold must be > 0 eV/Å, got {threshold}")
        if action not in ("stop", "flag"):
            raise ValueError(f"uncertainty action must be 'stop' or 'flag', got {action!r}")
        if stop_after is not None and stop_after < 1:
            raise ValueError(f"stop_after must be >= 1, got {stop_after}")
        self.threshold = float(threshold)
        self.action = action
        self.stop_after = 1 if action == "stop" else stop_after
        self.path = None if path is None else Path(path)
        self.flagged: list[FlaggedFrame] = []
        self.trace: list[tuple[int, float]] = []

    def begin(self) -> None:
        """A new run: the frames file created empty (``run_md`` calls it; a resumed run
        calls ``restore`` instead)."""
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def settings(self) -> dict[str, Any]:
        """What defines the watch (a resumed run must give the same)."""
        return {"threshold": self.threshold, "action": self.action, "stop_after": self.stop_after}

    def state(self) -> dict[str, np.ndarray]:
        """What a restart file keeps: ``trace`` (n_steps, 2) step and largest spread (eV/Å),
        ``flagged`` (n_flagged, 4) step, time (fs), largest spread (eV/Å) and energy spread
        (eV), ``frames_bytes`` () the frames file's size (-1: no file)."""
        frames_bytes = -1 if self.path is None else self.path.stat().st_size
        rows = [
            (f.step, f.time_fs, f.max_force_uncertainty, f.energy_uncertainty) for f in self.flagged
        ]
        return {
            "trace": np.array(self.trace, dtype=np.float64).reshape(-1, 2),
            "flagged": np.array(rows, dtype=np.float64).reshape(-1, 4),
            "frames_bytes": np.array(frames_bytes),
        }

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Put back what ``state()`` gave: the trace, and the flagged frames read back from
        the frames file, cut back to its size then (frames flagged after it are flagged again
        by the resumed run). The frames' atoms are as the file has them (extended XYZ
        precision).

        Raises:
            ValueError: the frames file is shorter than it was (replaced or cut), naming it.
        """
        from ase.io import read

        self.trace = [(int(step), float(value)) for step, value in state["trace"].tolist()]
        rows = state["flagged"].tolist()
        frames = []
        if self.path is not None:
            size = int(state["frames_bytes"])
            if not self.path.is_file() or self.path.stat().st_size < size:
                raise ValueError(f"{self.path}: shorter than when the restart file was written")
            os.truncate(self.path, size)
            frames = read(self.path, index=":") if rows else []
        self.flagged = []
        for k, (step, time_fs, largest, energy_spread) in enumerate(rows):
            frame = frames[k] if frames else None
            if frame is not None:
                frame.calc = None
                for name in ("step", "time_fs", "max_force_uncertainty", "energy_uncertainty"):
                    frame.info.pop(name, None)
                frame.arrays.pop("force_uncertainty", None)
            self.flagged.append(FlaggedFrame(int(step), time_fs, largest, energy_spread, frame))

    @property
    def should_stop(self) -> bool:
        """Whether enough frames are flagged to end the run."""
        return self.stop_after is not None and len(self.flagged) >= self.stop_after

    def check(self, atoms, step: int, time_fs: float) -> None:
        """Account for the current frame of ``atoms`` (its calculator must be a committee).

        Raises:
            ValueError: the calculator returns no ``force_uncertainty``.
        """
        results = atoms.calc.results if atoms.calc is not None else {}
        if "force_uncertainty" not in results:
            atoms.get_forces()  # an observer called before any force evaluation
            results = atoms.calc.results
        if "force_uncertainty" not in results:
            raise ValueError(
                f"the calculator ({type(atoms.calc).__name__}) gives no force_uncertainty: "
                "watching the uncertainty needs a committee (several models)"
            )
        spread = np.asarray(results["force_uncertainty"])
        largest = float(spread.max(initial=0.0))
        self.trace.append((step, largest))
        if largest <= self.threshold:
            return
        frame = atoms.copy()
        frame.calc = None
        energy_spread = float(results.get("energy_uncertainty", np.nan))
        self.flagged.append(FlaggedFrame(step, time_fs, largest, energy_spread, frame))
        if self.path is not None:
            self._append(frame, step, time_fs, largest, energy_spread, spread)

    def _append(self, frame, step, time_fs, largest, energy_spread, spread) -> None:
        from ase.io import write

        out = frame.copy()
        out.info.update(
            step=step,
            time_fs=time_fs,
            max_force_uncertainty=largest,
            energy_uncertainty=energy_spread,
        )
        out.arrays["force_uncertainty"] = spread.copy()
        with open(self.path, "a") as handle:
            write(handle, out, format="extxyz")

    def summary(self) -> UncertaintySummary:
        """The figures of the run so far."""
        steps = np.array([s for s, _ in self.trace], dtype=np.int64)
        values = np.array([v for _, v in self.trace], dtype=np.float64)
        return UncertaintySummary(
            threshold=self.threshold,
            action=self.action,
            n_flagged=len(self.flagged),
            stopped_early=self.should_stop,
            max_force_uncertainty=float(values.max(initial=0.0)),
            first_flagged_step=self.flagged[0].step if self.flagged else None,
            flagged_steps=[f.step for f in self.flagged],
            frames_path=self.path,
            trace_step=steps,
            trace_max=values,
        )


def plot_uncertainty(
    summaries: UncertaintySummary | Sequence[UncertaintySummary],
    timestep_fs: float,
    path: str | os.PathLike,
):
    """Write a PNG of the largest per-atom force spread vs time, the threshold and flags.

    Args:
        summaries: an ``UncertaintyWatch``'s summary, or several (one line each: the
            structures of a batched run, the walkers of a learning round).
        timestep_fs: MD time step, fs (the trace is per step).
        path: PNG file to write (parent folders are created).

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6.5, 3.5), dpi=120)
    FigureCanvasAgg(fig)
    axis = fig.subplots()
    if isinstance(summaries, UncertaintySummary):
        summaries = [summaries]
    for k, summary in enumerate(summaries):
        time_ps = summary.trace_step * timestep_fs / 1000.0
        label = "largest atom spread" + (", one line per run" if len(summaries) > 1 else "")
        axis.plot(
            time_ps, 1000.0 * summary.trace_max, linewidth=0.8, label=label if k == 0 else None
        )
        flagged = np.isin(summary.trace_step, summary.flagged_steps)
        label = "flagged" if k == 0 else None
        axis.plot(time_ps[flagged], 1000.0 * summary.trace_max[flagged], "rx", label=label)
    threshold = summaries[0].threshold
    axis.axhline(1000.0 * threshold, color="black", linewidth=0.8, label="threshold")
    axis.set_xlabel("time (ps)")
    axis.set_ylabel("committee force spread (meV/Å)")
    n_stopped = sum(summary.stopped_early for summary in summaries)
    if len(summaries) == 1:
        stop = ", stopped" if n_stopped else ""
    else:
        stop = f" by {len(summaries)} runs, {n_stopped} stopped"
    n_flagged = sum(summary.n_flagged for summary in summaries)
    axis.set_title(f"{n_flagged} frames over the threshold{stop}")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
