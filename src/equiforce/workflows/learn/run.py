"""``learn(config)``: the library entry point of ``equiforce learn``.

Round 0 makes the starting committee (``start.models`` as they are, fine-tuned copies of one
model, or members trained from scratch on ``data.train_file``). Round ``k >= 1``:

1. MD (``md``) with the committee of round ``k - 1`` and an ``UncertaintyWatch``: every frame
   whose largest per-atom force spread exceeds ``selection.threshold`` is flagged; the MD stops
   after ``selection.stop_after`` of them. With ``md.walkers > 1`` that many MDs from
   different starts run at once (``equiforce.md.run_batched_md``, one watch each, a walker
   stopping alone). No flagged frame in ``md.n_steps`` steps (of any walker): the loop has
   converged and ends.
2. Selection: the ``selection.max_frames`` most uncertain flagged frames of all walkers, at
   least ``selection.min_separation`` steps apart within a walker (``selection.strategy:
   random``, the control: as many frames of the whole MDs drawn at random, whatever their
   spread).
3. Labels from the teacher (distillation's teachers: any ASE calculator or an equiforce model),
   cached per structure in the label store (``labels``), so a rerun never labels twice.
4. Fine-tuning: every member continues from its round ``k - 1`` weights
   (``training.init_model``) on the grown training file.

With ``selection.calibration`` each round's committee (round 0's too) is calibrated on
``data.valid_file`` (``workflows.calibration``: one force scale or one per species, kept in
the round's record as ``spread_scales``), and the next round's MD compares the calibrated
spread, an expected force error, with the threshold.

Everything of a round stays in ``output_dir/round_<k>/``: ``md/`` (trajectory, summary,
``uncertain.xyz``, ``md.png``; walkers: ``md_<w>.traj`` and ``uncertain_<w>.xyz`` each),
``uncertainty.png``, ``selected.xyz`` (the new labelled frames),
``data/train.xyz`` (the grown training file), ``committee/`` (the fine-tuned members,
``committee.json``) and ``round.json`` (written last: the round is done). A rerun (after a kill)
skips the rounds with a ``round.json`` and continues the interrupted one: its MD again (seeded,
so the same frames), labels from the cache, members resumed from their checkpoints. The loop's
settings are kept in ``learn_settings.json``; a rerun may only change ``max_rounds``, the
committee's workers and threads and the progress bars.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from equiforce.files import atomic_write_text
from equiforce.md.committee import CommitteeCalculator, committee_members
from equiforce.md.dynamics import NPTSettings, run_md
from equiforce.md.report import format_batched_summary, format_md_summary, plot_batched_md, plot_md
from equiforce.md.uncertainty import FlaggedFrame, UncertaintyWatch, plot_uncertainty
from equiforce.train.config import RunConfig
from equiforce.train.run import changed_settings
from equiforce.workflows.calibration import file_committee_errors, fit_spread_scales
from equiforce.workflows.committee import train_committee
from equiforce.workflows.distill.data import (
    Frame,
    labels_to_record,
    record_to_labels,
    write_frames,
)
from equiforce.workflows.distill.store import RecordStore, fill_store, store_dir, structure_key
from equiforce.workflows.distill.teacher import Teacher, load_teacher
from equiforce.workflows.learn.config import LearnConfig
from equiforce.workflows.learn.report import plot_rounds

LOG = logging.getLogger(__name__)

ROUND_FILE = "round.json"
SETTINGS_FILE = "learn_settings.json"
UNCERTAIN_FRAMES = "uncertain.xyz"
# Settings a rerun may change: they do not change what the rounds compute.
RERUN_CHANGES = (
    "max_rounds",
    "committee.workers",
    "committee.threads_per_worker",
    "training.progress_bar",
)


@dataclass(frozen=True)
class LearnResult:
    """Outcome of ``learn``.

    Attributes:
        output_dir: the loop's folder.
        rounds: one ``round.json`` record per round, round 0 first.
        converged: whether the last round's MD ran its length under the threshold.
        models: the final committee's model files.
        report: ``learn.json`` (settings and rounds).
        figure: ``learn.png`` (uncertainty and data size per round).
    """

    output_dir: Path
    rounds: list[dict[str, Any]]
    converged: bool
    models: list[Path]
    report: Path
    figure: Path


def learn(config: LearnConfig, progress: bool = False) -> LearnResult:
    """Run (or continue) the active-learning loop; see the module docstring.

    Args:
        config: the loop.
        progress: show MD and labelling progress bars.

    Raises:
        TeacherError: the teacher is unusable.
        ValueError: a rerun with changed settings, or bad data.
    """
    from ase.io import read

    out = Path(config.output_dir)
    _check_settings(out / SETTINGS_FILE, config)
    starts = read(config.md.structures, index=":")
    teacher = load_teacher(config.teacher, starts[0])
    LOG.info("teacher %s (%s)", teacher.description, teacher.fingerprint[:24])
    rounds = [_round_zero(config)]
    for k in range(1, config.max_rounds + 1):
        done = out / f"round_{k}" / ROUND_FILE
        if done.exists():
            record = json.loads(done.read_text())
        else:
            walkers = config.md.walkers
            firsts = [starts[((k - 1) * walkers + w) % len(starts)] for w in range(walkers)]
            record = _round(config, k, rounds[-1], firsts, teacher, progress)
        rounds.append(record)
        if record["converged"]:
            break
    converged = rounds[-1].get("converged", False)
    final = rounds[-1] if not converged else rounds[-2]
    report = {"settings": _settings(config), "converged": converged, "rounds": rounds}
    report_path = atomic_write_text(json.dumps(report, indent=2) + "\n", out / "learn.json")
    figure = plot_rounds(rounds, config.selection.threshold, out / "learn.png")
    return LearnResult(
        out, rounds, converged, [Path(p) for p in final["models"]], report_path, figure
    )


def _settings(config: LearnConfig) -> dict[str, Any]:
    """The loop's settings as plain JSON values."""
    values = dataclasses.asdict(config)
    values["model"] = config.model.to_dict()
    return json.loads(json.dumps(values, default=str))


def _check_settings(path: Path, config: LearnConfig) -> None:
    """Write the settings on the first run; refuse a rerun that changed them."""
    settings = _settings(config)
    if not path.exists():
        atomic_write_text(json.dumps(settings, indent=2) + "\n", path)
        return
    changed = changed_settings(json.loads(path.read_text()), settings, RERUN_CHANGES)
    if changed:
        raise ValueError(
            f"{path.parent} holds a loop with other settings ({path}); only "
            f"{', '.join(RERUN_CHANGES)} may change on a rerun: " + "; ".join(changed)
        )
    atomic_write_text(json.dumps(settings, indent=2) + "\n", path)


def _round_zero(config: LearnConfig) -> dict[str, Any]:
    """The starting committee and training file (``round_0/``)."""
    folder = Path(config.output_dir) / "round_0"
    done = folder / ROUND_FILE
    if done.exists():
        return json.loads(done.read_text())
    train_file = folder / "data" / "train.xyz"
    train_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(config.data.train_file, train_file)
    start = [str(p.resolve()) for p in committee_members(config.start.models)]
    if len(start) not in (0, 1, config.committee.size):
        raise ValueError(
            f"start.models: {len(start)} models, but committee.size is {config.committee.size} "
            "(give 0, 1 or that many)"
        )
    if len(start) == config.committee.size:
        models = start
    else:
        init = start * config.committee.size if start else None
        models = _train(config, folder, train_file, init)
    record = {
        "round": 0,
        "converged": False,
        "models": models,
        "spread_scales": _spread_scales(config, models),
        "train_file": str(train_file),
        "n_train_frames": _count_frames(train_file),
    }
    atomic_write_text(json.dumps(record, indent=2) + "\n", done)
    return record


def _train(config: LearnConfig, folder: Path, train_file: Path, init_models) -> list[str]:
    """Train (or fine-tune) the committee of a round on ``train_file``; its model files."""
    run = RunConfig(
        output_dir=str(folder / "committee"),
        data=dataclasses.replace(config.data, train_file=str(train_file)),
        model=config.model,
        training=config.training,
        seed=config.seed,
    )
    result = train_committee(run, config.committee, resume=True, init_models=init_models)
    return [str(p.resolve()) for p in result.model_paths]


def _spread_scales(config: LearnConfig, models: list[str]) -> dict[str, Any]:
    """The committee's spread scales on ``data.valid_file`` (``selection.calibration``; the
    ``CommitteeCalculator`` keyword arguments, none for the raw spread)."""
    if config.selection.calibration is None:
        return {}
    errors = file_committee_errors(CommitteeCalculator(models), config.data.valid_file)
    per_species = config.selection.calibration == "per-species"
    scales = fit_spread_scales(errors, per_species)
    return {key: value for key, value in scales.items() if value is not None}


def _round(
    config: LearnConfig, k: int, previous: dict[str, Any], starts, teacher: Teacher, progress: bool
) -> dict[str, Any]:
    """Round ``k`` from ``starts`` (one structure per walker): MD, selection, labels,
    fine-tuning; returns (and writes) its record."""
    folder = Path(config.output_dir) / f"round_{k}"
    models, scales = previous["models"], previous.get("spread_scales", {})
    watches, trajectories, md_figures = _explore(
        config, k, folder / "md", starts, models, scales, progress
    )
    summaries = [watch.summary() for watch in watches]
    plot_uncertainty(summaries, config.md.timestep_fs, folder / "uncertainty.png")
    n_flagged = sum(summary.n_flagged for summary in summaries)
    traces = np.concatenate([summary.trace_max for summary in summaries])
    record: dict[str, Any] = {
        "round": k,
        "md": md_figures,
        "n_flagged": n_flagged,
        "max_force_uncertainty": float(traces.max()),
        "mean_max_force_uncertainty": float(traces.mean()),
        "converged": n_flagged == 0,
        "threshold_below_spread": any(
            _threshold_below_spread(s, config.md.n_steps) for s in summaries
        ),
    }
    _warn_of_short_runs(config, k, summaries)
    if record["converged"]:
        LOG.info("round %d: MD ran %d steps under the threshold", k, config.md.n_steps)
        record.update(models=previous["models"], train_file=previous["train_file"])
        record["spread_scales"] = previous.get("spread_scales", {})
        record["n_train_frames"] = previous["n_train_frames"]
        atomic_write_text(json.dumps(record, indent=2) + "\n", folder / ROUND_FILE)
        return record
    chosen = _choose(config, k, watches, trajectories)
    frames, computed = _label(config, teacher, [f.atoms for _, f in chosen], progress)
    selected = write_frames(frames, folder / "selected.xyz", config.data)
    train_file = folder / "data" / "train.xyz"
    text = Path(previous["train_file"]).read_text() + selected.read_text()
    atomic_write_text(text, train_file)
    models = _train(config, folder, train_file, previous["models"])
    record.update(
        selected_walkers=[w for w, _ in chosen],
        selected_steps=[f.step for _, f in chosen],
        selected_uncertainty=[f.max_force_uncertainty for _, f in chosen],
        labels_computed=computed,
        models=models,
        spread_scales=_spread_scales(config, models),
        train_file=str(train_file),
        n_train_frames=_count_frames(train_file),
    )
    LOG.info(
        "round %d: %d uncertain frames, %d labelled, %d training frames",
        k,
        n_flagged,
        len(chosen),
        record["n_train_frames"],
    )
    atomic_write_text(json.dumps(record, indent=2) + "\n", folder / ROUND_FILE)
    return record


def _warn_of_short_runs(config: LearnConfig, k: int, summaries) -> None:
    """Warn of each walker of round ``k`` whose MD its watch stopped because the threshold
    sits below the committee's spread (``_threshold_below_spread``)."""
    for w, summary in enumerate(summaries):
        if _threshold_below_spread(summary, config.md.n_steps):
            LOG.warning(
                "round %d%s: %d of the MD's %d steps were over selection.threshold = %g eV/Å, "
                "so it stopped after selection.stop_after = %d of them: the round explored %d "
                "of md.n_steps = %d steps. Raise the threshold (or calibrate the committee, "
                "selection.calibration), or set stop_after > md.n_steps (the start and every "
                "step can be flagged) (docs/active_learning.md, 'Against random frames')",
                k,
                f", walker {w}" if len(summaries) > 1 else "",
                summary.n_flagged,
                len(summary.trace_step),
                config.selection.threshold,
                config.selection.stop_after,
                int(summary.trace_step[-1]),
                config.md.n_steps,
            )


def _choose(config: LearnConfig, k: int, watches, trajectories) -> list:
    """Round ``k``'s frames to label, ``(walker, frame)`` pairs: the most uncertain flagged
    frames, or (``selection.strategy: random``) frames of the walkers' trajectories in a
    seeded random order; at most ``selection.max_frames``, ``min_separation`` steps apart."""
    selection = config.selection
    if selection.strategy == "random":
        candidates = [
            (w, frame)
            for w, (watch, path) in enumerate(zip(watches, trajectories, strict=True))
            for frame in trajectory_frames(path, config.md, watch.trace)
        ]
        rng = np.random.default_rng(config.seed + k)
        ordered = [candidates[i] for i in rng.permutation(len(candidates))]
        return separated(ordered, selection.max_frames, selection.min_separation)
    flagged = [watch.flagged for watch in watches]
    return select_frames(flagged, selection.max_frames, selection.min_separation)


def _explore(
    config: LearnConfig,
    k: int,
    folder: Path,
    starts,
    models: list[str],
    scales: dict[str, Any],
    progress: bool,
):
    """The round's MD of each walker (velocity seeds ``seed + k * walkers + w``) with an
    uncertainty watch, the committee ``models`` with spread ``scales``; (watches, trajectory
    paths, MD figures)."""
    md, selection = config.md, config.selection
    several = len(starts) > 1

    def watch(w: int) -> UncertaintyWatch:
        name = f"uncertain_{w:04d}.xyz" if several else UNCERTAIN_FRAMES
        stop_after = None if selection.strategy == "random" else selection.stop_after
        return UncertaintyWatch(selection.threshold, "flag", folder / name, stop_after)

    watches = [watch(w) for w in range(len(starts))]
    paths = [folder / (f"md_{w:04d}.traj" if several else "md.traj") for w in range(len(starts))]
    temperature = md.temperature_K  # one, or one per walker
    if not several and isinstance(temperature, tuple):
        (temperature,) = temperature
    npt = _npt(md, several)
    run = {
        "ensemble": "nvt" if npt is None else "npt",
        "npt": npt,
        "temperature_K": temperature,
        "timestep_fs": md.timestep_fs,
        "n_steps": md.n_steps,
        "friction": md.friction,
        "log_interval": md.log_interval,
        "seed": config.seed + k * md.walkers,
        "progress": progress,
    }
    if several:
        from equiforce.md.batched import run_batched_md
        from equiforce.md.torchsim import CommitteeModel

        committee = CommitteeModel(models, compute_stress=npt is not None, **scales)
        results = run_batched_md(starts, committee, trajectory_paths=paths, watches=watches, **run)
        formulas = [atoms.get_chemical_formula() for atoms in starts]
        LOG.info("round %d MD:\n%s", k, format_batched_summary(results, formulas))
        plot_batched_md(results, folder / "md.png")
        figures = {"walkers": [result.summary() for result in results]}
    else:
        calculator = CommitteeCalculator(models, **scales)
        result = run_md(starts[0], calculator, trajectory_path=paths[0], watch=watches[0], **run)
        results = [result]
        LOG.info("round %d MD:\n%s", k, format_md_summary(result))
        plot_md(result, folder / "md.png")
        figures = result.summary()
    atomic_write_text(json.dumps(figures, indent=2) + "\n", folder / "md_summary.json")
    summaries = [result.summary() for result in results]
    record = {
        "n_steps": max(s["n_steps"] for s in summaries),
        "temperature_mean_K": float(np.mean([s["temperature_mean_K"] for s in summaries])),
        "bond_broken": any(s["bond_broken"] for s in summaries),
    }
    if several:  # each walker's own figures
        keys = ("n_steps", "temperature_target_K", "temperature_mean_K", "bond_broken")
        record["walkers"] = [
            {**{key: s[key] for key in keys}, "n_flagged": s["uncertainty"]["n_flagged"]}
            for s in summaries
        ]
    return watches, paths, record


def _npt(md, several: bool) -> NPTSettings | list[NPTSettings] | None:
    """The exploration's NPT coupling (``md.pressure_GPa`` set; a list of one per walker
    for a pressure ladder of ``several``), else None."""
    if md.pressure_GPa is None:
        return None
    pressures = md.pressure_GPa if isinstance(md.pressure_GPa, tuple) else (md.pressure_GPa,)
    each = [
        NPTSettings(
            pressure_GPa=pressure,
            barostat=md.barostat,
            anisotropic=md.anisotropic,
            barostat_time_fs=md.barostat_time_fs,
        )
        for pressure in pressures
    ]
    return each if several and len(each) > 1 else each[0]


def _threshold_below_spread(summary, n_steps: int) -> bool:
    """Whether the watch stopped an MD short of its ``n_steps`` with most steps over the
    threshold: then ``stop_after``, not the MD's length, set how far the round explored."""
    cut_short = summary.stopped_early and int(summary.trace_step[-1]) < n_steps
    return cut_short and summary.n_flagged >= 0.5 * len(summary.trace_step)


def select_frames(
    flagged: Sequence[Sequence[FlaggedFrame]], max_frames: int, min_separation: int
) -> list[tuple[int, FlaggedFrame]]:
    """The most uncertain of each walker's flagged frames (``flagged[w]``), at least
    ``min_separation`` steps apart within a walker: ``separated`` of the (walker, frame)
    pairs by decreasing largest spread."""
    pairs = [(w, frame) for w, frames in enumerate(flagged) for frame in frames]
    ordered = sorted(pairs, key=lambda pair: -pair[1].max_force_uncertainty)
    return separated(ordered, max_frames, min_separation)


def separated(
    ordered: list[tuple[int, FlaggedFrame]], max_frames: int, min_separation: int
) -> list[tuple[int, FlaggedFrame]]:
    """Greedy in the order given: each (walker, frame) kept unless within ``min_separation``
    steps of one already kept of the same walker, until ``max_frames``. Returned in (walker,
    step) order."""
    kept: list[tuple[int, FlaggedFrame]] = []
    for walker, frame in ordered:
        if all(w != walker or abs(frame.step - other.step) >= min_separation for w, other in kept):
            kept.append((walker, frame))
        if len(kept) == max_frames:
            break
    return sorted(kept, key=lambda pair: (pair[0], pair[1].step))


def trajectory_frames(path: Path, md, trace: list[tuple[int, float]]) -> list[FlaggedFrame]:
    """The frames of a round's MD trajectory (every ``md.log_interval``-th step), the start
    excluded, with the largest per-atom spread the watch saw at their step (eV/Å; the
    energy spread is not recorded: NaN)."""
    from ase.io import read

    largest = dict(trace)
    frames = []
    for index, atoms in enumerate(read(path, ":")):
        step = index * md.log_interval
        if step == 0:
            continue
        atoms.calc = None
        spread = largest[step]
        frames.append(FlaggedFrame(step, step * md.timestep_fs, spread, float("nan"), atoms))
    return frames


def _label(config: LearnConfig, teacher: Teacher, structures, progress: bool):
    """Teacher labels of ``structures`` through the label cache; (frames, newly computed)."""
    store = RecordStore(store_dir(config.label_cache, "labels", teacher.fingerprint, {}))
    computed = fill_store(
        store,
        structures,
        lambda chunk: [labels_to_record(x) for x in teacher.label(chunk)],
        config.labels.save_every,
        "labels",
        progress,
    )
    frames = [
        Frame(atoms, record_to_labels(store[structure_key(atoms)]), 1.0, "active_learning")
        for atoms in structures
    ]
    return frames, computed


def _count_frames(path: Path) -> int:
    from ase.io import read

    return len(read(path, index=":"))
