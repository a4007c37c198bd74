"""Quickstart workflow: generate data, train MACE or Allegro, evaluate, run MD (minutes, CPU)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ase import Atoms
from ase.io import read

from equiforce.data.extxyz import KeySpec, read_configurations
from equiforce.data.synthetic import EMTDatasetSpec, generate_emt_dataset, write_splits
from equiforce.files import atomic_write_text
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.dynamics import run_md
from equiforce.md.report import plot_md
from equiforce.models.io import load_model, save_model
from equiforce.train import evaluate as evaluation
from equiforce.train.config import RunConfig, dump_config
from equiforce.train.run import train

QUICKSTART_PARAMS: dict[str, dict[str, Any]] = {
    "mace": {
        "r_max": 4.5,
        "num_channels": 16,
        "max_L": 1,
        "max_ell": 2,
        "correlation": 2,
        "num_interactions": 2,
        "num_radial_basis": 8,
        "radial_mlp": [32, 32],
        "dtype": "float32",
    },
    "allegro": {
        "r_max": 4.5,
        "l_max": 1,
        "num_layers": 2,
        "num_scalar_features": 32,
        "num_tensor_features": 8,
        "two_body_mlp_hidden": [32],
        "latent_mlp_hidden": [32],
        "readout_mlp_hidden": [16],
        "dtype": "float32",
    },
}


@dataclass(frozen=True)
class QuickstartOptions:
    """Knobs of the quickstart.

    Attributes:
        out_dir: where everything is written; the model lands at ``out_dir/model.pt``.
        family: model family, ``"mace"`` or ``"allegro"``.
        budget_s: wall-clock training budget, s.
        n_configs: generated EMT structures (70% train, 15% validation, 15% test).
        md_steps: NVE steps (1 fs) of the closing MD run.
        seed: seeds data generation, training and MD.
        model_params: architecture hyperparameters (spec fields of ``family``); None = the
            quickstart defaults in ``QUICKSTART_PARAMS``.
        progress: show progress bars.
    """

    out_dir: Path
    family: str = "mace"
    budget_s: float = 120.0
    n_configs: int = 150
    md_steps: int = 300
    seed: int = 0
    model_params: dict[str, Any] | None = None
    progress: bool = True


def model_params(options: QuickstartOptions) -> dict[str, Any]:
    """The architecture hyperparameters the quickstart trains with."""
    if options.model_params is not None:
        return dict(options.model_params)
    if options.family not in QUICKSTART_PARAMS:
        raise ValueError(f"quickstart knows {sorted(QUICKSTART_PARAMS)}, not {options.family!r}")
    return dict(QUICKSTART_PARAMS[options.family])


def quickstart_config(options: QuickstartOptions, splits: dict[str, Path]) -> RunConfig:
    """The training configuration the quickstart uses (also written to ``config.yaml``)."""
    return RunConfig.from_dict(
        {
            "output_dir": str(options.out_dir / "run"),
            "seed": options.seed,
            "data": {
                "train_file": str(splits["train"]),
                "valid_file": str(splits["valid"]),
                "batch_size": 4,
                "valid_batch_size": 16,
            },
            "model": {"family": options.family, **model_params(options)},
            "training": {
                "max_epochs": 1000,
                "time_budget_s": options.budget_s,
                "lr": 0.01,
                # stress labels are ~20x smaller than forces (eV/Å^3 vs eV/Å): weight them up
                "energy_weight": 100.0,
                "forces_weight": 100.0,
                "stress_weight": 1000.0,
                "scheduler": {"factor": 0.8, "patience": 5},
                "ema": {"enabled": True, "decay": 0.99},
                "stage_two": {
                    "enabled": True,
                    "start_time_fraction": 0.75,
                    "lr": 0.001,
                    "energy_weight": 1000.0,
                    "forces_weight": 100.0,
                    "stress_weight": 1000.0,
                },
                "progress_bar": options.progress,
            },
        }
    )


def _coolest(structures: list[Atoms]) -> Atoms:
    """The structure with the lowest energy per atom (a calm start for the NVE run)."""
    return min(structures, key=lambda atoms: atoms.get_potential_energy() / len(atoms))


def run_quickstart(options: QuickstartOptions) -> dict[str, Any]:
    """Run the whole workflow and return the summary (also written to ``summary.json``)."""
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    frames = generate_emt_dataset(EMTDatasetSpec(n_configs=options.n_configs, seed=options.seed))
    splits = write_splits(frames, out / "data")
    config = quickstart_config(options, splits)
    atomic_write_text(dump_config(config), out / "config.yaml")
    result = train(config)
    model_path = out / "model.pt"
    model = load_model(result.model_path)
    save_model(model, model_path)
    n_parameters = sum(p.numel() for p in model.parameters())
    metrics = evaluation.evaluate(model, read_configurations(splits["test"], KeySpec()), 16)
    evaluation.to_json(metrics, out / "metrics.json")
    plots = evaluation.plot_parity(metrics, out / "plots")
    md = run_md(
        _coolest(read(splits["test"], ":")),
        EquiforceCalculator(model_path),
        ensemble="nve",
        temperature_K=300.0,
        timestep_fs=1.0,
        n_steps=options.md_steps,
        trajectory_path=out / "md.traj",
        log_interval=5,
        seed=options.seed,
        progress=options.progress,
    )
    md_plot = plot_md(md, out / "plots" / "md.png")
    summary = {
        "data": {name: len(read(path, ":")) for name, path in splits.items()},
        "model": {"family": options.family, **model_params(options), "n_parameters": n_parameters},
        "training": {
            "epochs": result.epochs_completed,
            "best_epoch": result.best_epoch,
            "stop_reason": result.stop_reason,
        },
        "test_metrics": json.loads(evaluation.to_json(metrics)),
        "md": md.summary(),
        "paths": {
            "model": str(model_path),
            "metrics": str(out / "metrics.json"),
            "learning_curve": str(result.learning_curve),
            "parity_plots": [str(p) for p in plots],
            "md_plot": str(md_plot),
            "md_trajectory": str(out / "md.traj"),
        },
        "wall_time_s": time.perf_counter() - start,
    }
    atomic_write_text(json.dumps(summary, indent=2, default=float), out / "summary.json")
    return summary


def summary_table(summary: dict[str, Any]) -> str:
    """The quickstart's summary as a screen table."""
    metrics = summary["test_metrics"]["metrics"]
    md = summary["md"]
    training = summary["training"]
    rows = [
        (
            "data (train/valid/test)",
            "{train}/{valid}/{test} EMT Cu/Au cells".format(**summary["data"]),
        ),
        ("model", f"{summary['model']['family']}, {summary['model']['n_parameters']:,} parameters"),
        (
            "training",
            f"{training['epochs']} epochs ({training['stop_reason']}), "
            f"best {training['best_epoch']}",
        ),
    ]
    for name in ("energy_per_atom", "forces", "stress"):
        if name in metrics:
            m = metrics[name]
            rows.append((f"test {name} MAE/RMSE", f"{m['mae']:.2f} / {m['rmse']:.2f} {m['unit']}"))
    drift = md["energy_drift_meV_per_atom_per_ps"]
    rows += [
        (
            "MD (NVE)",
            f"{md['n_steps']} steps x {md['timestep_fs']:g} fs, T = "
            f"{md['temperature_mean_K']:.0f} +- {md['temperature_std_K']:.0f} K",
        ),
        ("NVE energy drift", f"{drift:.3g} meV/atom/ps"),
        ("wall time", f"{summary['wall_time_s']:.0f} s"),
    ]
    rows += [
        (f"wrote {name}", str(path))
        for name, path in summary["paths"].items()
        if not isinstance(path, list)
    ]
    rows.append(("wrote parity plots", ", ".join(summary["paths"]["parity_plots"])))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
