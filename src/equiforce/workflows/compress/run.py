"""``compress(config)``: the fastest model that keeps the user's accuracy (``equiforce compress``).

Steps, each recorded in ``<out>/state.json`` once finished (``state.SearchState``) so that
``--resume`` after a kill continues with the first unfinished one:

1. the input model: precision audit on the validation structures (``precision``), its test
   errors per kept mode, then free speed (``speed``) per kept mode on the target;
2. the labels (``students.label_student_data``: augmentation + teacher labels, cached);
3. per ladder rung, most expensive first: train the student (``students.train_student``),
   then its audit and free speed as in 1; the ladder stops at the first rung none of whose
   candidates is within the tolerances;
4. the choice: the fastest candidate whose *validation* errors are within ``force_tol`` (and
   ``energy_tol``) in a mode the audit kept; written as ``<out>/model.pt`` (the model in
   that mode) and ``<out>/model.pt2`` (exported), with the report
   (``report``). If no candidate is within the tolerances the report is still written and
   ``CompressRefused`` names the best validation errors found.

Output folder: ``state.json``, ``target.npz`` (the timed system), ``labels/`` (label cache),
``distill/data/`` (student files), ``students/<rung>/`` (training runs), ``timing/``,
``report.{json,md}``, ``pareto.png``, ``model.pt``, ``model.pt2``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from equiforce.data.extxyz import read_configurations
from equiforce.data.graph import Configuration
from equiforce.kernels.registry import resolve_backend
from equiforce.models.io import load_model, save_model
from equiforce.models.potential import Potential
from equiforce.train.evaluate import errors_of, predict
from equiforce.workflows.bench import peers as bench_peers
from equiforce.workflows.compress.config import CompressConfig, default_ladder, settings_of
from equiforce.workflows.compress.plan import SearchPlan, format_plan, plan_search
from equiforce.workflows.compress.precision import accepted_modes, audit_model, own_mode
from equiforce.workflows.compress.report import write_report
from equiforce.workflows.compress.speed import EXPORT_BACKEND, fastest, free_speed, n_variants
from equiforce.workflows.compress.state import SearchState
from equiforce.workflows.compress.students import (
    distill_config,
    label_student_data,
    rung_name,
    student_model,
    train_student,
)
from equiforce.workflows.compress.targets import target_frames, write_target
from equiforce.workflows.compress.timing import ExecVariant, time_variants
from equiforce.workflows.distill.data import configuration_to_atoms, read_structures

__all__ = ["CompressRefused", "CompressResult", "compress", "plan"]

LOG = logging.getLogger(__name__)

INPUT = "input"


class CompressRefused(ValueError):
    """No candidate is within the tolerances; ``best`` holds the lowest validation errors."""

    def __init__(self, message: str, best: dict[str, Any]):
        super().__init__(message)
        self.best = best


@dataclass(frozen=True)
class CompressResult:
    """Outcome of ``compress``.

    Attributes:
        out: the output folder.
        candidates: every candidate row (``report`` module).
        chosen: the chosen row.
        model_path: the chosen model file.
        package_path: its exported package, or None.
        reports: ``json``, ``markdown`` and ``plot`` paths.
    """

    out: Path
    candidates: list[dict[str, Any]]
    chosen: dict[str, Any]
    model_path: Path
    package_path: Path | None
    reports: dict[str, Path]


@dataclass(frozen=True)
class _Data:
    train: list[Configuration]
    valid: list[Configuration]
    test: list[Configuration]


def _read_data(config: CompressConfig) -> _Data:
    from equiforce.train.config import DataConfig

    data = DataConfig(
        train_file=config.train_file,
        valid_file=config.valid_file,
        valid_fraction=config.valid_fraction,
    )
    train, valid = read_structures(data, config.seed)
    test = read_configurations(config.test_file) if config.test_file else []
    source = config.valid_file or f"{config.train_file} (held-out part)"
    for k, structure in enumerate(valid):
        missing = "forces" if structure.forces is None else None
        if config.energy_tol is not None and structure.energy is None:
            missing = "energy"
        if missing:
            raise ValueError(
                f"{source}: validation frame {k} has no {missing} label; compress checks the "
                "tolerances on labelled validation structures"
            )
    return _Data(list(train), list(valid), list(test))


def _ladder(config: CompressConfig, teacher: Potential) -> list[dict[str, Any]]:
    if config.ladder is not None:
        return [dict(rung) for rung in config.ladder]
    return default_ladder(teacher.family, teacher.spec_dict())


def plan(config: CompressConfig) -> tuple[SearchPlan, str]:
    """The dry run (``--plan``): the plan and its text; nothing is trained or written."""
    data = _read_data(config)
    teacher = load_model(config.model).eval()
    ladder = _ladder(config, teacher)
    target = _target(config, data)
    result = plan_search(config, teacher, ladder, data.train, data.valid, data.test, target)
    return result, format_plan(result, config)


def _target(config: CompressConfig, data: _Data) -> list[Configuration]:
    if config.target == "md-molecule":
        return data.train[:1]
    from equiforce.data.graph import atoms_to_configuration

    frames = target_frames(
        config.target,
        [configuration_to_atoms(c) for c in data.train],
        config.box_atoms,
        config.batch_size,
    )
    return [atoms_to_configuration(a, f"target frame {k}") for k, a in enumerate(frames)]


class _Search:
    """One search's shared context: settings, data, state, target file, progress."""

    def __init__(
        self,
        config: CompressConfig,
        state: SearchState,
        data: _Data,
        progress: bool,
        on_step: Callable[[str], None] | None,
    ):
        self.config, self.state, self.data = config, state, data
        self.progress, self.on_step = progress, on_step
        self.out = Path(config.out)
        frames = target_frames(
            config.target,
            [configuration_to_atoms(c) for c in data.train],
            config.box_atoms,
            config.batch_size,
        )
        self.frames_file = write_target(frames, self.out / "target.npz")

    def step(self, name: str, work: Callable[[], Any]) -> Any:
        """The result of step ``name``: from the state file, or computed and recorded."""
        if name in self.state:
            return self.state[name]
        result = self.state.record(name, work())
        if self.on_step is not None:
            self.on_step(name)
        return result

    def bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)


def _test_errors(model_file: str, mode: str, test: Sequence[Configuration]) -> dict[str, float]:
    if not test:
        return {}
    model = load_model(model_file, precision=mode)
    metrics = errors_of(test, predict(model, test, batch_size=16)).metrics
    out = {"test_forces_rmse": metrics["forces"].rmse} if "forces" in metrics else {}
    if "energy_per_atom" in metrics:
        out["test_energy_rmse"] = metrics["energy_per_atom"].rmse
    return out


def _precision_step(search: _Search, name: str, model_file: str, model: Potential) -> dict:
    config, data = search.config, search.data
    mode = own_mode(model)
    with search.bar(1, f"{name}: precision audit") as bar:
        audits = audit_model(model, data.valid, config)
        bar.update()
    verdicts = accepted_modes(audits, mode, config)
    kept = [m for m, v in verdicts.items() if v.startswith("kept")]
    tests = {m: _test_errors(model_file, m, data.test) for m in kept}
    return {
        "own_mode": mode,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "audits": audits,
        "verdicts": verdicts,
        "test": tests,
    }


def _evaluate_model(search: _Search, name: str, model_file: str, model: Potential) -> list[dict]:
    """Audit, test errors and free speed of one model; its candidate rows."""
    precision = search.step(
        f"{name}:precision", lambda: _precision_step(search, name, model_file, model)
    )
    mode = precision["own_mode"]
    kept = [m for m, v in precision["verdicts"].items() if v.startswith("kept")]
    rows: list[dict[str, Any]] = []
    own_eager_ms = None
    for current in [mode] + [m for m in kept if m != mode]:

        def work(current: str = current, beat: float | None = own_eager_ms) -> list[dict]:
            total = n_variants(search.config)
            with search.bar(total, f"{name} {current}: free speed") as bar:
                return free_speed(
                    model_file,
                    current,
                    search.frames_file,
                    search.config,
                    search.out / "timing" / name / current,
                    beat_ms=None if current == mode else beat,
                    step=lambda label: bar.update(),
                )

        timed = search.step(f"{name}:speed:{current}", work)
        if current == mode:
            eager = [r for r in timed if not (r["variant"]["compile"] or r["variant"]["export"])]
            best = fastest(eager)
            own_eager_ms = None if best is None else best["ms_per_call"]
        rows += [_row(search.config, name, model_file, current, precision, r) for r in timed]
    return rows


def _row(
    config: CompressConfig, name: str, model_file: str, mode: str, precision: dict, timed: dict
) -> dict[str, Any]:
    audit = precision["audits"][mode]
    row = {
        "name": f"{name}/{mode}/{timed['label']}",
        "model": name,
        "model_file": model_file,
        "mode": mode,
        **timed,
        "n_parameters": precision["n_parameters"],
        "valid_energy_rmse": audit["energy_rmse_meV_per_atom"],
        "valid_forces_rmse": audit["forces_rmse_meV_per_A"],
        **precision["test"].get(mode, {}),
    }
    problems = []
    if "error" in timed:
        problems.append(f"did not run: {timed['error']}")
    if row["valid_forces_rmse"] > config.force_tol:
        problems.append(f"valid F {row['valid_forces_rmse']:.3g} > {config.force_tol:g} meV/Å")
    energy = row["valid_energy_rmse"]
    if config.energy_tol is not None and (energy is None or energy > config.energy_tol):
        problems.append(f"valid E {energy:.3g} > {config.energy_tol:g} meV/atom")
    row["accepted"] = not problems
    row["reason"] = "; ".join(problems) or "within the tolerances"
    return row


def _students(
    search: _Search, teacher: Potential, ladder: list[dict], budget_s: float, notes: list[str]
) -> list[dict]:
    """Label once, then walk the ladder; the students' candidate rows."""
    config = search.config
    distill = distill_config(config, teacher)
    data = label_student_data(distill, search.progress)  # a resumed search reads the cache
    search.step("labels", lambda: dict(data.counts))
    rows: list[dict] = []
    with search.bar(len(ladder), "students") as bar:
        for k, rung in enumerate(ladder):
            name = rung_name(rung)
            model_config = student_model(teacher, rung, f"ladder[{k}]")

            def work(name: str = name, model_config=model_config) -> dict:
                start = time.perf_counter()
                path = train_student(config, distill, data, model_config, name, budget_s)
                return {"model_file": str(path), "train_s": time.perf_counter() - start}

            trained = search.step(f"student:{name}", work)
            student = load_model(trained["model_file"]).eval()
            student_rows = _evaluate_model(search, name, trained["model_file"], student)
            rows += student_rows
            bar.update()
            if not any(r["accepted"] for r in student_rows):
                best = min(r["valid_forces_rmse"] for r in student_rows)
                notes.append(
                    f"ladder stopped at {name}: no candidate within the tolerances (best valid "
                    f"F {best:.3g} meV/Å); cheaper rungs were not trained"
                )
                break
    return rows


def _baseline(rows: list[dict], mode: str) -> dict | None:
    """The input as the user runs it: own mode, eager, one thread, the default backend
    (``auto``) when it was timed, else the first backend timed."""
    eager = [
        row
        for row in rows
        if row["model"] == INPUT
        and row["mode"] == mode
        and "ms_per_call" in row
        and not (row["variant"]["compile"] or row["variant"]["export"])
        and row["variant"]["threads"] == 1
    ]
    default = [row for row in eager if row["variant"]["backend"] == resolve_backend("auto")]
    return (default or eager or [None])[0]


def _write_outputs(
    config: CompressConfig, chosen: dict, notes: list[str]
) -> tuple[Path, Path | None]:
    out = Path(config.out)
    model = load_model(chosen["model_file"], precision=chosen["mode"])
    model_path = save_model(model, out / "model.pt")
    if not config.export:
        return model_path, None
    from equiforce.export import ExportError, export_potential

    try:
        export_potential(model, out / "model.pt2", backend=EXPORT_BACKEND)
    except ExportError as err:
        notes.append(f"export of the chosen model failed: {err}")
        return model_path, None
    return model_path, out / "model.pt2"


def _refusal(config: CompressConfig, rows: list[dict]) -> CompressRefused:
    valid = [r for r in rows if r.get("valid_forces_rmse") is not None]
    by_force = min(valid, key=lambda r: r["valid_forces_rmse"])
    best = {"forces": (by_force["name"], by_force["valid_forces_rmse"])}
    text = (
        f"no candidate is within the tolerance: the best validation force RMSE is "
        f"{by_force['valid_forces_rmse']:.4g} meV/Å ({by_force['name']}) > {config.force_tol:g}"
    )
    energies = [r for r in valid if r.get("valid_energy_rmse") is not None]
    if energies:
        by_energy = min(energies, key=lambda r: r["valid_energy_rmse"])
        best["energy"] = (by_energy["name"], by_energy["valid_energy_rmse"])
        limit = "" if config.energy_tol is None else f" (tolerance {config.energy_tol:g})"
        text += (
            f"; the best validation energy RMSE is {by_energy['valid_energy_rmse']:.4g} "
            f"meV/atom ({by_energy['name']}){limit}"
        )
    return CompressRefused(text + f"; see {Path(config.out) / 'report.md'}", best)


def compress(
    config: CompressConfig,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> CompressResult:
    """Search for the fastest model within the tolerances (module docstring).

    Args:
        config: the search.
        resume: continue the search in ``config.out`` (its settings must be unchanged).
        progress: tqdm bars per stage (with ETA).
        on_step: called with each step's name once it is recorded (e.g. to stop a test).

    Raises:
        CompressRefused: no candidate within the tolerances (the report is written).
        FileExistsError: ``config.out`` holds a search and ``resume`` is not set.
        ValueError: bad data, or a resumed search whose settings changed.
    """
    started = time.perf_counter()
    data = _read_data(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    state = SearchState(out, settings_of(config), resume)
    search = _Search(config, state, data, progress, on_step)
    teacher = load_model(config.model).eval()
    ladder = _ladder(config, teacher)
    planned = search.step("plan", lambda: _plan_record(config, teacher, ladder, data))
    peer = _peer_of(config, teacher)
    notes: list[str] = []
    rows = _evaluate_model(search, INPUT, config.model, teacher)
    mode = own_mode(teacher)
    baseline = _baseline(rows, mode)
    peer_timing = None
    if peer is not None and baseline is not None:
        peer_timing = search.step(
            "input:peer", lambda: _time_peer(search, peer, mode, baseline["variant"])
        )
    if ladder:
        rows += _students(search, teacher, ladder, planned["student_budget_s"], notes)
    for row in rows:
        ok = baseline is not None and "ms_per_call" in row
        row["speedup"] = baseline["ms_per_call"] / row["ms_per_call"] if ok else None
    accepted = [r for r in rows if r["accepted"]]
    chosen = min(accepted, key=lambda r: r["ms_per_call"]) if accepted else None
    summary = _summary(config, chosen, baseline, planned, notes, started)
    if peer_timing is not None:
        summary.update(_peer_summary(peer_timing, chosen))
    if chosen is None:
        write_report(summary, rows, config.force_tol, out)
        raise _refusal(config, rows)
    model_path, package = _write_outputs(config, chosen, notes)
    summary["outputs"] = ", ".join(str(p) for p in (model_path, package) if p is not None)
    summary["cost"] = f"{time.perf_counter() - started:.0f} s in this invocation"
    reports = write_report(summary, rows, config.force_tol, out)
    return CompressResult(out, rows, chosen, model_path, package, reports)


def _peer_of(config: CompressConfig, teacher: Potential) -> str | None:
    """The peer framework to time the input in (None: not asked for).

    Raises:
        ValueError: the input's family has no peer.
        FileNotFoundError: the peer's Python is not found (the message says how to get it).
    """
    if not config.peer:
        return None
    peer = bench_peers.peer_for_family(teacher.family)
    bench_peers.peer_python(peer, config.peer_python.get(peer.name))  # fail before the search
    return peer.name


def _time_peer(search: _Search, peer: str, mode: str, variant: dict) -> dict[str, Any]:
    """The input eager (its baseline variant) and ``peer`` on the same weights, interleaved."""
    config = search.config
    ours, theirs = time_variants(
        config.model,
        mode,
        search.frames_file,
        [ExecVariant(**variant), ExecVariant(variant["backend"], peer=peer)],
        config.warmup,
        config.repeats,
        search.out / "timing" / INPUT / "peer",
        peer_python=config.peer_python.get(peer),
    )
    if "error" in theirs:
        raise RuntimeError(f"{peer} on the input's weights failed: {theirs['error']}")
    if "error" in ours:
        raise RuntimeError(f"the input beside {peer} failed: {ours['error']}")
    return {"peer": peer, "peer_ms": theirs["ms_per_call"], "input_ms": ours["ms_per_call"]}


def _peer_summary(timing: dict[str, Any], chosen: dict | None) -> dict[str, str]:
    """Summary lines: the input against its peer, and the chosen model against the peer."""
    peer, peer_ms, input_ms = timing["peer"], timing["peer_ms"], timing["input_ms"]
    lines = {
        "peer": f"{peer} on the input's weights: {peer_ms:.3g} ms per call, the input eager "
        f"{input_ms:.3g} ms in the same interleaved run ({peer_ms / input_ms:.2f}x)"
    }
    if chosen is not None:
        lines["speedup_over_peer"] = (
            f"{peer_ms / chosen['ms_per_call']:.2f}x over {peer} on the input's weights"
        )
    return lines


def _plan_record(config, teacher, ladder, data) -> dict[str, Any]:
    target = _target(config, data)
    planned = plan_search(config, teacher, ladder, data.train, data.valid, data.test, target)
    return {
        "student_budget_s": planned.student_budget_s,
        "estimate_s": planned.total_s,
        "text": format_plan(planned, config),
    }


def _summary(config, chosen, baseline, planned, notes, started) -> dict[str, Any]:
    energy = "" if config.energy_tol is None else f", E <= {config.energy_tol:g} meV/atom"
    summary: dict[str, Any] = {
        "input": config.model,
        "target": config.target,
        "tolerance": f"validation F <= {config.force_tol:g} meV/Å{energy}",
        "plan_estimate_s": planned["estimate_s"],
        "notes": notes,
    }
    if baseline is not None:
        summary["baseline"] = baseline["name"]
    if chosen is not None:
        summary["chosen"] = chosen["name"]
        summary["why"] = (
            f"fastest of the candidates within the tolerances ({chosen['ms_per_call']:.3g} ms "
            f"per call on the target; valid F {chosen['valid_forces_rmse']:.3g} meV/Å)"
        )
        if chosen.get("speedup") is not None:
            summary["speedup"] = (
                f"{chosen['speedup']:.2f}x over the input ({baseline['ms_per_call']:.3g} ms, "
                f"{baseline['name']})"
            )
    summary["cost"] = f"{time.perf_counter() - started:.0f} s in this invocation"
    return summary
