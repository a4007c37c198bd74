"""The peers' side of ``benchmarks.acac_train``: train in their venv, convert the kept model.

``train_peer`` runs a peer's own trainer as a subprocess of its venv's executables, with the
settings of the equiforce ``RunConfig`` it is compared with (model from the spec, recipe from
the training and data sections):

* mace-torch: ``mace_run_train`` with a huge ``--max_num_epochs``. Its log is watched and the
  clock starts at "Started training"; when the budget has run out the running epoch may finish
  and validate (so mace-torch gets *at least* the budget), its checkpoint is awaited and the
  process group is stopped. ``mace_run_train --restart_latest --max_num_epochs 0`` then writes
  the ``.model`` of the latest (= lowest validation loss) checkpoint without training further.
* nequip-allegro: ``nequip-train`` with a hydra config written here; Lightning's ``max_time``
  stops it at the first batch after the budget (the cut epoch is not validated).

The kept model (EMA weights at the lowest validation loss) is then converted, in the peer's
venv, to an equiforce model file by ``equiforce.interop`` (exact conversions):
``python -m benchmarks.peer_training {mace-torch,nequip-allegro} SOURCE DEST`` also writes
``DEST.json`` with the versions it ran with. Everything passes through files.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import re
import signal
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from ase.data import atomic_numbers

from benchmarks.common import REPO_ROOT
from equiforce.data.statistics import DatasetStatistics, read_isolated_atom_energies
from equiforce.train.config import RunConfig

CONVERTERS = ("mace-torch", "nequip-allegro")
_VERSIONS = {
    "mace-torch": ("torch", "e3nn", "mace-torch"),
    "nequip-allegro": ("torch", "e3nn", "nequip", "nequip-allegro", "lightning"),
}


def train_peer(
    peer: str,
    python: str,
    config: RunConfig,
    statistics: DatasetStatistics,
    threads: int,
) -> dict[str, Any]:
    """Train ``peer`` like ``config`` in ``<config.output_dir>``; convert its kept model.

    Args:
        peer: "mace-torch" or "nequip-allegro".
        python: the python of the peer's venv (its trainer sits beside it).
        config: the equiforce run it is compared with (``output_dir``: the peer's folder).
        statistics: the training set's statistics (nequip's per-type energy shifts).
        threads: ``OMP_NUM_THREADS`` of the peer's processes.

    Returns:
        Epochs, wall times and how the run ended; ``model_path``: the converted model, or
        ``error`` when the peer kept no model.
    """
    work = Path(config.output_dir)
    work.mkdir(parents=True, exist_ok=True)
    python = str(Path(python).absolute())  # the processes run in other folders
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if peer == "mace-torch":
        summary, kept = _train_mace_torch(Path(python).parent, config, work, env)
    else:
        summary, kept = _train_nequip(Path(python).parent, config, statistics, work, env)
    if kept is None:
        return {**summary, "error": f"{peer} kept no model (see the logs in {work})"}
    converted = work / "equiforce_model.pt"
    with open(work / "convert.log", "w") as log:
        subprocess.run(
            [python, "-m", "benchmarks.peer_training", peer, str(kept), str(converted)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, check=True,
        )
    facts = json.loads(converted.with_suffix(".json").read_text())
    return {**summary, "model_path": str(converted), **facts}


# ---------------------------------------------------------------------------------------------
# mace-torch
# ---------------------------------------------------------------------------------------------


def mace_torch_arguments(config: RunConfig, work: Path) -> list[str]:
    """``mace_run_train`` arguments of ``config`` (``ScaleShiftMACE``, mace-torch's scaling)."""
    spec, data, training = config.model.spec(), config.data, config.training
    e0s = read_isolated_atom_energies(data.isolated_atoms_file)
    interaction = "RealAgnosticResidualInteractionBlock"
    first = interaction if spec.first_interaction_residual else "RealAgnosticInteractionBlock"
    values = {
        "name": "acac", "seed": config.seed, "work_dir": work, "device": "cpu",
        "default_dtype": spec.dtype, "train_file": data.train_file, "valid_file": data.valid_file,
        "energy_key": data.energy_key, "forces_key": data.forces_key,
        "E0s": repr({atomic_numbers[s]: e for s, e in e0s.items()}),
        "model": "ScaleShiftMACE", "scaling": "rms_forces_scaling",
        "num_channels": spec.num_channels, "max_L": spec.max_L,
        "correlation": spec.correlation, "num_interactions": spec.num_interactions,
        "max_ell": spec.max_ell, "r_max": spec.r_max, "num_radial_basis": spec.num_radial_basis,
        "num_cutoff_basis": spec.num_polynomial_cutoff, "radial_MLP": list(spec.radial_mlp),
        "MLP_irreps": f"{spec.readout_mlp_hidden}x0e",
        "interaction": interaction, "interaction_first": first,
        "loss": "weighted", "energy_weight": training.energy_weight,
        "forces_weight": training.forces_weight, "optimizer": training.optimizer,
        "lr": training.lr, "weight_decay": training.weight_decay,
        "scheduler": "ReduceLROnPlateau", "lr_factor": training.scheduler.factor,
        "scheduler_patience": training.scheduler.patience,
        "clip_grad": training.clip_grad_norm, "ema_decay": training.ema.decay,
        "batch_size": data.batch_size, "valid_batch_size": data.valid_batch_size,
        "eval_interval": 1, "patience": 100000, "error_table": "TotalRMSE", "plot": False,
        "num_workers": 0,
    }
    flags = ["--ema"] if training.ema.enabled else []
    return [f"--{k}={v}" for k, v in values.items()] + flags + ["--save_cpu", "--keep_checkpoints"]


_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) INFO: "
_START_LINE = re.compile(_STAMP + r"Started training", re.M)
_EPOCH_LINE = re.compile(_STAMP + r"Epoch (\d+): .*?loss=([0-9.eE+-]+)", re.M)


def parse_mace_log(text: str) -> list[tuple[int, float, float]]:
    """(epoch, validation loss, seconds since "Started training") of each logged epoch."""
    start = _START_LINE.search(text)
    if start is None:
        return []

    def stamp(value: str) -> float:
        return datetime.datetime.strptime(value, "%Y-%m-%d %H:%M:%S.%f").timestamp()

    t0 = stamp(start.group(1))
    return [
        (int(m.group(2)), float(m.group(3)), stamp(m.group(1)) - t0)
        for m in _EPOCH_LINE.finditer(text)
    ]


def _train_mace_torch(bin_dir: Path, config: RunConfig, work: Path, env: dict[str, str]):
    command = [str(bin_dir / "mace_run_train"), *mace_torch_arguments(config, work)]
    (work / "command.txt").write_text(" ".join(command) + "\n")
    log_path = work / "train.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [*command, "--max_num_epochs=100000"], stdout=log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True, cwd=work,
        )
        stop_reason = _enforce_budget(proc, log_path, config.training.time_budget_s)
    epochs = parse_mace_log(log_path.read_text(errors="replace"))
    if stop_reason == "time_budget":  # epochs logged after the budget epoch do not count
        budget = config.training.time_budget_s
        epochs = epochs[: next(n for n, e in enumerate(epochs) if e[2] >= budget) + 1]
    summary = {
        "epochs_completed": len(epochs),
        "training_loop_wall_s": epochs[-1][2] if epochs else None,
        "valid_loss_per_epoch": [e[1] for e in epochs],
        "stop_reason": stop_reason,
    }
    for path in (work / "checkpoints").glob("*_epoch-*.pt"):  # after the budget: not loaded
        if _epoch_of(path) >= len(epochs):
            path.rename(path.with_suffix(".late"))
    checkpoints = sorted((work / "checkpoints").glob("*_epoch-*.pt"), key=_epoch_of)
    if not checkpoints:
        return summary, None
    summary["best_epoch"] = _epoch_of(checkpoints[-1]) + 1
    with open(work / "finalize.log", "w") as log:
        subprocess.run(
            [*command, "--max_num_epochs=0", "--restart_latest"], stdout=log,
            stderr=subprocess.STDOUT, env=env, cwd=work, check=True,
        )
    return summary, work / "acac.model"


def _epoch_of(path: Path) -> int:
    return int(re.search(r"_epoch-(\d+)", path.name).group(1))


def _enforce_budget(proc: subprocess.Popen, log_path: Path, budget_s: float) -> str:
    """Stop ``mace_run_train`` after the first epoch validated at or after the budget.

    If that epoch improved the validation loss, its checkpoint is awaited first. Returns
    how the run ended.
    """
    hard_limit = time.monotonic() + 2 * budget_s + 1200.0  # preprocessing + one slow epoch
    checkpoints = log_path.parent / "checkpoints"
    stop_reason = "exited"
    while proc.poll() is None:
        epochs = parse_mace_log(log_path.read_text(errors="replace"))
        over = [e for e in epochs if e[2] >= budget_s]
        if over:
            epoch, loss, _ = over[0]
            if loss < min((e[1] for e in epochs if e[0] < epoch), default=float("inf")):
                deadline = time.monotonic() + 60.0
                while not list(checkpoints.glob(f"*_epoch-{epoch}.pt")):
                    if time.monotonic() > deadline or proc.poll() is not None:
                        break
                    time.sleep(0.2)
                time.sleep(2.0)  # let the write finish
            stop_reason = "time_budget"
            break
        if time.monotonic() > hard_limit:
            stop_reason = "hard_limit (no epoch finished in 2 x budget + 1200 s)"
            break
        time.sleep(0.5)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return stop_reason


# ---------------------------------------------------------------------------------------------
# nequip-allegro
# ---------------------------------------------------------------------------------------------


def nequip_config(config: RunConfig, statistics: DatasetStatistics, out: Path) -> dict[str, Any]:
    """The ``nequip-train`` (hydra) config of ``config``.

    Identical normalisation: average neighbour count = training mean, per-atom energy scale =
    training force RMS, per-type shift = E0 + mean interaction energy per atom (the equiforce
    trainer's numbers). No plateau schedule (it cannot fire in a budgeted run's epochs).
    """
    spec, data, training = config.model.spec(), config.data, config.training
    e0 = statistics.atomic_energy_dict
    shifts = {name: e0[name] + statistics.mean_interaction_energy for name in e0}
    seconds = int(round(training.time_budget_s))
    max_time = f"{seconds // 86400:02d}:{seconds % 86400 // 3600:02d}:"
    max_time += f"{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    loss = {
        "_target_": "nequip.train.EnergyForceLoss",
        "per_atom_energy": True,
        "coeffs": {"total_energy": training.energy_weight, "forces": training.forces_weight},
    }

    def mlp(prefix: str, hidden: tuple[int, ...]) -> dict[str, int]:
        return {f"{prefix}_depth": len(hidden), f"{prefix}_width": hidden[0]}

    return {
        "run": ["train"],
        "seed": config.seed,
        "cutoff_radius": spec.r_max,
        "model_type_names": list(e0),
        "chemical_species": list(e0),
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": config.seed,
            "train_file_path": data.train_file,
            "val_file_path": data.valid_file,
            "transforms": [
                {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                 "model_type_names": "${model_type_names}",
                 "chemical_species_to_atom_type_map":
                     "${list_to_identity_dict:${chemical_species}}"},
                {"_target_": "nequip.data.transforms.NeighborListTransform",
                 "r_max": "${cutoff_radius}"},
            ],
            "train_dataloader": {"_target_": "torch.utils.data.DataLoader",
                                 "batch_size": data.batch_size, "shuffle": True},
            "val_dataloader": {"_target_": "torch.utils.data.DataLoader",
                               "batch_size": data.valid_batch_size},
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager",
                              "type_names": "${model_type_names}"},
        },
        "trainer": {
            "_target_": "lightning.Trainer",
            "max_epochs": training.max_epochs,
            "max_time": max_time,
            "check_val_every_n_epoch": 1,
            "log_every_n_steps": 10,
            "num_sanity_val_steps": 0,
            "gradient_clip_val": training.clip_grad_norm,
            "gradient_clip_algorithm": "norm",
            "enable_progress_bar": False,
            "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger",
                       "save_dir": str(out), "name": "csv", "version": 0},
            "callbacks": [
                {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "monitor": "val0_epoch/weighted_sum", "dirpath": str(out), "filename": "best",
                 "save_top_k": 1, "save_last": True},
            ],
        },
        "training_module": {
            "_target_": "nequip.train.EMALightningModule",
            "ema_decay": training.ema.decay,
            "loss": loss,
            "val_metrics": {**loss, "coeffs": dict(loss["coeffs"])},
            "optimizer": {"_target_": "torch.optim.Adam", "lr": training.lr,
                          "amsgrad": training.amsgrad, "weight_decay": training.weight_decay},
            "model": {
                "_target_": "allegro.model.AllegroModel",
                "seed": config.seed,
                "model_dtype": spec.dtype,
                "type_names": "${model_type_names}",
                "r_max": "${cutoff_radius}",
                "l_max": spec.l_max,
                "parity": spec.parity,
                "radial_chemical_embed": {"_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
                                          "num_bessels": spec.num_bessels,
                                          "polynomial_cutoff_p": spec.polynomial_cutoff_p},
                **mlp("scalar_embed_mlp_hidden_layers", spec.two_body_mlp_hidden),
                "num_layers": spec.num_layers,
                "num_scalar_features": spec.num_scalar_features,
                "num_tensor_features": spec.num_tensor_features,
                **mlp("allegro_mlp_hidden_layers", spec.latent_mlp_hidden),
                **mlp("readout_mlp_hidden_layers", spec.readout_mlp_hidden),
                "tp_path_channel_coupling": spec.tp_path_channel_coupling,
                "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
                "per_type_energy_scales": "${training_data_stats:forces_rms}",
                "per_type_energy_shifts": shifts,
            },
        },
    }


def _train_nequip(bin_dir, config, statistics, work: Path, env: dict[str, str]):
    import yaml

    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(nequip_config(config, statistics, out), sort_keys=False)
    (work / "config.yaml").write_text(text)
    command = [str(bin_dir / "nequip-train"), "-cp", str(work), "-cn", "config",
               f"hydra.run.dir={out}"]
    start = time.monotonic()
    with open(work / "train.log", "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env)
    metrics = out / "csv" / "version_0" / "metrics.csv"
    rows = list(csv.DictReader(metrics.open())) if metrics.exists() else []
    valid = [(int(r["epoch"]), float(r["val0_epoch/weighted_sum"])) for r in rows
             if r.get("val0_epoch/weighted_sum")]
    done = len(valid) >= config.training.max_epochs
    summary: dict[str, Any] = {
        "stop_reason": f"exited {code.returncode}" if code.returncode else
        "max_epochs" if done else "time_budget",
        "total_wall_s_incl_data_prep": time.monotonic() - start,
        "epochs_completed": len(valid),
    }
    summary["valid_loss_per_epoch"] = [v for _, v in valid]
    if valid:
        summary["best_epoch"] = 1 + min(valid, key=lambda item: item[1])[0]
    best = out / "best.ckpt"
    return summary, best if best.exists() else None


# ---------------------------------------------------------------------------------------------
# conversion (runs in the peer's venv)
# ---------------------------------------------------------------------------------------------


def convert(converter: str, source: Path, destination: Path) -> None:
    """Convert a peer's model file to an equiforce model file; versions into ``DEST.json``."""
    import torch

    from equiforce.models.io import save_model

    if converter == "mace-torch":
        import mace  # noqa: F401  (before e3nn: mace patches torch.load for e3nn 0.4.4)

        from equiforce.interop import from_mace_torch

        model = from_mace_torch(torch.load(source, map_location="cpu", weights_only=False))
    else:
        from nequip.model import ModelFromCheckpoint
        from nequip.utils.global_state import set_global_state

        from equiforce.interop import from_nequip_allegro

        set_global_state(allow_tf32=False)
        loaded = ModelFromCheckpoint(str(source))
        model = from_nequip_allegro(getattr(loaded, "sole_model", loaded))
    save_model(model, destination)
    facts = {"converted_from": str(source),
             "peer_versions": {p: metadata.version(p) for p in _VERSIONS[converter]}}
    destination.with_suffix(".json").write_text(json.dumps(facts, indent=1))


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.peer_training CONVERTER SOURCE DEST`` (in the peer's venv)."""
    parser = argparse.ArgumentParser(description=convert.__doc__)
    parser.add_argument("converter", choices=CONVERTERS)
    parser.add_argument("source", type=Path)
    parser.add_argument("destination", type=Path)
    args = parser.parse_args(argv)
    convert(args.converter, args.source, args.destination)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
