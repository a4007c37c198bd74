"""Precision benchmark on AcAc: models trained and run in float64, float32, bf16-mixed, fp16-mixed.

Three phases, each writing ``<out>/<phase>_<presets>.json`` (run record, settings, results):

``train`` (accuracy runs, not timings: run it nice'd with one thread on a shared machine)
    For each preset (``--presets``, ``equiforce.models.presets``: MACE ``mace-small``, Allegro
    ``allegro-l1-32``) and mode, one ``equiforce.train.train`` run for ``--epochs`` epochs on
    the first ``--n-train`` frames of the split of ``benchmarks.acac`` (mace-torch's recipe,
    batch 5, seed 0); ``precision.mode`` is the only difference between the modes.
``accuracy``
    Each trained model run in its mode (``apply_policy(from_name(mode))``): test errors on the
    first ``--n-test`` frames of each test set, and the total-energy drift of an NVE run
    (velocity Verlet, 0.5 fs, ``--md-ps`` ps, 300 K Maxwell-Boltzmann start, seed 0) from the
    first test_MD_300K frame.
``timing`` (run it under ``flock /tmp/equiforce_bench.lock``)
    The float32-trained weights in every mode, ``--repeats`` interleaved rounds after one
    warm-up (``equiforce.measure.timing``), medians: energy+forces of one molecule, a batch of
    64 and a ~3000-atom periodic box (200 molecules, random orientations, 6x6x6 grid, 6 Å
    apart), one training step (batch 5, energy + force loss, backward, Adam; fp16 with loss
    scaling), and the peak memory of one call (``equiforce.measure.memory.peak_memory_mb``).

Usage::

    nice -n 15 env OMP_NUM_THREADS=1 python -m benchmarks.precision_acac train
    nice -n 15 env OMP_NUM_THREADS=1 python -m benchmarks.precision_acac accuracy
    flock /tmp/equiforce_bench.lock python -m benchmarks.precision_acac timing
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any, Callable

import torch
from ase.io import read

from benchmarks import acac
from benchmarks.common import add_common_arguments, run_record
from equiforce.data.batch import collate
from equiforce.data.extxyz import read_configurations
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.dynamics import run_md
from equiforce.measure.memory import peak_memory_mb
from equiforce.measure.timing import interleave, summarize, time_call
from equiforce.models import load_model
from equiforce.precision import DynamicLossScaler, apply_policy, from_name
from equiforce.train import ModelConfig, RunConfig, train
from equiforce.train.losses import energy_forces_stress_loss

MODES = ("float64", "float32", "bf16-mixed", "fp16-mixed")
SYSTEMS = ("molecule", "batch64", "box", "train_step")
BATCH_SIZE = 5


def _run_dir(args: argparse.Namespace, preset: str, mode: str) -> Path:
    return args.out / "runs" / f"{preset}_{mode}"


def phase_train(args: argparse.Namespace) -> dict[str, Any]:
    """Train every (preset, mode); validation errors, epochs, wall time (or the error)."""
    split = acac.write_split(args.data_dir, args.out, args.n_train)
    results = {}
    for preset in args.presets:
        for mode in args.modes:
            config = RunConfig.from_dict({
                "output_dir": str(_run_dir(args, preset, mode)),
                "seed": 0,
                "data": acac.data_section(split),
                "model": ModelConfig.from_preset(preset).to_dict(),
                "training": acac.training_section(max_epochs=args.epochs),
                "precision": {"mode": mode},
            })
            try:
                result = train(config)
            except Exception as err:  # noqa: BLE001 (a diverged mode is a result, not a crash)
                results[f"{preset}_{mode}"] = {"error": f"{type(err).__name__}: {err}"}
                continue
            history = result.final_metrics
            results[f"{preset}_{mode}"] = {
                "epochs": result.epochs_completed,
                "best_epoch": result.best_epoch,
                "valid_energy_rmse": history["valid_energy_rmse"],
                "valid_forces_rmse": history["valid_forces_rmse"],
                "skipped_steps_last_epoch": history.get("skipped_steps"),
                "wall_s": history["wall_s"],
            }
    return results


def phase_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """Test errors and NVE drift of every trained model in its own mode."""
    split = acac.write_split(args.data_dir, args.out, args.n_train, n_test=args.n_test)
    results = {}
    for preset in args.presets:
        for mode in args.modes:
            path = _run_dir(args, preset, mode) / "model.pt"
            if not path.exists():
                continue
            model = apply_policy(load_model(path), from_name(mode))
            md = run_md(
                read(split.tests["test_MD_300K"], index=0),
                EquiforceCalculator(model),
                ensemble="nve",
                temperature_K=300.0,
                timestep_fs=0.5,
                n_steps=int(round(args.md_ps * 2000)),
                log_interval=20,
                seed=0,
            )
            results[f"{preset}_{mode}"] = {
                "errors": acac.test_errors(model, split.tests),
                "nve_ps": args.md_ps,
                "nve_drift_meV_per_atom_per_ps": md.energy_drift,
                "nve_max_bond_deviation_A": md.bonds.max_deviation,
            }
    return results


def _inference_call(model, graphs: list[dict]) -> Callable[[], None]:
    batch = collate(graphs)

    def call() -> None:
        with torch.enable_grad():
            model(batch, compute_forces=True, create_graph=False)["forces"].sum().item()

    return call


def _train_step_call(model, graphs: list[dict], mode: str) -> Callable[[], None]:
    batch = collate(graphs)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6, amsgrad=True)
    scaler = DynamicLossScaler() if from_name(mode).needs_loss_scaling else None
    loss_function = energy_forces_stress_loss(1.0, 100.0, 0.0)

    def call() -> None:
        optimizer.zero_grad(set_to_none=True)
        pred = model(batch, compute_forces=True, create_graph=True)
        loss = loss_function(batch, pred)
        if scaler is None:
            loss.backward()
        else:
            scaler.scale_loss(loss).backward()
            scaler.update(scaler.unscale_(model.parameters()))
        optimizer.step()

    return call


def phase_timing(args: argparse.Namespace) -> dict[str, Any]:
    """ms per call (median, min), peak memory and atoms of every (preset, mode, system)."""
    torch.set_num_threads(args.threads)
    files = acac.write_split(args.data_dir, args.out, args.n_train)
    molecules = read(files.tests["test_MD_300K"], index=":200")
    box = atoms_to_configuration(acac.molecule_grid(molecules, 6, 6.0, seed=0), "acac box")
    structures = {
        "molecule": [atoms_to_configuration(molecules[0])],
        "batch64": [atoms_to_configuration(m) for m in molecules[:64]],
        "box": [box],
        "train_step": read_configurations(files.train, index=f":{BATCH_SIZE}"),
    }
    results: dict[str, Any] = {}
    for preset in args.presets:
        trained = load_model(_run_dir(args, preset, "float32") / "model.pt")
        calls = {}
        for mode in args.modes:
            model = apply_policy(copy.deepcopy(trained), from_name(mode)).eval()
            for system in args.systems:
                graphs = [
                    configuration_to_graph(s, trained.type_names, trained.r_max)
                    for s in structures[system]
                ]
                if system == "train_step":
                    call = _train_step_call(copy.deepcopy(model).train(), graphs, mode)
                else:
                    call = _inference_call(model, graphs)
                calls[f"{preset}_{mode}_{system}"] = (call, graphs)
        memory = {}
        for key, (call, _) in calls.items():  # warm-up, and the peak memory of one call
            call()
            memory[key] = peak_memory_mb(call, "cpu")
        times = interleave(
            {key: lambda c=call: time_call(c) for key, (call, _) in calls.items()},
            warmup=0, repeats=args.repeats,
        )
        for key, (_, graphs) in calls.items():
            stats = summarize(times[key])
            results[key] = {
                "ms_median": stats.median_ms,
                "ms_min": stats.min_ms,
                "peak_memory_MB": memory[key],
                "n_atoms": sum(int(g["pos"].shape[0]) for g in graphs),
            }
    return results


def main(argv: list[str] | None = None) -> int:
    """Run one phase and write ``<out>/<phase>_<presets>.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=("train", "accuracy", "timing"))
    add_common_arguments(parser, "bench_out/precision_acac")
    parser.add_argument("--presets", nargs="+", default=["mace-small", "allegro-l1-32"])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--epochs", type=int, default=4, help="train: epochs per run")
    parser.add_argument("--n-train", type=int, default=200, help="training frames")
    parser.add_argument("--n-test", type=int, default=650, help="accuracy: frames per test set")
    parser.add_argument("--md-ps", type=float, default=1.0, help="accuracy: NVE length, ps")
    parser.add_argument("--repeats", type=int, default=5, help="timing: interleaved rounds")
    parser.add_argument("--threads", type=int, default=2, help="timing: torch threads")
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    phase = {"train": phase_train, "accuracy": phase_accuracy, "timing": phase_timing}
    record = run_record("benchmarks.precision_acac", argv)
    results = phase[args.phase](args)
    payload = {**record, "settings": vars(args), "results": results}
    tag = "+".join(args.presets)
    if args.phase == "timing":
        tag += "_" + "+".join(args.systems)
    path = args.out / f"{args.phase}_{tag}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(json.dumps(results, indent=1, default=str))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
