"""The search's plan: its stages, what each does, and an estimate of its wall time.

``plan_search`` needs one measurement only: the input model's ms per energy+forces call on
one user structure and on the target (``equiforce.measure.time_call``, median of 3 after a
warm-up, in this process). Every other figure is an estimate from counts:

* precision audit of a model: ``n_valid x (1 + 2 x modes)`` structure evaluations plus
  ``md_steps x modes`` MD steps, at the per-structure call time;
* free speed: per variant ``STARTUP_S`` plus ``warmup + repeats`` target calls, plus
  ``COMPILE_S + COMPILE_CALLS x call`` when compiled and ``EXPORT_S + EXPORT_CALLS x call``
  when exported (Inductor's compile time grows with the graph, which the call time stands
  for); modes other than the model's own are counted eager only (they are compiled or
  exported only when their eager calls beat the own mode's);
* labels: one teacher call per labelled structure and per MD step, six per atom and start
  for normal-mode Hessians;
* students: each trains for the rung budget: what ``budget_s`` leaves after the estimates
  above (and each student's own audit and free speed, counted at a quarter of the
  teacher's call time), shared evenly, at least ``min_student_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from equiforce.data.batch import collate
from equiforce.data.graph import Configuration, configuration_to_graph
from equiforce.measure.timing import summarize, time_call
from equiforce.models.potential import Potential
from equiforce.workflows.compress.config import CompressConfig
from equiforce.workflows.compress.speed import base_variants, thread_counts
from equiforce.workflows.distill.config import AugmentConfig

__all__ = ["PlanStage", "SearchPlan", "call_seconds", "format_plan", "plan_search"]

STARTUP_S = 5.0  # a timing worker's start (imports, model load, neighbour list), s
COMPILE_S, COMPILE_CALLS = 30.0, 1000.0  # compile time: fixed + this many calls' time
EXPORT_S, EXPORT_CALLS = 45.0, 2000.0  # export time: fixed + this many calls' time
STUDENT_CALL_FRACTION = 0.25  # a student's call time relative to the teacher's (estimate)


@dataclass(frozen=True)
class PlanStage:
    """One stage of the plan: a name, its items (one line each) and its estimate, s."""

    name: str
    items: tuple[str, ...]
    estimate_s: float


@dataclass(frozen=True)
class SearchPlan:
    """The stages in order, the students' training budget and the total estimate.

    Attributes:
        stages: the stages.
        student_budget_s: training time of each ladder student, s.
        ladder: the rungs (overrides of the teacher's hyperparameters).
        call_ms: the input model's measured ms per call: ``structure`` (one user structure)
            and ``target``.
    """

    stages: tuple[PlanStage, ...]
    student_budget_s: float
    ladder: tuple[dict[str, Any], ...]
    call_ms: dict[str, float]

    @property
    def total_s(self) -> float:
        """Estimated wall time of the whole search, s."""
        return sum(stage.estimate_s for stage in self.stages)


def call_seconds(model: Potential, structures: Sequence[Configuration]) -> float:
    """Median seconds of one energy+forces call of ``model`` on ``structures`` as one batch."""
    batch = collate([configuration_to_graph(s, model.type_names, model.r_max) for s in structures])
    model.eval()

    def call() -> None:
        model(batch, compute_forces=True, create_graph=False)

    call()
    return summarize([time_call(call) for _ in range(3)]).median_ms / 1000.0


def _audit_s(config: CompressConfig, n_valid: int, n_test: int, call_s: float) -> float:
    modes = len(set(config.modes)) + 1
    return call_s * (n_valid * (1 + 2 * modes) + config.md_steps * modes + 2 * n_test)


def _speed_s(config: CompressConfig, call_s: float, target_s: float) -> float:
    calls = (config.warmup + config.repeats) * target_s
    total = 0.0
    for variant in base_variants(config):
        total += STARTUP_S + calls
        total += (COMPILE_S + COMPILE_CALLS * call_s) if variant.compile else 0.0
        total += (EXPORT_S + EXPORT_CALLS * call_s) if variant.export else 0.0
    other_modes = max(0, len(set(config.modes)) - 1)
    total += other_modes * len(config.backends) * (STARTUP_S + calls)  # eager only
    threads = thread_counts(config.threads)
    return total + len(threads) * (STARTUP_S + calls + COMPILE_S + COMPILE_CALLS * call_s)


def _labels(config: CompressConfig, n_train: int, n_valid: int, n_atoms: int) -> tuple:
    from equiforce.typed_config import build_section

    augment = build_section(AugmentConfig, dict(config.augment), "augment")
    md, modes = augment.md, augment.normal_modes
    trajectories = len(md.temperatures) * min(md.n_starts, n_train)
    structures = n_train + n_valid + len(augment.rattle.scales) * augment.rattle.copies * n_train
    structures += trajectories * md.n_snapshots + min(modes.n_starts, n_train) * modes.n_samples
    calls = structures + trajectories * md.n_snapshots * md.interval
    calls += min(modes.n_starts, n_train) * 6 * n_atoms
    return structures, calls


def plan_search(
    config: CompressConfig,
    teacher: Potential,
    ladder: Sequence[dict[str, Any]],
    train: Sequence[Configuration],
    valid: Sequence[Configuration],
    test: Sequence[Configuration],
    target: Sequence[Configuration],
) -> SearchPlan:
    """The plan of the search for ``teacher`` on these structures (module docstring)."""
    call_s = call_seconds(teacher, train[:1])
    target_s = (
        call_s if len(target) == 1 and target[0] is train[0] else call_seconds(teacher, target)
    )
    variants = [v.label for v in base_variants(config)]
    stages = [
        PlanStage(
            "input: precision audit",
            tuple(f"mode {m}" for m in dict.fromkeys(config.modes)),
            _audit_s(config, len(valid), len(test), call_s),
        ),
        PlanStage(
            "input: free speed",
            (*variants, *(f"fastest at {n} threads" for n in thread_counts(config.threads))),
            _speed_s(config, call_s, target_s),
        ),
    ]
    student_budget = 0.0
    if ladder:
        n_labelled, calls = _labels(config, len(train), len(valid), train[0].n_atoms)
        stages.append(PlanStage("labels", (f"{n_labelled} structures (cached)",), calls * call_s))
        small_s, small_target = STUDENT_CALL_FRACTION * call_s, STUDENT_CALL_FRACTION * target_s
        evaluation = _audit_s(config, len(valid), len(test), small_s)
        evaluation += _speed_s(config, small_s, small_target)
        spent = sum(stage.estimate_s for stage in stages)
        left = config.budget_s - spent - len(ladder) * evaluation
        student_budget = max(config.min_student_s, left / len(ladder))
        stages.append(
            PlanStage(
                "students (most expensive first; stop at the first that fails)",
                tuple(_rung_text(r) for r in ladder),
                len(ladder) * (student_budget + evaluation),
            )
        )
    call_ms = {"structure": 1000.0 * call_s, "target": 1000.0 * target_s}
    return SearchPlan(tuple(stages), student_budget, tuple(dict(r) for r in ladder), call_ms)


def _rung_text(rung: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in rung.items())


def format_plan(plan: SearchPlan, config: CompressConfig) -> str:
    """The plan as text: stages, items and estimates, the budget and the total."""
    energy = "" if config.energy_tol is None else f", energy <= {config.energy_tol:g} meV/atom"
    lines = [
        f"compress {config.model}: validation force RMSE <= {config.force_tol:g} meV/Å{energy}, "
        f"target {config.target}",
        f"input model: {plan.call_ms['structure']:.2f} ms per call on one structure, "
        f"{plan.call_ms['target']:.2f} ms on the target",
    ]
    for k, stage in enumerate(plan.stages, 1):
        lines.append(f"{k}. {stage.name}: ~{_duration(stage.estimate_s)}")
        lines += [f"     - {item}" for item in stage.items]
    if plan.ladder:
        lines.append(f"each student trains for {plan.student_budget_s:.0f} s")
    lines.append(
        f"estimated total: ~{_duration(plan.total_s)} (budget {_duration(config.budget_s)})"
    )
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"
