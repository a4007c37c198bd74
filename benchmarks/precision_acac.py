"""Precision benchmark on AcAc: MACE and Allegro in float64, float32, bf16-mixed, fp16-mixed (CPU).

Three phases, each writing JSON into ``--out`` (default ``bench_out/precision_acac``):

``train`` (accuracy runs; not timings: run it nice'd with one thread on a shared machine)
    For each family and mode, one ``equiforce.train.train`` run with the same config and the
    same number of epochs (``--epochs``): the first ``--n-train`` frames of
    ``acac/train_300K.xyz`` for training, its last 50 frames for validation, E0s from
    ``acac/isolated_atoms.xyz``; batch 5, Adam (AMSGrad) lr 0.01, energy weight 1, force
    weight 100, EMA 0.99, gradient clipping 10; ``precision.mode`` is the only difference.
    Models: MACE 32x(0e+1o), correlation 3, 2 interactions, max_ell 3, r_max 5, radial MLP
    [64, 64, 64]; Allegro l_max 1, 2 layers, 32 scalar / 16 tensor features, r_max 5.

``accuracy`` (not timings either)
    Each trained model, run in the mode it was trained in: energy and force RMSE on
    ``test_MD_300K.xyz`` and ``test_MD_600K.xyz`` (first ``--n-test`` frames each), and the
    total-energy drift of an NVE run (velocity Verlet, 0.5 fs, ``--md-ps`` ps, 300 K
    Maxwell-Boltzmann start, seed 0) from the first test_MD_300K frame.

``timing`` (run it under ``flock /tmp/equiforce_bench.lock``, normal priority)
    On the float32-trained weights of each family, every mode (interleaved, ``--repeats``
    rounds, medians after warm-up): energy+forces ms per call for one molecule, a batch of 64
    molecules and a ~3000-atom periodic box (200 molecules, random orientations, on a 6x6x6
    grid with 6 Å spacing); the peak memory of one call (process peak RSS growth, see
    ``equiforce.measure.memory.peak_memory_mb``); and the time of one training step (batch 5,
    energy + force loss, backward, Adam step; loss scaling in fp16), whence s/epoch for the
    training set size of the ``train`` phase. ``--systems`` picks a subset (each lock hold
    short); ``--mace-channels N`` times a random MACE of width N instead (same other settings).

Usage::

    nice -n 15 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/precision_acac.py train
    nice -n 15 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/precision_acac.py accuracy
    flock /tmp/equiforce_bench.lock .venv/bin/python benchmarks/precision_acac.py timing
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from ase.io import read, write
from bench_common import REPO_ROOT, machine_info

from equiforce.data.batch import collate
from equiforce.data.extxyz import read_configurations
from equiforce.data.graph import Configuration, configuration_to_graph
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.dynamics import run_md
from equiforce.models import build_model, load_model
from equiforce.precision import DynamicLossScaler, PrecisionPolicy, apply_policy
from equiforce.train.config import RunConfig
from equiforce.train.evaluate import evaluate
from equiforce.train.run import train
from equiforce.measure.memory import peak_memory_mb

DATA = REPO_ROOT.parent / "shared" / "data" / "acac"
FAMILIES = ("mace", "allegro")
MODES = ("float64", "float32", "bf16-mixed", "fp16-mixed")
MODELS: dict[str, dict[str, Any]] = {
    "mace": {
        "family": "mace",
        "r_max": 5.0,
        "num_channels": 32,
        "max_L": 1,
        "correlation": 3,
        "num_interactions": 2,
        "max_ell": 3,
        "radial_mlp": [64, 64, 64],
        "first_interaction_residual": True,
    },
    "allegro": {
        "family": "allegro",
        "r_max": 5.0,
        "l_max": 1,
        "num_layers": 2,
        "num_scalar_features": 32,
        "num_tensor_features": 16,
        "two_body_mlp_hidden": [32],
        "latent_mlp_hidden": [32],
        "readout_mlp_hidden": [16],
    },
}
BATCH_SIZE = 5


def _data_files(out: Path, n_train: int) -> tuple[Path, Path]:
    """Training (first ``n_train`` frames) and validation (last 50) files of train_300K."""
    frames = read(DATA / "train_300K.xyz", index=":")
    train_file, valid_file = out / "data" / "train.xyz", out / "data" / "valid.xyz"
    train_file.parent.mkdir(parents=True, exist_ok=True)
    write(train_file, frames[:n_train], format="extxyz")
    write(valid_file, frames[-50:], format="extxyz")
    return train_file, valid_file


def run_config(out: Path, family: str, mode: str, epochs: int, files: tuple[Path, Path]) -> dict:
    """The run dict of one (family, mode) training."""
    return {
        "output_dir": str(out / "runs" / f"{family}_{mode}"),
        "seed": 0,
        "data": {
            "train_file": str(files[0]),
            "valid_file": str(files[1]),
            "isolated_atoms_file": str(DATA / "isolated_atoms.xyz"),
            "batch_size": BATCH_SIZE,
            "valid_batch_size": 10,
        },
        "model": dict(MODELS[family]),
        "training": {
            "max_epochs": epochs,
            "lr": 0.01,
            "energy_weight": 1.0,
            "forces_weight": 100.0,
            "ema": {"enabled": True, "decay": 0.99},
            "device": "cpu",
            "progress_bar": False,
        },
        "precision": {"mode": mode},
    }


def phase_train(args: argparse.Namespace) -> dict[str, Any]:
    """Train every (family, mode); returns validation metrics, epochs and wall time."""
    files = _data_files(args.out, args.n_train)
    results = {}
    for family in args.families:
        for mode in args.modes:
            config = RunConfig.from_dict(run_config(args.out, family, mode, args.epochs, files))
            start = time.perf_counter()
            try:
                result = train(config)
            except Exception as err:  # noqa: BLE001 (a diverged mode is a result, not a crash)
                results[f"{family}_{mode}"] = {"error": f"{type(err).__name__}: {err}"}
                continue
            history = result.final_metrics
            results[f"{family}_{mode}"] = {
                "epochs": result.epochs_completed,
                "best_epoch": result.best_epoch,
                "valid_energy_rmse": history["valid_energy_rmse"],
                "valid_forces_rmse": history["valid_forces_rmse"],
                "skipped_steps_last_epoch": history.get("skipped_steps"),
                "wall_s": time.perf_counter() - start,
            }
            print(family, mode, results[f"{family}_{mode}"], flush=True)
    return results


def phase_accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """Test RMSE (300 K, 600 K) and NVE drift of every trained model in its own mode."""
    tests = {
        temp: read_configurations(DATA / f"test_MD_{temp}.xyz", index=f":{args.n_test}")
        for temp in ("300K", "600K")
    }
    results = {}
    for family in args.families:
        for mode in args.modes:
            path = args.out / "runs" / f"{family}_{mode}" / "model.pt"
            if not path.exists():
                continue
            model = apply_policy(load_model(path), PrecisionPolicy.from_name(mode))
            entry: dict[str, Any] = {}
            for temp, structures in tests.items():
                metrics = evaluate(model, structures, batch_size=32).metrics
                entry[f"energy_rmse_{temp}"] = metrics["energy_per_atom"].rmse
                entry[f"forces_rmse_{temp}"] = metrics["forces"].rmse
            start = tests["300K"][0]
            atoms = read(DATA / "test_MD_300K.xyz", index=0)
            md = run_md(
                atoms,
                EquiforceCalculator(model),
                ensemble="nve",
                temperature_K=300.0,
                timestep_fs=0.5,
                n_steps=int(round(args.md_ps * 2000)),
                log_interval=20,
                seed=0,
            )
            entry["nve_ps"] = args.md_ps
            entry["nve_drift_meV_per_atom_per_ps"] = md.energy_drift
            entry["nve_max_bond_deviation_A"] = md.bonds.max_deviation
            entry["n_atoms"] = start.n_atoms
            results[f"{family}_{mode}"] = entry
            print(family, mode, entry, flush=True)
    return results


def _box(molecules: list[Configuration], seed: int = 0) -> Configuration:
    """200 molecules with random orientations on a 6x6x6 grid (6 Å spacing), periodic."""
    rng = np.random.default_rng(seed)
    spacing, n_side = 6.0, 6
    slots = rng.permutation(n_side**3)[: len(molecules)]
    positions, numbers = [], []
    for slot, molecule in zip(slots, molecules, strict=True):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q = q * np.sign(np.diag(r))
        centred = molecule.positions - molecule.positions.mean(axis=0)
        grid = np.array(np.unravel_index(slot, (n_side,) * 3), dtype=float) * spacing
        positions.append(centred @ q.T + grid)
        numbers.append(molecule.atomic_numbers)
    return Configuration(
        atomic_numbers=np.concatenate(numbers),
        positions=np.concatenate(positions),
        cell=np.eye(3) * spacing * n_side,
        pbc=np.ones(3, dtype=bool),
        source="acac box",
    )


def _inference_call(model, graphs: list[dict]) -> Callable[[], None]:
    batch = collate(graphs)

    def call() -> None:
        with torch.enable_grad():
            model(batch, compute_forces=True, create_graph=False)["forces"].sum().item()

    return call


def _train_step_call(model, graphs: list[dict], scaler: DynamicLossScaler | None):
    batch = collate(graphs)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6, amsgrad=True)

    def call() -> None:
        optimizer.zero_grad(set_to_none=True)
        pred = model(batch, compute_forces=True, create_graph=True)
        n_atoms = (batch["ptr"][1:] - batch["ptr"][:-1]).to(torch.float64)
        loss = (((pred["energy"] - batch["energy"]) / n_atoms) ** 2).mean() + 100.0 * (
            (pred["forces"] - batch["forces"]) ** 2
        ).mean()
        if scaler is None:
            loss.backward()
        else:
            scaler.scale_loss(loss).backward()
            scaler.update(scaler.unscale_(model.parameters()))
        optimizer.step()

    return call


def _timed_model(args: argparse.Namespace, family: str):
    """The float32-trained model, or with ``--mace-channels`` a random MACE of that width."""
    trained = load_model(args.out / "runs" / f"{family}_float32" / "model.pt")
    if family != "mace" or args.mace_channels is None:
        return trained
    spec = dataclasses.replace(trained.spec, num_channels=args.mace_channels)
    return build_model("mace", spec).to(torch.float32)


def phase_timing(args: argparse.Namespace) -> dict[str, Any]:
    """Time per call (molecule, batch of 64, box), peak memory, training-step time per mode."""
    torch.set_num_threads(args.threads)
    molecules = read_configurations(DATA / "test_MD_300K.xyz", index=":200")
    every = {"molecule": molecules[:1], "batch64": molecules[:64], "box": [_box(molecules)]}
    systems = {name: every[name] for name in args.systems if name in every}
    train_set = read_configurations(DATA / "train_300K.xyz", index=f":{BATCH_SIZE}")
    results: dict[str, Any] = {"threads": args.threads}
    for family in args.families:
        trained = _timed_model(args, family)
        models = {
            m: apply_policy(copy.deepcopy(trained), PrecisionPolicy.from_name(m))
            for m in args.modes
        }
        for model in models.values():
            model.eval()
        graphs = {
            name: [configuration_to_graph(s, trained.type_names, trained.r_max) for s in structs]
            for name, structs in systems.items()
        }
        train_graphs = [
            configuration_to_graph(s, trained.type_names, trained.r_max) for s in train_set
        ]
        calls: dict[tuple[str, str], Callable[[], None]] = {}
        for mode, model in models.items():
            for name, system_graphs in graphs.items():
                calls[(mode, name)] = _inference_call(model, system_graphs)
            if "train_step" in args.systems:
                step_model = copy.deepcopy(model).train()
                scaling = PrecisionPolicy.from_name(mode).needs_loss_scaling
                scaler = DynamicLossScaler() if scaling else None
                calls[(mode, "train_step")] = _train_step_call(step_model, train_graphs, scaler)
        times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
        memory = {}
        for key, call in calls.items():  # warm-up, and the peak memory of one call
            call()
            memory[key] = peak_memory_mb(call, torch.device("cpu"))
            print("warm", family, key, f"{memory[key]:.0f} MB", flush=True)
        for _ in range(args.repeats):
            for key, call in calls.items():  # interleaved: load changes hit every mode alike
                start = time.perf_counter()
                call()
                times[key].append(1e3 * (time.perf_counter() - start))
        for (mode, name), values in times.items():
            results[f"{family}_{mode}_{name}"] = {
                "ms_median": statistics.median(values),
                "ms_min": min(values),
                "peak_memory_MB": memory[(mode, name)],
                "n_atoms": sum(int(g["pos"].shape[0]) for g in graphs.get(name, train_graphs)),
            }
            print(family, mode, name, results[f"{family}_{mode}_{name}"], flush=True)
    results["s_per_epoch_factor"] = args.n_train / BATCH_SIZE / 1e3  # ms per step -> s per epoch
    return results


def main() -> None:
    """Run one phase and write ``<out>/<phase>_<families>.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=("train", "accuracy", "timing"))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench_out" / "precision_acac")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-test", type=int, default=650)
    parser.add_argument("--md-ps", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--mace-channels", type=int, default=None, help="timing: random MACE of this width"
    )
    parser.add_argument(
        "--systems", nargs="+", default=["molecule", "batch64", "box", "train_step"]
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    phase = {"train": phase_train, "accuracy": phase_accuracy, "timing": phase_timing}
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    results = phase[args.phase](args)
    payload = {
        "phase": args.phase,
        "started": started,
        "arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": machine_info(["torch", "equiforce"]),
        "results": results,
    }
    tag = "+".join(args.families)
    if args.phase == "timing":
        tag += (
            "_" + "+".join(args.systems) + (f"_c{args.mace_channels}" if args.mace_channels else "")
        )
    path = args.out / f"{args.phase}_{tag}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written {path}")


if __name__ == "__main__":
    main()
