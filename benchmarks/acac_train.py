"""Equal-budget training benchmark on AcAc: equiforce vs mace-torch (CPU).

Both codes train the same MACE architecture on ``acac/train_300K.xyz`` for the same wall-clock
budget and are then evaluated, by the same code, on ``acac/test_MD_300K.xyz`` and
``acac/test_MD_600K.xyz``.

Data: the first 450 frames of ``train_300K.xyz`` are the training set and the last 50 the
validation set (a fixed split, no shuffling; written as byte-identical frame copies to
``<run>/data/{train,valid}.xyz`` and given to both codes as explicit files). E0s come from
``acac/isolated_atoms.xyz`` (given to mace-torch as ``--E0s``, to equiforce as
``data.isolated_atoms_file``).

Model and optimisation (``HYPERPARAMETERS``; mace-torch's defaults unless noted): MACE with
``--channels`` (default 32) x (0e + 1o) hidden features (max_L 1), correlation 3, 2
interactions, max_ell 3, r_max 5 Å, 8 Bessel functions, polynomial cutoff p=5, radial MLP
[64, 64, 64], readout MLP 16x0e, residual interaction blocks, ScaleShift (scale = training force
RMS, shift = mean interaction energy per atom, mace-torch's ``rms_forces_scaling``).
Loss: energy-per-atom MSE x 1 + force-component MSE x 100. Adam (AMSGrad), lr 0.01, weight
decay 5e-7, ReduceLROnPlateau (factor 0.8, patience 50), gradient-norm clipping 10, EMA of the
weights with decay 0.99 (mace-torch needs ``--ema``; equiforce's default), batch size 5,
validation batch size 10, no stage two / SWA. Model dtype ``--dtype`` (default float32).
The exported model of each code is the EMA weights at the epoch with the lowest validation
loss.

Budget (``--budget-s``, default 900): the training loop's wall clock, data preprocessing and
statistics excluded for both.

* equiforce: ``equiforce.train.train`` with ``training.time_budget_s``; the trainer stops
  inside the epoch in which the budget runs out, then validates that partial epoch (it counts).
* mace-torch: ``mace_run_train`` with a huge ``--max_num_epochs``; this script watches its log
  and starts the clock at "Started training" (its initial validation pass is inside the budget).
  When the budget has run out it lets the running epoch finish and validate (so mace-torch gets
  *at least* the budget, up to one epoch more), waits 5 s for the checkpoint write, and stops
  the process (SIGTERM to the process group it started). A second ``mace_run_train`` call with
  ``--restart_latest --max_num_epochs 0`` then loads the latest (= lowest validation loss)
  checkpoint and writes mace-torch's own ``.model`` file without training further.

Threads (``--mode``): ``parallel`` (default) trains both at the same time with 1 thread each
(``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``), so load from other processes on a shared
machine hits both alike; ``sequential`` trains one after the other with ``--threads`` each
(default 2). Evaluation runs after both trainings have finished.

Run it with the main environment's python (equiforce + e3nn 0.6); mace-torch is called from
``--mace-venv`` (default ``.venv-mace``)::

    .venv/bin/python benchmarks/acac_train.py                 # 900 s budget (~20 min in parallel)
    .venv/bin/python benchmarks/acac_train.py --smoke         # ~3 min check of the plumbing

Output: ``bench_out/acac_train_<timestamp>/`` with ``results.json``, both runs, their logs and
predictions; a table on stdout.

``--model allegro`` runs the Allegro comparison instead (equiforce vs nequip-allegro's
``nequip-train``, same data, split, budget and evaluator); it is implemented in
``benchmarks/allegro_train.py``, whose docstring documents the model and both configs::

    .venv/bin/python benchmarks/acac_train.py --model allegro --budget-s 600
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common  # noqa: E402
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
TEST_SETS = ("test_MD_300K", "test_MD_600K")

HYPERPARAMETERS: dict[str, Any] = {
    "channels": 32,  # overridden by --channels
    "max_L": 1,
    "correlation": 3,
    "num_interactions": 2,
    "max_ell": 3,
    "r_max": 5.0,
    "num_bessel": 8,
    "num_polynomial_cutoff": 5,
    "radial_MLP": [64, 64, 64],
    "MLP_irreps": "16x0e",
    "interaction": "RealAgnosticResidualInteractionBlock",
    "scaling": "rms_forces_scaling (scale = force RMS, shift = mean interaction energy/atom)",
    "energy_weight": 1.0,
    "forces_weight": 100.0,
    "optimizer": "adam",
    "amsgrad": True,
    "lr": 0.01,
    "weight_decay": 5e-7,
    "scheduler": "ReduceLROnPlateau",
    "lr_factor": 0.8,
    "scheduler_patience": 50,
    "clip_grad": 10.0,
    "ema_decay": 0.99,
    "batch_size": 5,
    "valid_batch_size": 10,
}


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def xyz_frames(path: Path) -> list[str]:
    """Split an extxyz file into the text of its frames (byte-identical copies)."""
    lines = path.read_text().splitlines(keepends=True)
    frames, n = [], 0
    while n < len(lines):
        if not lines[n].strip():
            n += 1
            continue
        count = int(lines[n].split()[0])
        frames.append("".join(lines[n : n + count + 2]))
        n += count + 2
    return frames


def prepare_data(data_dir: Path, run_dir: Path, smoke: bool) -> dict[str, Path]:
    """Write the fixed train/valid split (and, in smoke mode, short test files).

    Returns:
        Paths of ``train``, ``valid``, ``isolated`` and each test set.
    """
    acac = data_dir / "acac"
    out = run_dir / "data"
    out.mkdir(parents=True, exist_ok=True)
    frames = xyz_frames(acac / "train_300K.xyz")
    if len(frames) != 500:
        raise ValueError(f"{acac / 'train_300K.xyz'}: expected 500 frames, found {len(frames)}")
    train, valid = (frames[:20], frames[-5:]) if smoke else (frames[:450], frames[450:])
    paths = {"train": out / "train.xyz", "valid": out / "valid.xyz"}
    paths["train"].write_text("".join(train))
    paths["valid"].write_text("".join(valid))
    paths["isolated"] = acac / "isolated_atoms.xyz"
    for name in TEST_SETS:
        if smoke:
            paths[name] = out / f"{name}.xyz"
            paths[name].write_text("".join(xyz_frames(acac / f"{name}.xyz")[:10]))
        else:
            paths[name] = acac / f"{name}.xyz"
    return paths


def isolated_energies(path: Path) -> dict[int, float]:
    """E0 per atomic number from a file of single-atom frames (energy on the ASE calculator)."""
    from ase.io import read

    energies = {}
    for atoms in read(path, ":"):
        if len(atoms) != 1:
            raise ValueError(f"{path}: frame with {len(atoms)} atoms; expected isolated atoms")
        energy = atoms.info.get("energy")
        if energy is None:
            energy = atoms.get_potential_energy()
        energies[int(atoms.numbers[0])] = float(energy)
    return energies


def reference_labels(path: Path) -> dict[str, np.ndarray]:
    """Reference energies (eV), forces (eV/Å, concatenated) and atom counts of a test file."""
    from ase.io import read

    frames = read(path, ":")
    return {
        "energy": np.array([a.get_potential_energy() for a in frames], dtype=np.float64),
        "forces": np.concatenate([a.get_forces() for a in frames]).astype(np.float64),
        "n_atoms": np.array([len(a) for a in frames]),
    }


def error_metrics(ref: dict[str, np.ndarray], pred: dict[str, np.ndarray]) -> dict[str, float]:
    """Energy (meV, meV/atom) and force-component (meV/Å) RMSE and MAE."""
    if pred["energy"].shape != ref["energy"].shape or pred["forces"].shape != ref["forces"].shape:
        raise ValueError("predictions and references have different shapes")
    de = (pred["energy"] - ref["energy"]) * 1000.0
    de_atom = de / ref["n_atoms"]
    df = (pred["forces"] - ref["forces"]).ravel() * 1000.0
    return {
        "energy_rmse_meV": float(np.sqrt(np.mean(de**2))),
        "energy_mae_meV": float(np.mean(np.abs(de))),
        "energy_rmse_meV_per_atom": float(np.sqrt(np.mean(de_atom**2))),
        "energy_mae_meV_per_atom": float(np.mean(np.abs(de_atom))),
        "energy_mean_error_meV": float(np.mean(de)),
        "forces_rmse_meV_per_A": float(np.sqrt(np.mean(df**2))),
        "forces_mae_meV_per_A": float(np.mean(np.abs(df))),
        "n_configs": int(len(de)),
    }


# ---------------------------------------------------------------------------------------------
# equiforce side (workers run with this script's python)
# ---------------------------------------------------------------------------------------------


def ours_run_config(args: argparse.Namespace, paths: dict[str, Path], out_dir: Path) -> dict:
    """The equiforce ``RunConfig`` (as a dict) matching ``HYPERPARAMETERS``."""
    h = HYPERPARAMETERS
    return {
        "output_dir": str(out_dir),
        "seed": args.seed,
        "data": {
            "train_file": str(paths["train"]),
            "valid_file": str(paths["valid"]),
            "isolated_atoms_file": str(paths["isolated"]),
            "batch_size": h["batch_size"],
            "valid_batch_size": h["valid_batch_size"],
        },
        "model": {"family": "mace", **ours_model_params(args)},
        "training": {
            "max_epochs": 100000,
            "optimizer": h["optimizer"],
            "amsgrad": h["amsgrad"],
            "lr": h["lr"],
            "weight_decay": h["weight_decay"],
            "energy_weight": h["energy_weight"],
            "forces_weight": h["forces_weight"],
            "scheduler": {"factor": h["lr_factor"], "patience": h["scheduler_patience"]},
            "ema": {"enabled": True, "decay": h["ema_decay"]},
            "clip_grad_norm": h["clip_grad"],
            "time_budget_s": float(args.budget_s),
            "device": "cpu",
            "progress_bar": False,
        },
    }


def ours_model_params(args: argparse.Namespace) -> dict[str, Any]:
    """``MACESpec`` fields for ``HYPERPARAMETERS`` (the dataset-derived ones are left out)."""
    h = HYPERPARAMETERS
    return {
        "r_max": h["r_max"],
        "num_channels": args.channels,
        "max_L": h["max_L"],
        "max_ell": h["max_ell"],
        "correlation": h["correlation"],
        "num_interactions": h["num_interactions"],
        "num_radial_basis": h["num_bessel"],
        "num_polynomial_cutoff": h["num_polynomial_cutoff"],
        "radial_mlp": list(h["radial_MLP"]),
        "readout_mlp_hidden": int(h["MLP_irreps"].split("x")[0]),
        "dtype": args.dtype,
        # mace-torch ScaleShiftMACE: residual first interaction (--interaction_first default)
        "first_interaction_residual": True,
    }


def worker_ours_train(args: argparse.Namespace) -> dict:
    """Train equiforce in this process; returns a summary."""
    import torch

    torch.set_num_threads(args.threads)
    import equiforce.models.mace  # noqa: F401  (registers the family)
    from equiforce.train.config import RunConfig
    from equiforce.train.run import train

    run_dir = Path(args.run_dir)
    paths = json.loads((run_dir / "paths.json").read_text())
    paths = {k: Path(v) for k, v in paths.items()}
    config = RunConfig.from_dict(ours_run_config(args, paths, run_dir / "ours"))
    start = time.monotonic()
    result = train(config)
    wall = time.monotonic() - start
    history_wall = result.final_metrics.get("wall_s")
    return {
        "epochs_completed": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "training_loop_wall_s": history_wall,
        "total_wall_s_incl_data_prep": wall,
        "final_metrics": result.final_metrics,
        "model_path": str(result.model_path),
        "threads": torch.get_num_threads(),
        "config": config.to_dict(),
    }


def worker_ours_eval(args: argparse.Namespace) -> dict:
    """Predict the test sets with the exported equiforce model; writes npz files."""
    import torch

    torch.set_num_threads(args.threads)
    import equiforce.models.mace  # noqa: F401
    from equiforce.data.extxyz import read_configurations
    from equiforce.models.io import load_model
    from equiforce.train.evaluate import predict

    run_dir = Path(args.run_dir)
    paths = {k: Path(v) for k, v in json.loads((run_dir / "paths.json").read_text()).items()}
    model = load_model(run_dir / "ours" / "model.pt")
    out = {}
    for name in TEST_SETS:
        start = time.monotonic()
        pred = predict(model, read_configurations(paths[name]), batch_size=args.eval_batch_size)
        np.savez(run_dir / "ours" / f"pred_{name}.npz", energy=pred.energy, forces=pred.forces)
        out[name] = {"eval_wall_s": time.monotonic() - start}
    out["model_dtype"] = str(model.dtype).replace("torch.", "")
    return out


# ---------------------------------------------------------------------------------------------
# mace-torch side
# ---------------------------------------------------------------------------------------------


def mace_arguments(args: argparse.Namespace, paths: dict[str, Path], work: Path) -> list[str]:
    """``mace_run_train`` arguments matching ``HYPERPARAMETERS``."""
    h = HYPERPARAMETERS
    e0s = isolated_energies(paths["isolated"])
    return [
        "--name", "acac",
        "--seed", str(args.seed),
        "--work_dir", str(work),
        "--device", "cpu",
        "--default_dtype", args.dtype,
        "--train_file", str(paths["train"]),
        "--valid_file", str(paths["valid"]),
        "--energy_key", "energy",
        "--forces_key", "forces",
        "--E0s", repr(e0s),
        "--model", "ScaleShiftMACE",
        "--scaling", "rms_forces_scaling",
        "--num_channels", str(args.channels),
        "--max_L", str(h["max_L"]),
        "--correlation", str(h["correlation"]),
        "--num_interactions", str(h["num_interactions"]),
        "--max_ell", str(h["max_ell"]),
        "--r_max", str(h["r_max"]),
        "--num_radial_basis", str(h["num_bessel"]),
        "--num_cutoff_basis", str(h["num_polynomial_cutoff"]),
        "--radial_MLP", str(h["radial_MLP"]),
        "--MLP_irreps", h["MLP_irreps"],
        "--interaction", h["interaction"],
        "--interaction_first", h["interaction"],
        "--loss", "weighted",
        "--energy_weight", str(h["energy_weight"]),
        "--forces_weight", str(h["forces_weight"]),
        "--optimizer", h["optimizer"],
        "--lr", str(h["lr"]),
        "--weight_decay", str(h["weight_decay"]),
        "--scheduler", h["scheduler"],
        "--lr_factor", str(h["lr_factor"]),
        "--scheduler_patience", str(h["scheduler_patience"]),
        "--clip_grad", str(h["clip_grad"]),
        "--ema",
        "--ema_decay", str(h["ema_decay"]),
        "--batch_size", str(h["batch_size"]),
        "--valid_batch_size", str(h["valid_batch_size"]),
        "--eval_interval", "1",
        "--patience", "100000",
        "--error_table", "TotalRMSE",
        "--plot", "False",
        "--num_workers", "0",
        "--save_cpu",
        "--keep_checkpoints",
    ]


_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) INFO: "
_START_LINE = re.compile(_STAMP + r"Started training", re.M)
_EPOCH_LINE = re.compile(_STAMP + r"Epoch (\d+): .*?loss=([0-9.eE+-]+)", re.M)


def _stamp(text: str) -> float:
    """Seconds since the epoch of a mace-torch log timestamp."""
    return _dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def parse_mace_log(text: str) -> dict[str, Any]:
    """Training start and per-epoch (index, validation loss, seconds since start) from a log."""
    start = _START_LINE.search(text)
    if start is None:
        return {"started": False, "epochs": []}
    t0 = _stamp(start.group(1))
    epochs = [
        (int(m.group(2)), float(m.group(3)), _stamp(m.group(1)) - t0)
        for m in _EPOCH_LINE.finditer(text)
    ]
    return {"started": True, "epochs": epochs}


def run_mace_train(
    args: argparse.Namespace, paths: dict[str, Path], run_dir: Path
) -> subprocess.Popen:
    """Start ``mace_run_train`` (its own process group) with output in ``mace/train.log``."""
    work = run_dir / "mace"
    work.mkdir(parents=True, exist_ok=True)
    command = [str(args.mace_venv / "bin" / "mace_run_train")]
    command += mace_arguments(args, paths, work) + ["--max_num_epochs", "100000"]
    (work / "command.txt").write_text(" ".join(command) + "\n")
    log = open(work / "train.log", "w")
    return subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=thread_env(args.threads),
        start_new_session=True, cwd=str(work),
    )


def watch_mace(proc: subprocess.Popen, log_path: Path, budget_s: float) -> dict:
    """Enforce the wall budget on a running ``mace_run_train`` (see the module docstring).

    Times come from mace-torch's own log timestamps: the clock starts at "Started training";
    the first epoch whose validation line is stamped at or after ``budget_s`` is the last one.
    If that epoch improved the validation loss, its checkpoint file is awaited before the
    process group is stopped.

    Returns:
        Epochs done, training-loop wall time and how the run ended.
    """
    stop_reason = "exited"
    wall_start = time.monotonic()
    hard_limit = wall_start + 2 * budget_s + 1200.0  # data preprocessing + one slow epoch
    checkpoints = log_path.parent / "checkpoints"
    while proc.poll() is None:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        parsed = parse_mace_log(text)
        over = [e for e in parsed["epochs"] if e[2] >= budget_s]
        if over:
            epoch, loss, _ = over[0]
            earlier = [e[1] for e in parsed["epochs"] if e[0] < epoch]
            if not earlier or loss < min(earlier):
                wanted = list(checkpoints.glob(f"*_epoch-{epoch}.pt"))
                deadline = time.monotonic() + 60.0
                while not wanted and time.monotonic() < deadline and proc.poll() is None:
                    time.sleep(0.2)
                    wanted = list(checkpoints.glob(f"*_epoch-{epoch}.pt"))
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
    parsed = parse_mace_log(log_path.read_text(errors="replace"))
    epochs = parsed["epochs"]
    if stop_reason == "time_budget":  # epochs logged after the budget epoch do not count
        last = next(n for n, e in enumerate(epochs) if e[2] >= budget_s)
        epochs = epochs[: last + 1]
    return {
        "epochs_completed": len(epochs),
        "training_loop_wall_s": epochs[-1][2] if epochs else None,
        "valid_loss_per_epoch": [e[1] for e in epochs],
        "stop_reason": stop_reason,
        "returncode": proc.returncode,
    }


def finalize_mace(
    args: argparse.Namespace, paths: dict[str, Path], run_dir: Path, epochs_completed: int
) -> dict:
    """Write mace-torch's ``.model`` from its latest checkpoint without training further.

    Checkpoints of epochs after the budget (possible when epochs are shorter than the time it
    takes to stop the process) are renamed ``*.late`` first, so they are not loaded.
    """
    work = run_dir / "mace"

    def epoch_of(path: Path) -> int:
        return int(re.search(r"_epoch-(\d+)", path.name).group(1))

    for path in (work / "checkpoints").glob("*_epoch-*.pt"):
        if epoch_of(path) >= epochs_completed:
            path.rename(path.with_suffix(".late"))
    checkpoints = sorted((work / "checkpoints").glob("*_epoch-*.pt"), key=epoch_of)
    if not checkpoints:
        raise RuntimeError(f"mace-torch wrote no checkpoint in {work / 'checkpoints'}")
    best_epoch = int(re.search(r"_epoch-(\d+)", checkpoints[-1].name).group(1))
    command = [str(args.mace_venv / "bin" / "mace_run_train")]
    command += mace_arguments(args, paths, work)
    command += ["--max_num_epochs", "0", "--restart_latest"]
    with open(work / "finalize.log", "w") as log:
        proc = subprocess.run(
            command, stdout=log, stderr=subprocess.STDOUT, env=thread_env(args.threads),
            cwd=str(work),
        )
    model = work / "acac.model"
    if proc.returncode != 0 or not model.exists():
        raise RuntimeError(f"mace-torch finalisation failed (see {work / 'finalize.log'})")
    return {"best_epoch": best_epoch + 1, "model_path": str(model)}


def worker_mace_eval(args: argparse.Namespace) -> dict:
    """Predict the test sets with mace-torch's ``.model`` (run in the mace-torch venv)."""
    import mace  # noqa: F401  (before e3nn)
    import torch
    from ase.io import read
    from mace import data as mace_data
    from mace import tools
    from mace.tools.torch_geometric.dataloader import DataLoader

    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    paths = {k: Path(v) for k, v in json.loads((run_dir / "paths.json").read_text()).items()}
    model = torch.load(run_dir / "mace" / "acac.model", map_location="cpu", weights_only=False)
    model = model.eval()
    dtype = next(model.parameters()).dtype
    torch.set_default_dtype(dtype)
    table = tools.AtomicNumberTable([int(z) for z in model.atomic_numbers])
    r_max = float(model.r_max)
    out = {}
    for name in TEST_SETS:
        start = time.monotonic()
        items = [
            mace_data.AtomicData.from_config(
                mace_data.config_from_atoms(atoms), z_table=table, cutoff=r_max
            )
            for atoms in read(paths[name], ":")
        ]
        loader = DataLoader(items, batch_size=args.eval_batch_size, shuffle=False, drop_last=False)
        energies, forces = [], []
        for batch in loader:
            result = model(batch.to_dict(), training=False, compute_force=True)
            energies.append(result["energy"].detach().double().numpy())
            forces.append(result["forces"].detach().double().numpy())
        np.savez(
            run_dir / "mace" / f"pred_{name}.npz",
            energy=np.concatenate(energies),
            forces=np.concatenate(forces),
        )
        out[name] = {"eval_wall_s": time.monotonic() - start}
    out["model_dtype"] = str(dtype).replace("torch.", "")
    return out


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------


def thread_env(threads: int) -> dict[str, str]:
    """Environment with the thread count pinned for OpenMP/MKL."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def worker_command(python: str, mode: str, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """Command line of a worker subprocess of this script."""
    return [
        python, str(Path(__file__).resolve()), "--worker", mode, "--run-dir", str(run_dir),
        "--threads", str(args.threads), "--budget-s", str(args.budget_s), "--seed", str(args.seed),
        "--channels", str(args.channels), "--dtype", args.dtype,
        "--eval-batch-size", str(args.eval_batch_size),
    ]


def start_worker(python: str, mode: str, args: argparse.Namespace, run_dir: Path, log: Path):
    """Start a worker subprocess, output to ``log``."""
    handle = open(log, "w")
    return subprocess.Popen(
        worker_command(python, mode, args, run_dir), stdout=handle, stderr=subprocess.STDOUT,
        env=thread_env(args.threads),
    )


def worker_result(proc: subprocess.Popen, log: Path) -> dict:
    """Wait for a worker and parse its ``RESULT`` line (or report its failure)."""
    proc.wait()
    text = log.read_text(errors="replace")
    for line in reversed(text.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"error": f"worker exited {proc.returncode}; see {log}", "log_tail": text[-3000:]}


def machine_info(mace_venv: Path) -> dict[str, Any]:
    """CPU, memory, OS, versions, git commit, and the versions in mace-torch's venv."""
    info = bench_common.machine_info(("torch", "equiforce"))
    mace_version = subprocess.run(
        [str(mace_venv / "bin" / "python"), "-c",
         "import mace, torch, e3nn; print(mace.__version__, torch.__version__, e3nn.__version__)"],
        capture_output=True, text=True,
    )
    info["mace_venv_versions"] = mace_version.stdout.strip() or mace_version.stderr[-300:]
    return info


def print_table(report: dict) -> None:
    """Summary table: epochs, and test errors of both codes with ratios."""
    ours, mace = report.get("ours", {}), report.get("mace", {})
    print("\nTraining (budget %.0f s, mode %s, %d thread(s) each):" % (
        report["settings"]["budget_s"], report["settings"]["mode"], report["settings"]["threads"]))
    for name, r in (("equiforce", ours), ("mace-torch", mace)):
        if "error" in r:
            print(f"  {name:10s} ERROR: {r['error']}")
            continue
        loop = r.get("training_loop_wall_s")
        loop_s = f"{loop:.0f} s" if isinstance(loop, (int, float)) else "?"
        print(
            f"  {name:10s} epochs {r.get('epochs_completed')}, best epoch {r.get('best_epoch')}, "
            f"loop wall {loop_s}, stop: {r.get('stop_reason')}"
        )
    print("\nTest errors (RMSE / MAE); ratio = mace-torch / equiforce (> 1: equiforce better):")
    print(
        f"  {'set':13s} {'quantity':26s} {'equiforce':>19s} {'mace-torch':>19s} "
        f"{'ratio RMSE':>10s}"
    )
    for name in TEST_SETS:
        o = report.get("results", {}).get("ours", {}).get(name)
        m = report.get("results", {}).get("mace", {}).get(name)
        for label, key, unit in (
            ("energy", "energy", "meV"),
            ("energy/atom", "energy", "meV_per_atom"),
            ("forces", "forces", "meV_per_A"),
        ):
            def cell(r: dict | None) -> str:
                if not r:
                    return f"{'n/a':>19s}"
                return f"{r[f'{key}_rmse_{unit}']:8.2f} / {r[f'{key}_mae_{unit}']:8.2f}"

            ratio = "n/a"
            if o and m:
                ratio = f"{m[f'{key}_rmse_{unit}'] / o[f'{key}_rmse_{unit}']:.2f}"
            print(f"  {name:13s} {label + ' (' + unit + ')':26s} {cell(o)} {cell(m)} {ratio:>10s}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["mace", "allegro"], default="mace",
                   help="architecture: mace (vs mace-torch) or allegro (vs nequip-allegro; "
                   "see allegro_train.py)")
    p.add_argument("--nequip-venv", type=Path, default=REPO_ROOT / ".venv-nequip",
                   help="virtual environment with nequip + nequip-allegro (--model allegro)")
    p.add_argument("--budget-s", type=float, default=900.0, help="training wall budget per code")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench_out", help="output folder")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="shared data folder")
    p.add_argument("--mace-venv", type=Path, default=REPO_ROOT / ".venv-mace",
                   help="virtual environment with mace-torch (mace_run_train)")
    p.add_argument("--mode", choices=["parallel", "sequential"], default="parallel",
                   help="train both at once (1 thread each) or one after the other")
    p.add_argument("--threads", type=int, default=None,
                   help="threads per code (default 1 in parallel mode, 2 in sequential)")
    p.add_argument("--channels", type=int, default=32, help="MACE channels (hidden Cx0e+Cx1o)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batch-size", type=int, default=32)
    p.add_argument("--only", choices=["ours", "mace", "nequip"],
                   help="run one code only (mace with --model mace, nequip with --model allegro)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny run: 20 train / 5 valid configs, 10 test configs, 8 channels, 30 s")
    p.add_argument("--worker", choices=["ours-train", "ours-eval", "mace-eval"],
                   help=argparse.SUPPRESS)
    p.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads is None:
        args.threads = 1 if args.mode == "parallel" else 2
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    if args.model == "allegro" and not args.worker:
        return _run_allegro(args)
    if args.only == "nequip":
        print("--only nequip needs --model allegro")
        return 2
    if args.worker:
        handler = {
            "ours-train": worker_ours_train,
            "ours-eval": worker_ours_eval,
            "mace-eval": worker_mace_eval,
        }[args.worker]
        print("RESULT " + json.dumps(handler(args)), flush=True)
        return 0

    acac = args.data_dir / "acac"
    needed = ["train_300K.xyz", "isolated_atoms.xyz"] + [f"{n}.xyz" for n in TEST_SETS]
    missing = [n for n in needed if not (acac / n).exists()]
    if missing:
        print(f"AcAc data missing under {acac}: {missing} (pass --data-dir); nothing to do")
        return 2
    run_ours, run_mace = args.only in (None, "ours"), args.only in (None, "mace")
    mace_train = args.mace_venv / "bin" / "mace_run_train"
    if run_mace and not mace_train.exists():
        print(f"{mace_train} not found (make install-mace, or pass --mace-venv); nothing to do")
        return 2
    if run_ours:
        try:
            import equiforce.models.mace  # noqa: F401
            from equiforce.train.run import train  # noqa: F401
        except ImportError as err:
            print(f"equiforce's MACE model or trainer is not available: {err}")
            return 2
    if args.smoke:
        args.budget_s, args.channels = min(args.budget_s, 30.0), 8

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (args.out / f"acac_train_{stamp}{'_smoke' if args.smoke else ''}").resolve()
    run_dir.mkdir(parents=True, exist_ok=False)
    paths = prepare_data(args.data_dir, run_dir, args.smoke)
    (run_dir / "paths.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    report: dict[str, Any] = {
        "benchmark": "acac_train",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(args.mace_venv),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                     if k not in ("worker", "run_dir")},
        "hyperparameters": {**HYPERPARAMETERS, "channels": args.channels, "dtype": args.dtype},
        "split": "train = frames 0-449 of train_300K.xyz, valid = frames 450-499 (fixed)"
        if not args.smoke else "smoke: train = frames 0-19, valid = frames 495-499",
        "e0s_eV": {str(z): e for z, e in isolated_energies(paths["isolated"]).items()},
        "run_dir": str(run_dir),
    }
    results_path = run_dir / "results.json"

    def save() -> None:
        results_path.write_text(json.dumps(report, indent=2, default=str))

    save()
    print(f"run folder {run_dir}", flush=True)

    # --- training ---------------------------------------------------------------------------
    def train_ours() -> subprocess.Popen:
        print(f"[{_dt.datetime.now():%H:%M:%S}] equiforce training starts", flush=True)
        return start_worker(sys.executable, "ours-train", args, run_dir, run_dir / "ours_train.log")

    def train_mace() -> dict:
        print(f"[{_dt.datetime.now():%H:%M:%S}] mace-torch training starts", flush=True)
        proc = run_mace_train(args, paths, run_dir)
        summary = watch_mace(proc, run_dir / "mace" / "train.log", args.budget_s)
        print(f"[{_dt.datetime.now():%H:%M:%S}] mace-torch training stopped: {summary}", flush=True)
        return summary

    ours_proc = None
    if run_ours and args.mode == "parallel":
        ours_proc = train_ours()
    if run_mace:
        report["mace"] = train_mace()
        save()
    if run_ours:
        if ours_proc is None:
            ours_proc = train_ours()
        report["ours"] = worker_result(ours_proc, run_dir / "ours_train.log")
        brief = {k: report["ours"].get(k) for k in ("epochs_completed", "stop_reason", "error")}
        print(f"[{_dt.datetime.now():%H:%M:%S}] equiforce training done: {brief}", flush=True)
        save()

    # --- finalisation and evaluation (after both trainings) -----------------------------------
    references = {name: reference_labels(paths[name]) for name in TEST_SETS}
    report["results"] = {}
    if run_mace:
        try:
            done = int(report["mace"]["epochs_completed"])
            report["mace"].update(finalize_mace(args, paths, run_dir, done))
            mace_python = str(args.mace_venv / "bin" / "python")
            proc = start_worker(mace_python, "mace-eval", args, run_dir, run_dir / "mace_eval.log")
            report["mace"]["eval"] = worker_result(proc, run_dir / "mace_eval.log")
        except RuntimeError as err:
            report["mace"]["error"] = str(err)
        save()
    if run_ours and "error" not in report.get("ours", {}):
        proc = start_worker(sys.executable, "ours-eval", args, run_dir, run_dir / "ours_eval.log")
        report["ours"]["eval"] = worker_result(proc, run_dir / "ours_eval.log")
        save()
    for code in ("ours", "mace"):
        if code not in report:
            continue
        report["results"][code] = {}
        for name in TEST_SETS:
            pred_path = run_dir / code / f"pred_{name}.npz"
            if pred_path.exists():
                pred = dict(np.load(pred_path))
                report["results"][code][name] = error_metrics(references[name], pred)
    save()
    print_table(report)
    print(f"\nwrote {results_path}")
    return 0


def _run_allegro(args: argparse.Namespace) -> int:
    """``--model allegro``: hand the shared options to ``allegro_train.main``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import allegro_train

    if args.mode != "parallel" or args.only == "mace":
        print("--model allegro supports --mode parallel and --only ours|nequip")
        return 2
    argv = ["--budget-s", str(args.budget_s), "--out", str(args.out), "--data-dir",
            str(args.data_dir), "--nequip-venv", str(args.nequip_venv), "--threads",
            str(args.threads), "--dtype", args.dtype, "--seed", str(args.seed),
            "--eval-batch-size", str(args.eval_batch_size)]
    argv += (["--only", args.only] if args.only else []) + (["--smoke"] if args.smoke else [])
    return allegro_train.main(argv)


if __name__ == "__main__":
    sys.exit(main())
