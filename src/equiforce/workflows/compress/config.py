"""Typed settings of ``equiforce compress``: what to search, within which tolerances.

Tolerances are on the *validation* errors against the user's labels: force component RMSE in
meV/Å (``force_tol``) and energy-per-atom RMSE in meV/atom (``energy_tol``, optional). Every
setting is checked on construction; a bad value raises ``ConfigError`` naming its key.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from equiforce.kernels.registry import BACKENDS
from equiforce.precision import MODES
from equiforce.typed_config import check_field

__all__ = ["TARGETS", "CompressConfig", "default_ladder", "settings_of"]

# Systems a candidate is timed on (``targets.target_frames``).
TARGETS = ("md-molecule", "md-box", "batch")


def _halved(value: int, times: int, least: int) -> int:
    return max(least, int(value) >> times)


def default_ladder(family: str, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Student sizes for a teacher of ``family`` with ``spec``, most expensive first.

    Each rung is a set of overrides of the teacher's own hyperparameters (so the student keeps
    its cutoff, radial basis and species); rungs equal to an earlier one are dropped.

    MACE (``num_channels`` C, ``max_L``): C/4; C/8; C/8 with L=0; C/16 with L=0 and one
    interaction. Allegro (``num_scalar_features`` S, ``num_tensor_features`` T): S/2, T/2;
    S/4, T/4; S/4, T/4 with ``l_max`` 1; the last with one layer.

    Raises:
        ValueError: a family without a default ladder (pass ``ladder`` explicitly).
    """
    if family == "mace":
        c = int(spec["num_channels"])
        rungs = [
            {"num_channels": _halved(c, 2, 8)},
            {"num_channels": _halved(c, 3, 8)},
            {"num_channels": _halved(c, 3, 8), "max_L": 0},
            {"num_channels": _halved(c, 4, 4), "max_L": 0, "num_interactions": 1},
        ]
    elif family == "allegro":
        s, t = int(spec["num_scalar_features"]), int(spec["num_tensor_features"])
        quarter = {"num_scalar_features": _halved(s, 2, 4), "num_tensor_features": _halved(t, 2, 2)}
        rungs = [
            {"num_scalar_features": _halved(s, 1, 4), "num_tensor_features": _halved(t, 1, 2)},
            quarter,
            {**quarter, "l_max": min(1, int(spec["l_max"]))},
            {**quarter, "l_max": min(1, int(spec["l_max"])), "num_layers": 1},
        ]
    else:
        raise ValueError(f"no default student ladder for family {family!r}; pass ladder")
    unique: list[dict[str, Any]] = []
    for rung in rungs:
        changes = {k: v for k, v in rung.items() if spec.get(k) != v}
        if changes and changes not in unique:
            unique.append(changes)
    return unique


@dataclass(frozen=True)
class CompressConfig:
    """One compression search.

    Attributes:
        model: the input equiforce model file (the teacher of the students).
        train_file: the user's labelled structures (extxyz).
        force_tol: largest acceptable validation force RMSE, meV/Å.
        valid_file: validation structures (labelled); None: ``valid_fraction`` of
            ``train_file`` held out, split by ``seed`` as a training run does.
        test_file: held-out structures, reported only (never used to choose).
        isolated_atoms_file: single-atom energies (E0s) for the students' training.
        energy_tol: largest acceptable validation energy RMSE, meV/atom; None: not checked.
        target: system the candidates are timed on: ``md-molecule`` (the first training
            structure), ``md-box`` (it replicated into a periodic box of about ``box_atoms``
            atoms) or ``batch`` (``batch_size`` training structures as one batch).
        budget_s: wall time the whole search should take, s; what the other stages are
            estimated to leave is shared by the ladder's students as training time.
        out: output folder (state, report, chosen model, student runs, label cache).
        seed: seeds the split, augmentation, audits and student training.
        threads: most torch threads tried (the free-speed stage tries 1 up to this).
        modes: precision modes audited (``equiforce.precision.MODES``).
        backends: kernel backends timed eager (``cueq`` is added where it runs fused).
        compile: try ``torch.compile`` (``equiforce.models.compile``) variants.
        export: try exported ``.pt2`` variants (``equiforce.export``) and export the choice.
        ladder: student rungs (overrides of the teacher's hyperparameters), most expensive
            first; None: ``default_ladder``; empty: no students.
        student_epochs: cap on each student's epochs (None: the time budget alone; set it
            for runs that must repeat bit for bit, since a time budget stops at a
            load-dependent epoch).
        min_student_s: least training time of one student, s.
        student_training: overrides of the students' ``training`` section
            (``equiforce.train.config.TrainConfig``).
        augment: the distillation's ``augment`` section (``DistillConfig``).
        valid_fraction: held-out fraction without ``valid_file``.
        precision_share: a precision mode is audited against ``precision_share`` x the
            tolerances (its RMS deviation from float64 of the same weights).
        drift_tol: largest acceptable change of the NVE energy drift of a precision mode
            against the model's own mode, meV/atom/ps.
        md_steps: NVE steps of the audit (0: no drift check).
        box_atoms: atoms of the ``md-box`` target (about).
        batch_size: structures of the ``batch`` target.
        warmup, repeats: untimed and timed calls per timed variant.
        peer: also time the input's weights in the peer framework of its family (mace-torch
            for MACE, nequip-allegro for Allegro; ``equiforce.workflows.bench.peers``) beside
            the input eager, and report the chosen model's speed-up over it.
        peer_python: peer name -> its Python (``--mace-python`` / ``--nequip-python``; a peer
            not named here: ``$EQUIFORCE_MACE_PYTHON`` / ``$EQUIFORCE_NEQUIP_PYTHON``, then the
            checkout's ``.venv-mace`` / ``.venv-nequip``).
    """

    model: str
    train_file: str
    force_tol: float
    valid_file: str | None = None
    test_file: str | None = None
    isolated_atoms_file: str | None = None
    energy_tol: float | None = None
    target: str = "md-molecule"
    budget_s: float = 3600.0
    out: str = "compress_out"
    seed: int = 0
    threads: int = 1
    modes: tuple[str, ...] = tuple(MODES)
    backends: tuple[str, ...] = ("reference", "fast")
    compile: bool = True
    export: bool = True
    ladder: tuple[Mapping[str, Any], ...] | None = None
    student_epochs: int | None = None
    min_student_s: float = 30.0
    student_training: Mapping[str, Any] = field(default_factory=dict)
    augment: Mapping[str, Any] = field(default_factory=dict)
    valid_fraction: float = 0.1
    precision_share: float = 0.25
    drift_tol: float = 1.0
    md_steps: int = 100
    box_atoms: int = 500
    batch_size: int = 64
    warmup: int = 2
    repeats: int = 10
    peer: bool = False
    peer_python: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        check_field(bool(self.model), "model", "is required")
        check_field(bool(self.train_file), "data", "is required")
        _positive(self.force_tol, "force_tol")
        if self.energy_tol is not None:
            _positive(self.energy_tol, "energy_tol")
        check_field(self.target in TARGETS, "target", f"must be one of {list(TARGETS)}")
        _positive(self.budget_s, "budget_s")
        check_field(self.threads >= 1, "threads", "must be >= 1")
        object.__setattr__(self, "modes", tuple(self.modes))
        unknown = [m for m in self.modes if m not in MODES]
        check_field(not unknown, "modes", f"unknown {unknown}; known: {list(MODES)}")
        object.__setattr__(self, "backends", tuple(self.backends))
        bad = [b for b in self.backends if b not in BACKENDS]
        check_field(bool(self.backends) and not bad, "backends", f"choose from {list(BACKENDS)}")
        if self.ladder is not None:
            check_field(isinstance(self.ladder, (list, tuple)), "ladder", "must be a list")
            for k, rung in enumerate(self.ladder):
                check_field(isinstance(rung, Mapping), f"ladder[{k}]", "must be a mapping")
            object.__setattr__(self, "ladder", tuple(dict(r) for r in self.ladder))
        epochs = self.student_epochs
        check_field(epochs is None or epochs >= 1, "student_epochs", "must be >= 1 or null")
        check_field(self.min_student_s > 0, "min_student_s", "must be > 0")
        check_field(0.0 < self.valid_fraction < 1.0, "valid_fraction", "must be in (0, 1)")
        check_field(0.0 < self.precision_share <= 1.0, "precision_share", "must be in (0, 1]")
        check_field(self.drift_tol >= 0, "drift_tol", "must be >= 0")
        check_field(self.md_steps >= 0, "md_steps", "must be >= 0")
        check_field(self.box_atoms >= 1, "box_atoms", "must be >= 1")
        check_field(self.batch_size >= 1, "batch_size", "must be >= 1")
        check_field(self.warmup >= 1, "warmup", "must be >= 1 (compiled variants compile then)")
        check_field(self.repeats >= 1, "repeats", "must be >= 1")

    @property
    def energy_limit(self) -> float:
        """``energy_tol``, or infinity when energies are not checked, meV/atom."""
        return math.inf if self.energy_tol is None else self.energy_tol


def _positive(value: float, path: str) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    check_field(ok, path, f"must be a finite number > 0, got {value!r}")


def settings_of(config: CompressConfig) -> dict[str, Any]:
    """The settings a resumed search must share with the one it continues (plain JSON)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
