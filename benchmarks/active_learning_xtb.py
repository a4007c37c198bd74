"""Active learning on AcAc with GFN2-xTB (tblite) as the labeller: test error round by round.

The labeller is ``tblite.ase:TBLite`` (``method: GFN2-xTB``, extra ``xtb``), behind
``equiforce.workflows.distill.teacher`` as ``equiforce learn`` uses it. From the AcAc data
folder (``acac/``, ``benchmarks.acac``):

* initial data: the first ``--n-initial`` frames of ``train_300K.xyz``, validation its last
  ``--n-valid``, both relabelled with xTB (the file's DFT labels are dropped);
* MD starts: three other frames of ``train_300K.xyz`` (structures only);
* independent test sets: the first ``--n-test`` frames of ``test_MD_300K`` and
  ``test_MD_600K`` (frames of xTB MD), relabelled with xTB; never trained or validated on.

A committee of ``--size`` MACE members (``--preset`` with ``--channels``) trains on the initial
frames (round 0); then ``equiforce.workflows.learn`` runs round after round (Langevin MD at
``--temperature`` with the committee, the ``--max-frames`` most uncertain frames over
``--threshold`` labelled by xTB, every member fine-tuned on the grown set). After each round
the committee mean is scored against xTB on both test sets (energy per atom and force RMSE,
mean force spread). ``--selection uncertainty random`` runs the loop once per strategy from the
same labelled data and round-0 committee (``selection.strategy``: the most uncertain frames, or
the control: as many random frames of each round's whole MD), so the two compare in one run;
``--walkers 1 3`` likewise once per ``md.walkers`` (one MD a round, or three starts at once,
selecting the same number of frames from all of them).
E0s are fitted to the xTB energies (one composition: the least-squares minimum-norm solution).
Output in ``<out>/active_learning_xtb_<time>/``: ``results.json`` (run
record with the reproducing command, settings, rounds), ``active_learning_xtb.png`` and the
loop's folder ``learn_<strategy>/`` per strategy (every round's MD, data, committee)::

    OMP_NUM_THREADS=1 python -m benchmarks.active_learning_xtb            # ~10-20 min on 2 cores
    OMP_NUM_THREADS=1 python -m benchmarks.active_learning_xtb --smoke    # seconds
    OMP_NUM_THREADS=1 python -m benchmarks.active_learning_xtb --selection uncertainty random \
        --max-frames 5 --min-separation 5                                 # with the control
    OMP_NUM_THREADS=1 python -m benchmarks.active_learning_xtb --walkers 1 3  # 3 starts a round
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from ase.io import read

from benchmarks.common import add_common_arguments, require_data, run_record
from equiforce.data.extxyz import read_configurations
from equiforce.files import atomic_write_text
from equiforce.md.committee import force_spread
from equiforce.models import load_model
from equiforce.train import ModelConfig, RunConfig
from equiforce.train.config import DataConfig
from equiforce.train.evaluate import Predictions, errors_of, predict, to_json
from equiforce.workflows.committee import CommitteeConfig, train_committee
from equiforce.workflows.distill.config import TeacherConfig
from equiforce.workflows.distill.data import Frame, write_frames
from equiforce.workflows.distill.teacher import Teacher, load_teacher
from equiforce.workflows.learn import LearnConfig, learn
from equiforce.workflows.learn.config import STRATEGIES

XTB = {"calculator": "tblite.ase:TBLite", "kwargs": {"method": "GFN2-xTB", "verbosity": 0}}
TEST_SETS = ("test_MD_300K", "test_MD_600K")
START_FRAMES = (100, 200, 300)  # MD starts: frames of train_300K.xyz outside the initial data


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(p, "bench_out")
    p.add_argument("--preset", default="mace-small", help="model (equiforce.models.presets)")
    p.add_argument("--channels", type=int, default=16, help="num_channels override")
    p.add_argument("--size", type=int, default=3, help="committee members")
    p.add_argument("--workers", type=int, default=2, help="members trained at once (1 thread)")
    p.add_argument("--n-initial", type=int, default=8, help="initial xTB-labelled frames")
    p.add_argument("--n-valid", type=int, default=10, help="validation frames")
    p.add_argument("--n-test", type=int, default=100, help="frames per test set")
    p.add_argument("--epochs", type=int, default=300, help="round 0's epochs (from scratch)")
    p.add_argument("--finetune-epochs", type=int, default=60, help="epochs of each fine-tuning")
    p.add_argument("--budget-s", type=float, default=120.0, help="cap per member training, s")
    p.add_argument("--rounds", type=int, default=4, help="active-learning rounds")
    p.add_argument("--md-steps", type=int, default=400, help="MD steps per round")
    p.add_argument("--timestep-fs", type=float, default=0.5)
    p.add_argument("--temperature", type=float, nargs="+", default=[500.0],
                   help="exploration MD, K: one, or one per walker (md.temperature_K)")
    p.add_argument("--threshold", type=float, default=0.1, help="force spread, eV/Å")
    p.add_argument("--max-frames", type=int, default=10, help="frames labelled per round")
    p.add_argument("--min-separation", type=int, default=10, help="steps between labelled frames")
    p.add_argument("--stop-after", type=int, default=None,
                   help="uncertain frames that stop a round's MD (default 5 x --max-frames)")
    p.add_argument("--selection", nargs="+", default=["uncertainty"], choices=STRATEGIES,
                   help="selection.strategy of each loop (one loop per strategy, same start)")
    p.add_argument("--walkers", type=int, nargs="+", default=[1],
                   help="md.walkers of each loop (one loop per strategy and walkers, same start)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="mace-tiny, 2 members, 4 / 2 frames, 5 test frames, 1 round of 20 steps")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset, args.channels, args.size, args.workers = "mace-tiny", None, 2, 1
        args.n_initial, args.n_valid, args.n_test = 4, 2, 5
        args.epochs, args.finetune_epochs, args.rounds, args.md_steps = 2, 1, 1, 20
        args.threshold, args.max_frames = 1e-4, 3
    return args


def label_file(
    teacher: Teacher, structures: Sequence[Any], path: Path, data: DataConfig
) -> Path:
    """Write ``structures`` with the teacher's energy and forces as extxyz ``path``."""
    labels = teacher.label(structures)
    frames = [Frame(a, lab, 1.0, "xtb") for a, lab in zip(structures, labels, strict=True)]
    return write_frames(frames, path, data)


def committee_test_errors(models: Sequence[str], tests: dict[str, Path]) -> dict[str, Any]:
    """Errors of the committee mean on each test set, and its mean force spread.

    Returns:
        Test-set name -> ``energy_rmse_meV_atom``, ``forces_rmse_meV_A``, ``forces_mae_meV_A``
        (``equiforce.train.evaluate`` of the members' mean energies and forces) and
        ``force_spread_mean_meV_A`` (per-atom committee spread, averaged over atoms).
    """
    members = [load_model(path) for path in models]
    out = {}
    for name, path in tests.items():
        structures = read_configurations(path)
        predictions = [predict(model, structures) for model in members]
        forces = np.stack([p.forces for p in predictions])  # (n_members, n_atoms_total, 3)
        mean = Predictions(
            energy=np.mean([p.energy for p in predictions], axis=0),
            forces=forces.mean(axis=0),
            n_atoms=predictions[0].n_atoms,
            stress=None,
        )
        metrics = json.loads(to_json(errors_of(structures, mean)))["metrics"]
        out[name] = {
            "energy_rmse_meV_atom": metrics["energy_per_atom"]["rmse"],
            "forces_rmse_meV_A": metrics["forces"]["rmse"],
            "forces_mae_meV_A": metrics["forces"]["mae"],
            "force_spread_mean_meV_A": 1e3 * float(force_spread(forces).mean()),
        }
    return out


def learn_values(args: argparse.Namespace, files: dict[str, Path], out: Path) -> dict[str, Any]:
    """The loop's learn file (``LearnConfig``) as a mapping."""
    overrides: dict[str, Any] = {"dtype": "float32"}
    if args.channels is not None:
        overrides["num_channels"] = args.channels
    return {
        "output_dir": str(out),
        "seed": args.seed,
        "start": {"models": []},
        "teacher": XTB,
        "data": {
            "train_file": str(files["train"]),
            "valid_file": str(files["valid"]),
            "batch_size": 4,
            "valid_batch_size": 10,
        },
        "model": ModelConfig.from_preset(args.preset, **overrides).to_dict(),
        "training": {
            "max_epochs": args.finetune_epochs,
            "lr": 0.01,
            "stress_weight": 0.0,
            "time_budget_s": args.budget_s,
            "device": "cpu",
            "progress_bar": False,
        },
        "committee": {"size": args.size, "workers": args.workers, "threads_per_worker": 1},
        "md": {
            "structures": str(files["starts"]),
            "temperature_K": args.temperature if len(args.temperature) > 1 else args.temperature[0],
            "timestep_fs": args.timestep_fs,
            "n_steps": args.md_steps,
            "log_interval": min(10, args.md_steps),
        },
        "selection": {
            "threshold": args.threshold,
            "max_frames": args.max_frames,
            "min_separation": min(args.min_separation, args.md_steps),
            "stop_after": args.stop_after or 5 * args.max_frames,
        },
        "max_rounds": args.rounds,
    }


def write_data(
    args: argparse.Namespace, teacher: Teacher, data_dir: Path, folder: Path
) -> dict[str, Path]:
    """xTB-labelled initial, validation and test files, and the MD starts, in ``folder``."""
    names = ["train_300K", *TEST_SETS]
    source = dict(zip(names, require_data(data_dir, *(f"acac/{n}.xyz" for n in names)),
                      strict=True))
    pool = read(source["train_300K"], index=":")
    data = DataConfig(train_file="unused")
    files = {
        "train": label_file(teacher, pool[: args.n_initial], folder / "initial.xyz", data),
        "valid": label_file(teacher, pool[-args.n_valid :], folder / "valid.xyz", data),
    }
    starts = [pool[k].copy() for k in START_FRAMES]
    from ase.io import write

    write(folder / "starts.xyz", starts, format="extxyz")
    files["starts"] = folder / "starts.xyz"
    for name in TEST_SETS:
        frames = read(source[name], index=f":{args.n_test}")
        files[name] = label_file(teacher, frames, folder / f"{name}_xtb.xyz", data)
    return files


def plot_runs(runs: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Force and energy RMSE on the test sets against the training frames, round by round,
    one line style per loop (selection strategy, walkers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 5.5), dpi=120)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    styles = ("o-", "s--", "^:", "d-.")
    colors = dict(zip(TEST_SETS, ("tab:blue", "tab:red"), strict=True))
    for index, (loop, rounds) in enumerate(runs.items()):
        style = styles[index % len(styles)]
        frames = [r["n_train_frames"] for r in rounds]
        for name in TEST_SETS:
            label = f"{name}, {loop}"
            forces = [r["tests"][name]["forces_rmse_meV_A"] for r in rounds]
            energies = [r["tests"][name]["energy_rmse_meV_atom"] for r in rounds]
            top.plot(frames, forces, style, color=colors[name], label=label)
            bottom.plot(frames, energies, style, color=colors[name], label=label)
    top.set_ylabel("force RMSE (meV/Å)")
    top.legend(fontsize=7)
    bottom.set_ylabel("energy RMSE (meV/atom)")
    bottom.set_xlabel("training frames (one point per round, 0 first)")
    for ax in (top, bottom):
        ax.set_yscale("log")
    fig.suptitle("AcAc, GFN2-xTB labels: committee mean vs xTB on MD test sets", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return path


def initial_committee(args: argparse.Namespace, values: dict[str, Any], out: Path) -> list[str]:
    """Round 0's committee: ``--size`` members trained from scratch on the initial frames for
    ``--epochs`` epochs (member k with seed + k); its model files."""
    run = RunConfig.from_dict({
        "output_dir": str(out),
        "seed": args.seed,
        "data": values["data"],
        "model": values["model"],
        "training": {**values["training"], "max_epochs": args.epochs},
    })
    settings = CommitteeConfig(size=args.size, workers=args.workers, threads_per_worker=1)
    return [str(p) for p in train_committee(run, settings, resume=True).model_paths]


def main(argv: list[str] | None = None) -> int:
    """Label the data, train round 0, run the rounds, score each round's committee."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (args.out / f"active_learning_xtb_{stamp}").resolve()
    (run_dir / "data").mkdir(parents=True)
    probe = read(require_data(args.data_dir, "acac/train_300K.xyz")[0], index=0)
    teacher = load_teacher(TeacherConfig(**XTB), probe)
    start = time.perf_counter()
    files = write_data(args, teacher, args.data_dir, run_dir / "data")
    label_s = time.perf_counter() - start
    values = learn_values(args, files, run_dir / "learn")
    values["start"]["models"] = initial_committee(args, values, run_dir / "initial_committee")
    tests = {name: files[name] for name in TEST_SETS}
    report: dict[str, Any] = {
        **run_record("benchmarks.active_learning_xtb", argv),
        "settings": vars(args),
        "learn_config": values,
        "labelling_s": label_s,
        "runs": {},
    }
    path = run_dir / "results.json"
    for strategy, walkers in itertools.product(args.selection, args.walkers):
        name = strategy if walkers == 1 else f"{strategy}, {walkers} walkers"
        selection = {**values["selection"], "strategy": strategy}
        folder = run_dir / f"learn_{strategy}{'' if walkers == 1 else f'_{walkers}walkers'}"
        md = {**values["md"], "walkers": walkers}
        loop = {**values, "output_dir": str(folder), "selection": selection, "md": md}
        rounds = report["runs"].setdefault(name, [])
        print(f"\nselection: {name}\n{'round':>5s} {'train':>5s} {'flagged':>7s} "
              f"{'MD spread':>9s} " + " ".join(f"{n + ' F/E':>18s}" for n in TEST_SETS)
              + "   (meV/Å, meV/atom)")
        config = LearnConfig.from_dict(loop)
        for k in range(1, args.rounds + 1):
            result = learn(dataclasses.replace(config, max_rounds=k))  # rounds < k are kept
            for record in result.rounds[len(rounds):]:
                record = {**record, "tests": committee_test_errors(record["models"], tests),
                          "elapsed_s": time.perf_counter() - start}
                rounds.append(record)
                atomic_write_text(json.dumps(report, indent=1, default=str) + "\n", path)
                _print_round(record)
            if result.converged:
                break
    report["figure"] = str(plot_runs(report["runs"], run_dir / "active_learning_xtb.png"))
    report["total_s"] = time.perf_counter() - start
    atomic_write_text(json.dumps(report, indent=1, default=str) + "\n", path)
    print(f"\nwrote {path} and {report['figure']}")
    return 0


def _print_round(record: dict[str, Any]) -> None:
    spread = record.get("max_force_uncertainty")
    print(f"{record['round']:5d} {record['n_train_frames']:5d} {record.get('n_flagged', 0):7d} "
          f"{'-' if spread is None else f'{1e3 * spread:.0f}':>9s} "
          + " ".join(f"{r['forces_rmse_meV_A']:9.1f}/{r['energy_rmse_meV_atom']:8.2f}"
                     for r in record["tests"].values()), flush=True)


if __name__ == "__main__":
    sys.exit(main())
