"""Equal-budget Allegro training on AcAc: equiforce vs nequip-allegro (CPU).

The Allegro mode of ``acac_train.py`` (``acac_train.py --model allegro`` calls ``main`` here;
``python benchmarks/allegro_train.py`` works too). Data, split, budget and evaluation are those
of the MACE mode (see ``acac_train.py``): the first 450 frames of ``acac/train_300K.xyz`` train,
the last 50 validate (byte-identical files for both codes), E0s from
``acac/isolated_atoms.xyz``; both codes train *at the same time* with one thread each for
``--budget-s`` seconds of training loop; one evaluator (equiforce's ``predict`` + the
``error_metrics`` of ``acac_train.py``) scores both on all frames of ``test_MD_300K`` and
``test_MD_600K``.

Model (``ALLEGRO``; the defaults of ``configs/allegro_example.yaml``): l_max 1 with both
parities, 2 layers, 64 scalar / 16 tensor features, two-body / latent / readout MLP hidden
widths 64 / 64 / 32, SiLU, per-(channel, path) tensor-product weights, 8 Bessel functions,
polynomial cutoff p = 6, r_max 5 Å, float32. Normalisation (identical numbers in both codes):
average neighbour count = mean over training atoms, per-atom energy scale = training force
RMS, per-type shift = E0 + mean interaction energy per atom of the training set.

Optimisation (identical where the codes allow): loss 1 x per-atom-energy MSE + 100 x
force-component MSE; Adam with AMSGrad, lr 0.002, weight decay 5e-7 (L2, ``torch.optim.Adam``);
gradient-norm clipping 10; EMA of the weights, decay 0.99, used for validation and the model
kept; batch 5 (validation 10); the model kept is the one at the lowest validation loss. The
learning-rate plateau schedule (factor 0.8, patience 50 epochs) is left out of the nequip
config: it cannot fire within the ~10-20 epochs of a budgeted run.

Budget: equiforce ``training.time_budget_s`` (stops inside the epoch in which the budget runs
out, validates that partial epoch, counts it); nequip-allegro ``trainer.max_time`` (Lightning's
``Timer``: stops at the first batch after the budget; the partial epoch is not validated, so its
model is the best of the completed epochs). Data preprocessing is outside both budgets.

nequip-allegro runs as ``nequip-train`` (hydra) from ``--nequip-venv`` with the config this
script writes to ``<run>/nequip/config.yaml`` (its outputs in ``<run>/nequip/out``). For the
evaluation its best checkpoint is loaded with ``nequip.model.ModelFromCheckpoint`` (EMA
weights) and converted with ``equiforce.interop.from_nequip_allegro`` (exact parity, tested in
``tests/interop/test_nequip_allegro.py``) in the nequip environment.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acac_train as common  # noqa: E402  (shared data, metrics and machine helpers)

REPO_ROOT = common.REPO_ROOT
TEST_SETS = common.TEST_SETS
TYPE_NAMES = ("H", "C", "O")
Z_OF = {"H": 1, "C": 6, "O": 8}

ALLEGRO: dict[str, Any] = {
    "r_max": 5.0,
    "l_max": 1,
    "parity": True,
    "num_layers": 2,
    "num_scalar_features": 64,
    "num_tensor_features": 16,
    "two_body_mlp_hidden": [64],
    "latent_mlp_hidden": [64],
    "readout_mlp_hidden": [32],
    "mlp_nonlinearity": "silu",
    "tp_path_channel_coupling": True,
    "num_bessels": 8,
    "polynomial_cutoff_p": 6,
}
OPTIM: dict[str, Any] = {
    "energy_weight": 1.0,
    "forces_weight": 100.0,
    "optimizer": "adam",
    "amsgrad": True,
    "lr": 0.002,
    "weight_decay": 5e-7,
    "clip_grad": 10.0,
    "ema_decay": 0.99,
    "batch_size": 5,
    "valid_batch_size": 10,
    "scheduler (equiforce only)": "ReduceLROnPlateau factor 0.8 patience 50",
}


# ---------------------------------------------------------------------------------------------
# dataset statistics (the same numbers go into both codes)
# ---------------------------------------------------------------------------------------------


def energy_shifts(train: Path, e0s: dict[int, float]) -> dict[str, float]:
    """E0 + mean interaction energy per atom of the training set, per type (eV)."""
    from ase.io import read

    per_atom = [
        (a.get_potential_energy() - sum(e0s[int(z)] for z in a.numbers)) / len(a)
        for a in read(train, ":")
    ]
    mean = float(np.mean(per_atom))
    return {name: e0s[Z_OF[name]] + mean for name in TYPE_NAMES}


# ---------------------------------------------------------------------------------------------
# equiforce side
# ---------------------------------------------------------------------------------------------


def ours_run_config(args: argparse.Namespace, paths: dict[str, Path], out_dir: Path) -> dict:
    """equiforce ``RunConfig`` (as a dict) for ``ALLEGRO`` and ``OPTIM``."""
    return {
        "output_dir": str(out_dir),
        "seed": args.seed,
        "data": {
            "train_file": str(paths["train"]),
            "valid_file": str(paths["valid"]),
            "isolated_atoms_file": str(paths["isolated"]),
            "batch_size": OPTIM["batch_size"],
            "valid_batch_size": OPTIM["valid_batch_size"],
        },
        "model": {"family": "allegro", **model_params(args), "dtype": args.dtype},
        "training": {
            "max_epochs": 100000,
            "optimizer": OPTIM["optimizer"],
            "amsgrad": OPTIM["amsgrad"],
            "lr": OPTIM["lr"],
            "weight_decay": OPTIM["weight_decay"],
            "energy_weight": OPTIM["energy_weight"],
            "forces_weight": OPTIM["forces_weight"],
            "stress_weight": 0.0,
            "scheduler": {"factor": 0.8, "patience": 50},
            "ema": {"enabled": True, "decay": OPTIM["ema_decay"]},
            "clip_grad_norm": OPTIM["clip_grad"],
            "stage_two": {"enabled": False},
            "time_budget_s": float(args.budget_s),
            "device": "cpu",
            "progress_bar": False,
        },
    }


def model_params(args: argparse.Namespace) -> dict[str, Any]:
    """``ALLEGRO`` with the smoke-mode reductions applied."""
    params = dict(ALLEGRO)
    if args.smoke:
        params.update(num_scalar_features=16, num_tensor_features=4, two_body_mlp_hidden=[16],
                      latent_mlp_hidden=[16], readout_mlp_hidden=[8])
    return params


def worker_ours_train(args: argparse.Namespace) -> dict:
    """Train equiforce's Allegro in this process; returns a summary."""
    import torch

    torch.set_num_threads(args.threads)
    import equiforce.models.allegro  # noqa: F401  (registers the family)
    from equiforce.train.config import RunConfig
    from equiforce.train.run import train

    run_dir = Path(args.run_dir)
    paths = {k: Path(v) for k, v in json.loads((run_dir / "paths.json").read_text()).items()}
    config = RunConfig.from_dict(ours_run_config(args, paths, run_dir / "ours"))
    start = time.monotonic()
    result = train(config)
    return {
        "epochs_completed": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "training_loop_wall_s": result.final_metrics.get("wall_s"),
        "total_wall_s_incl_data_prep": time.monotonic() - start,
        "final_metrics": result.final_metrics,
        "model_path": str(result.model_path),
        "threads": torch.get_num_threads(),
        "config": config.to_dict(),
    }


def _predict_to_npz(model, paths: dict[str, Path], out_dir: Path, batch_size: int) -> dict:
    """Predict every test set with an equiforce ``Potential``; ``pred_<set>.npz`` files."""
    from equiforce.data.extxyz import read_configurations
    from equiforce.train.evaluate import predict

    out = {}
    for name in TEST_SETS:
        start = time.monotonic()
        pred = predict(model, read_configurations(paths[name]), batch_size=batch_size)
        np.savez(out_dir / f"pred_{name}.npz", energy=pred.energy, forces=pred.forces)
        out[name] = {"eval_wall_s": time.monotonic() - start}
    out["model_dtype"] = str(model.dtype).replace("torch.", "")
    return out


def worker_ours_eval(args: argparse.Namespace) -> dict:
    """Predict the test sets with the exported equiforce model."""
    import torch

    torch.set_num_threads(args.threads)
    import equiforce.models.allegro  # noqa: F401
    from equiforce.models.io import load_model

    run_dir = Path(args.run_dir)
    paths = {k: Path(v) for k, v in json.loads((run_dir / "paths.json").read_text()).items()}
    model = load_model(run_dir / "ours" / "model.pt")
    return _predict_to_npz(model, paths, run_dir / "ours", args.eval_batch_size)


# ---------------------------------------------------------------------------------------------
# nequip-allegro side
# ---------------------------------------------------------------------------------------------


def _max_time(seconds: float) -> str:
    """Lightning ``max_time`` string DD:HH:MM:SS."""
    s = int(round(seconds))
    return f"{s // 86400:02d}:{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def nequip_config(args: argparse.Namespace, paths: dict[str, Path], out: Path) -> dict:
    """The ``nequip-train`` (hydra) config matching ``ALLEGRO`` and ``OPTIM``."""
    m = model_params(args)
    shifts = energy_shifts(paths["train"], common.isolated_energies(paths["isolated"]))
    loss = {
        "_target_": "nequip.train.EnergyForceLoss",
        "per_atom_energy": True,
        "coeffs": {"total_energy": OPTIM["energy_weight"], "forces": OPTIM["forces_weight"]},
    }
    return {
        "run": ["train"],
        "seed": args.seed,
        "cutoff_radius": m["r_max"],
        "model_type_names": list(TYPE_NAMES),
        "chemical_species": list(TYPE_NAMES),
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": args.seed,
            "train_file_path": str(paths["train"]),
            "val_file_path": str(paths["valid"]),
            "transforms": [
                {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                 "model_type_names": "${model_type_names}",
                 "chemical_species_to_atom_type_map":
                     "${list_to_identity_dict:${chemical_species}}"},
                {"_target_": "nequip.data.transforms.NeighborListTransform",
                 "r_max": "${cutoff_radius}"},
            ],
            "train_dataloader": {"_target_": "torch.utils.data.DataLoader",
                                 "batch_size": OPTIM["batch_size"], "shuffle": True},
            "val_dataloader": {"_target_": "torch.utils.data.DataLoader",
                               "batch_size": OPTIM["valid_batch_size"]},
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager",
                              "type_names": "${model_type_names}"},
        },
        "trainer": {
            "_target_": "lightning.Trainer",
            "max_epochs": 100000,
            "max_time": _max_time(args.budget_s),
            "check_val_every_n_epoch": 1,
            "log_every_n_steps": 10,
            "num_sanity_val_steps": 0,
            "gradient_clip_val": OPTIM["clip_grad"],
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
            "ema_decay": OPTIM["ema_decay"],
            "loss": loss,
            "val_metrics": {**loss, "coeffs": dict(loss["coeffs"])},
            "optimizer": {"_target_": "torch.optim.Adam", "lr": OPTIM["lr"],
                          "amsgrad": OPTIM["amsgrad"], "weight_decay": OPTIM["weight_decay"]},
            "model": {
                "_target_": "allegro.model.AllegroModel",
                "seed": args.seed,
                "model_dtype": args.dtype,
                "type_names": "${model_type_names}",
                "r_max": "${cutoff_radius}",
                "l_max": m["l_max"],
                "parity": m["parity"],
                "radial_chemical_embed": {"_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
                                          "num_bessels": m["num_bessels"],
                                          "polynomial_cutoff_p": m["polynomial_cutoff_p"]},
                "scalar_embed_mlp_hidden_layers_depth": len(m["two_body_mlp_hidden"]),
                "scalar_embed_mlp_hidden_layers_width": m["two_body_mlp_hidden"][0],
                "num_layers": m["num_layers"],
                "num_scalar_features": m["num_scalar_features"],
                "num_tensor_features": m["num_tensor_features"],
                "allegro_mlp_hidden_layers_depth": len(m["latent_mlp_hidden"]),
                "allegro_mlp_hidden_layers_width": m["latent_mlp_hidden"][0],
                "readout_mlp_hidden_layers_depth": len(m["readout_mlp_hidden"]),
                "readout_mlp_hidden_layers_width": m["readout_mlp_hidden"][0],
                "tp_path_channel_coupling": m["tp_path_channel_coupling"],
                "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
                "per_type_energy_scales": "${training_data_stats:forces_rms}",
                "per_type_energy_shifts": shifts,
            },
        },
    }


def run_nequip_train(args: argparse.Namespace, paths: dict[str, Path], run_dir: Path):
    """Write the config and start ``nequip-train`` (returns the process)."""
    import yaml

    work = run_dir / "nequip"
    out = work / "out"
    out.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(nequip_config(args, paths, out),
                                                     sort_keys=False))
    command = [str(args.nequip_venv / "bin" / "nequip-train"), "-cp", str(work), "-cn", "config",
               f"hydra.run.dir={out}"]
    log = open(work / "train.log", "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=str(work),
                            env=common.thread_env(args.threads))


def nequip_summary(run_dir: Path, start: float, end: float) -> dict:
    """Epochs, validation losses and the best epoch from nequip's CSV log and checkpoint."""
    import csv

    out = run_dir / "nequip" / "out"
    summary: dict[str, Any] = {"total_wall_s_incl_data_prep": end - start}
    metrics = out / "csv" / "version_0" / "metrics.csv"
    if metrics.exists():
        rows = list(csv.DictReader(metrics.open()))
        val = [(int(r["epoch"]), float(r["val0_epoch/weighted_sum"])) for r in rows
               if r.get("val0_epoch/weighted_sum")]
        forces = [float(r["val0_epoch/forces_mse"]) for r in rows
                  if r.get("val0_epoch/forces_mse")]
        summary["validated_epochs"] = len(val)
        summary["epochs_completed"] = len(val)
        summary["val_weighted_sum"] = [v for _, v in val]
        summary["val_force_rmse_meV_per_A"] = [1000 * f**0.5 for f in forces]
        if val:
            summary["best_epoch"] = 1 + min(val, key=lambda t: t[1])[0]
    log = (run_dir / "nequip" / "train.log").read_text(errors="replace")
    summary["log_tail"] = log[-1500:]
    return summary


def worker_nequip_eval(args: argparse.Namespace) -> dict:
    """Convert nequip's best checkpoint (EMA weights) to equiforce and predict the test sets."""
    import torch
    from nequip.model import ModelFromCheckpoint
    from nequip.utils.global_state import set_global_state

    from equiforce.interop import from_nequip_allegro

    torch.set_num_threads(args.threads)
    set_global_state(allow_tf32=False)
    run_dir = Path(args.run_dir)
    paths = {k: Path(v) for k, v in json.loads((run_dir / "paths.json").read_text()).items()}
    ckpt = run_dir / "nequip" / "out" / "best.ckpt"
    model = ModelFromCheckpoint(str(ckpt))
    if hasattr(model, "sole_model"):
        model = model.sole_model
    elif isinstance(model, torch.nn.ModuleDict):
        model = next(iter(model.values()))
    potential = from_nequip_allegro(model)
    out = _predict_to_npz(potential, paths, run_dir / "nequip", args.eval_batch_size)
    out["checkpoint"] = str(ckpt)
    out["checkpoint_epoch"] = int(torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"])
    return out


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------


def worker_command(python: str, mode: str, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """Command line of a worker subprocess of this script."""
    return [python, str(Path(__file__).resolve()), "--worker", mode, "--run-dir", str(run_dir),
            "--threads", str(args.threads), "--budget-s", str(args.budget_s),
            "--seed", str(args.seed), "--dtype", args.dtype,
            "--eval-batch-size", str(args.eval_batch_size)] + (["--smoke"] if args.smoke else [])


def start_worker(python: str, mode: str, args: argparse.Namespace, run_dir: Path, log: Path):
    """Start a worker subprocess, output to ``log``."""
    return subprocess.Popen(worker_command(python, mode, args, run_dir), stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env=common.thread_env(args.threads))


def print_table(report: dict) -> None:
    """Epochs and test errors with ratios nequip-allegro / equiforce."""
    print("\nTraining (budget %.0f s, %d thread(s) each, in parallel):" % (
        report["settings"]["budget_s"], report["settings"]["threads"]))
    for name, key in (("equiforce", "ours"), ("nequip", "nequip")):
        r = report.get(key, {})
        print(f"  {name:10s} epochs {r.get('epochs_completed')}, best epoch {r.get('best_epoch')}"
              f", error: {r.get('error')}")
    print("\nTest errors (RMSE / MAE); ratio = nequip-allegro / equiforce (> 1: equiforce better)")
    for name in TEST_SETS:
        o = report["results"].get("ours", {}).get(name)
        n = report["results"].get("nequip", {}).get(name)
        for label, key, unit in (("energy", "energy", "meV"),
                                 ("energy/atom", "energy", "meV_per_atom"),
                                 ("forces", "forces", "meV_per_A")):
            def cell(r: dict | None) -> str:
                if not r:
                    return f"{'n/a':>19s}"
                return f"{r[f'{key}_rmse_{unit}']:8.2f} / {r[f'{key}_mae_{unit}']:8.2f}"

            ratio = (f"{n[f'{key}_rmse_{unit}'] / o[f'{key}_rmse_{unit}']:.2f}"
                     if o and n else "n/a")
            print(f"  {name:13s} {label + ' (' + unit + ')':26s} {cell(o)} {cell(n)} {ratio:>8s}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=600.0, help="training wall budget per code")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench_out", help="output folder")
    p.add_argument("--data-dir", type=Path, default=common.DEFAULT_DATA_DIR)
    p.add_argument("--nequip-venv", type=Path, default=REPO_ROOT / ".venv-nequip",
                   help="virtual environment with nequip + nequip-allegro (nequip-train)")
    p.add_argument("--threads", type=int, default=1, help="threads per code")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--only", choices=["ours", "nequip"], help="run one code only")
    p.add_argument("--smoke", action="store_true",
                   help="tiny run: 20 train / 5 valid, 10 test configs, 16/4 features, 30 s")
    p.add_argument("--worker", choices=["ours-train", "ours-eval", "nequip-eval"],
                   help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    p.add_argument("--model", choices=["allegro"], help=argparse.SUPPRESS)  # from acac_train
    p.add_argument("--mode", choices=["parallel"], default="parallel", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.worker:
        handler = {"ours-train": worker_ours_train, "ours-eval": worker_ours_eval,
                   "nequip-eval": worker_nequip_eval}[args.worker]
        print("RESULT " + json.dumps(handler(args), default=str), flush=True)
        return 0
    acac = args.data_dir / "acac"
    needed = ["train_300K.xyz", "isolated_atoms.xyz"] + [f"{n}.xyz" for n in TEST_SETS]
    missing = [n for n in needed if not (acac / n).exists()]
    if missing:
        print(f"AcAc data missing under {acac}: {missing} (pass --data-dir); nothing to do")
        return 2
    run_ours, run_nequip = args.only in (None, "ours"), args.only in (None, "nequip")
    nequip_python = args.nequip_venv / "bin" / "python"
    if run_nequip and not (args.nequip_venv / "bin" / "nequip-train").exists():
        print(f"nequip-train not found in {args.nequip_venv} (pass --nequip-venv); nothing to do")
        return 2
    if args.smoke:
        args.budget_s = min(args.budget_s, 30.0)

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (args.out / f"acac_train_allegro_{stamp}{'_smoke' if args.smoke else ''}").resolve()
    run_dir.mkdir(parents=True, exist_ok=False)
    paths = common.prepare_data(args.data_dir, run_dir, args.smoke)
    (run_dir / "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    versions = subprocess.run(
        [str(nequip_python), "-c", "import nequip, allegro, torch, e3nn, lightning; print("
         "nequip.__version__, allegro.__version__, torch.__version__, e3nn.__version__, "
         "lightning.__version__)"], capture_output=True, text=True)
    machine = common.machine_info(args.nequip_venv)
    machine.pop("mace_venv_versions", None)
    machine["nequip_venv_versions (nequip allegro torch e3nn lightning)"] = (
        versions.stdout.strip() or versions.stderr[-300:])
    report: dict[str, Any] = {
        "benchmark": "acac_train_allegro",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                     if k not in ("worker", "run_dir")},
        "model": {**model_params(args), "dtype": args.dtype},
        "optimisation": OPTIM,
        "split": "train = frames 0-449 of train_300K.xyz, valid = frames 450-499 (fixed)"
        if not args.smoke else "smoke: train = frames 0-19, valid = frames 495-499",
        "e0s_eV": {str(z): e for z, e in common.isolated_energies(paths["isolated"]).items()},
        "run_dir": str(run_dir),
        "results": {},
    }
    results_path = run_dir / "results.json"

    def save() -> None:
        results_path.write_text(json.dumps(report, indent=2, default=str))

    save()
    print(f"run folder {run_dir}", flush=True)
    now = lambda: f"[{_dt.datetime.now():%H:%M:%S}]"  # noqa: E731
    ours_proc = nequip_proc = None
    if run_ours:
        print(f"{now()} equiforce training starts", flush=True)
        ours_proc = start_worker(sys.executable, "ours-train", args, run_dir,
                                 run_dir / "ours_train.log")
    if run_nequip:
        print(f"{now()} nequip-allegro training starts", flush=True)
        nequip_start = time.monotonic()
        nequip_proc = run_nequip_train(args, paths, run_dir)
    if nequip_proc is not None:
        code = nequip_proc.wait()
        report["nequip"] = nequip_summary(run_dir, nequip_start, time.monotonic())
        report["nequip"]["returncode"] = code
        report["nequip"]["config"] = str(run_dir / "nequip" / "config.yaml")
        print(f"{now()} nequip-allegro training done: exit {code}, "
              f"{report['nequip'].get('epochs_completed')} epochs", flush=True)
        save()
    if ours_proc is not None:
        report["ours"] = common.worker_result(ours_proc, run_dir / "ours_train.log")
        brief = {k: report["ours"].get(k) for k in ("epochs_completed", "stop_reason", "error")}
        print(f"{now()} equiforce training done: {brief}", flush=True)
        save()

    references = {name: common.reference_labels(paths[name]) for name in TEST_SETS}
    if run_nequip and (run_dir / "nequip" / "out" / "best.ckpt").exists():
        proc = start_worker(str(nequip_python), "nequip-eval", args, run_dir,
                            run_dir / "nequip_eval.log")
        report["nequip"]["eval"] = common.worker_result(proc, run_dir / "nequip_eval.log")
    elif run_nequip:
        report["nequip"]["error"] = "no best.ckpt written"
    if run_ours and "error" not in report.get("ours", {}):
        proc = start_worker(sys.executable, "ours-eval", args, run_dir, run_dir / "ours_eval.log")
        report["ours"]["eval"] = common.worker_result(proc, run_dir / "ours_eval.log")
    for code in ("ours", "nequip"):
        report["results"][code] = {}
        for name in TEST_SETS:
            pred_path = run_dir / code / f"pred_{name}.npz"
            if pred_path.exists():
                report["results"][code][name] = common.error_metrics(
                    references[name], dict(np.load(pred_path)))
    save()
    print_table(report)
    print(f"\nwrote {results_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
