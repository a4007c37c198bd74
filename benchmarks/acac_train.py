"""Equal-budget training on AcAc: equiforce against mace-torch or nequip-allegro (CPU).

Both codes train the model of ``--preset`` (``equiforce.models.presets``; its family picks the
peer: MACE -> mace-torch, Allegro -> nequip-allegro) on the fixed split of ``benchmarks.acac``
(450 / 50 frames of ``train_300K.xyz``, E0s from ``isolated_atoms.xyz``) for ``--budget-s``
seconds of training loop, with mace-torch's recipe (``benchmarks.acac.training_section``; lr
``CASES[family]``), and keep the EMA weights at the lowest validation loss. One evaluator,
``equiforce.train.evaluate``, scores both on ``test_MD_300K`` and ``test_MD_600K``: the peer's
model is converted exactly to an equiforce model first (``benchmarks.peer_training``).

* equiforce: ``equiforce.train.train`` in a fresh process; ``training.time_budget_s`` stops it
  inside the epoch in which the budget runs out and validates that partial epoch.
* the peer: ``benchmarks.peer_training.train_peer`` (its own trainer in its venv, the same
  settings; how each peer's budget is enforced is documented there).

``--mode parallel`` (default) trains both at the same time with ``--threads`` (default 1)
each, so load from other processes hits both alike; ``sequential`` trains one after the other.
Output: ``<out>/acac_train_<preset>_<time>/results.json`` (run record with the reproducing
command, settings, both runs, test errors) and a table on stdout::

    python -m benchmarks.acac_train --preset mace-small --budget-s 900
    python -m benchmarks.acac_train --preset allegro-l1 --budget-s 600
    python -m benchmarks.acac_train --preset mace-tiny --smoke --budget-s 5   # seconds
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import acac
from benchmarks.common import add_common_arguments, run_record
from benchmarks.peer_training import train_peer
from equiforce.data.extxyz import read_configurations
from equiforce.data.statistics import compute_statistics, read_isolated_atom_energies
from equiforce.models import load_model
from equiforce.train import ModelConfig, RunConfig, train
from equiforce.workflows.bench.peers import peer_for_family, peer_python

# family -> what differs from mace-torch's recipe
CASES: dict[str, dict[str, Any]] = {"mace": {}, "allegro": {"lr": 0.002}}


def run_config(args: argparse.Namespace, split: acac.Split, output_dir: Path) -> RunConfig:
    """The equiforce run (the peer's settings are derived from it)."""
    model = ModelConfig.from_preset(args.preset, dtype=args.dtype)
    return RunConfig.from_dict({
        "output_dir": str(output_dir),
        "seed": args.seed,
        "data": acac.data_section(split),
        "model": model.to_dict(),
        "training": acac.training_section(args.budget_s, **CASES[model.family]),
    })


def train_summary(result) -> dict[str, Any]:
    """The facts of an equiforce ``TrainResult`` the report keeps."""
    return {
        "epochs_completed": result.epochs_completed,
        "best_epoch": result.best_epoch,
        "stop_reason": result.stop_reason,
        "training_loop_wall_s": result.final_metrics.get("wall_s"),
        "final_metrics": result.final_metrics,
        "model_path": str(result.model_path),
    }


def print_table(report: dict[str, Any]) -> None:
    """Epochs, and both codes' test RMSE / MAE with ratios peer / equiforce."""
    runs = report["runs"]
    print(f"\n{'code':16s} {'epochs':>6s} {'best':>5s} {'loop s':>7s}  stop")
    for code, run in runs.items():
        wall = run.get("training_loop_wall_s")
        print(f"{code:16s} {run.get('epochs_completed')!s:>6s} {run.get('best_epoch')!s:>5s} "
              f"{'?' if wall is None else f'{wall:.0f}':>7s}  "
              f"{run.get('error') or run.get('stop_reason')}")
    errors = report["errors"]
    print("\nTest RMSE / MAE; ratio = peer / equiforce RMSE (> 1: equiforce better)")
    for name in acac.TEST_SETS:
        for quantity in ("energy", "energy_per_atom", "forces"):
            cells, rmse = [], []
            for code in runs:
                m = errors.get(code, {}).get(name, {}).get(quantity)
                cells.append(f"{code} {m['rmse']:8.2f} / {m['mae']:8.2f}" if m else f"{code} n/a")
                rmse.append(m["rmse"] if m else None)
            ratio = f"{rmse[1] / rmse[0]:.2f}" if len(rmse) == 2 and None not in rmse else "-"
            unit = m["unit"] if m else ""
            print(f"  {name:13s} {quantity:16s} {unit:9s} {'   '.join(cells)}   ratio {ratio}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(p, "bench_out")
    p.add_argument("--preset", default="mace-small", help="model (equiforce.models.presets)")
    p.add_argument("--budget-s", type=float, default=900.0, help="training loop per code, s")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=["parallel", "sequential"], default="parallel",
                   help="train both at once, or one after the other")
    p.add_argument("--threads", type=int, default=1, help="threads per code")
    p.add_argument("--only", choices=["ours", "peer"], help="train one code only")
    p.add_argument("--peer-python", help="python of the peer's venv (default .venv-mace/bin/"
                   "python or .venv-nequip/bin/python, or $EQUIFORCE_*_PYTHON)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny split: 20 train / 5 valid frames, 10 test frames per set")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate, write ``results.json`` and print the table."""
    args = parse_args(argv)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (args.out / f"acac_train_{args.preset}_{stamp}").resolve()
    sizes = acac.SMOKE if args.smoke else {"n_train": 450}
    split = acac.write_split(args.data_dir, run_dir, **sizes)
    config = run_config(args, split, run_dir / "ours")
    peer = peer_for_family(config.model.family)
    runs: dict[str, dict[str, Any]] = {}
    if args.only != "peer":
        runs["equiforce"] = {}
    if args.only != "ours":
        python = peer_python(peer, args.peer_python)
        peer_config = RunConfig.from_dict({**config.to_dict(), "output_dir": str(run_dir / "peer")})
        isolated = read_isolated_atom_energies(split.isolated)
        statistics = compute_statistics(
            read_configurations(split.train), config.model.r_max, isolated_atoms=isolated
        )
        runs[peer.name] = {}
    with acac.process_pool(args.threads) as pool:
        ours = pool.submit(train, config) if "equiforce" in runs else None
        if args.mode == "sequential" and ours is not None:
            runs["equiforce"] = train_summary(ours.result())
        if peer.name in runs:
            runs[peer.name] = train_peer(peer.name, python, peer_config, statistics, args.threads)
        if ours is not None:
            runs["equiforce"] = train_summary(ours.result())
    errors = {
        code: acac.test_errors(load_model(run["model_path"]), split.tests)
        for code, run in runs.items() if "model_path" in run
    }
    report = {**run_record("benchmarks.acac_train", argv), "settings": vars(args),
              "run_config": config.to_dict(), "runs": runs, "errors": errors}
    path = run_dir / "results.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print_table(report)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
