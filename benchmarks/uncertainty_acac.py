"""Committee calibration on AcAc: force error vs predicted spread at 300 K and 600 K.

A committee (``equiforce.workflows.committee``, members differing by seed) of ``--preset``
models with ``--channels`` channels trains on the fixed 300 K split of ``benchmarks.acac``
(450 / 50 frames of ``train_300K.xyz``, E0s from ``isolated_atoms.xyz``) for ``--budget-s``
seconds of training loop per member, ``--workers`` members at a time with one thread each.
``equiforce.workflows.calibration`` then scores the committee mean on the first ``--n-test``
frames of ``test_MD_300K`` (in distribution) and ``test_MD_600K`` (out of distribution for a
300 K model): per-atom force error vs predicted spread, Spearman rank correlation, binned
calibration curve. The spread is then calibrated on the 50 validation frames (the split's
``valid``; the test sets are never seen), with one force scale and with one per species
(``fit_spread_scales``), and each test set's mean ``|dF|^2 / spread^2`` (1 for a calibrated
spread), overall and per species, is reported raw, with the one scale and with the
per-species scales. Output in ``<out>/uncertainty_acac_<time>/``: ``results.json`` (run
record with the reproducing command, settings, members, reports, scales, calibrated
figures) and ``calibration.png``::

    python -m benchmarks.uncertainty_acac --size 4 --channels 16 --budget-s 150 --workers 2
    python -m benchmarks.uncertainty_acac --smoke      # seconds: 2 mace-tiny members, 10 frames
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from ase.io import read

from benchmarks import acac
from benchmarks.common import add_common_arguments, run_record
from equiforce.md.committee import CommitteeCalculator
from equiforce.train import ModelConfig, RunConfig
from equiforce.workflows.calibration import (
    calibration_report,
    committee_errors,
    fit_spread_scales,
    plot_calibration,
    scaled,
)
from equiforce.workflows.committee import CommitteeConfig, train_committee


def run_config(args: argparse.Namespace, split: acac.Split, output_dir: Path) -> RunConfig:
    """The members' run file (member k adds k to the seed)."""
    overrides: dict[str, Any] = {"dtype": "float32"}
    if args.channels is not None:
        overrides["num_channels"] = args.channels
    model = ModelConfig.from_preset(args.preset, **overrides)
    return RunConfig.from_dict({
        "output_dir": str(output_dir),
        "seed": args.seed,
        "data": acac.data_section(split),
        "model": model.to_dict(),
        "training": acac.training_section(args.budget_s),
    })


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(p, "bench_out")
    p.add_argument("--preset", default="mace-small", help="model (equiforce.models.presets)")
    p.add_argument("--channels", type=int, default=16, help="num_channels override")
    p.add_argument("--size", type=int, default=4, help="committee members")
    p.add_argument("--budget-s", type=float, default=150.0, help="training loop per member, s")
    p.add_argument("--workers", type=int, default=2, help="members trained at once (1 thread)")
    p.add_argument("--n-test", type=int, default=300, help="frames per test set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true",
                   help="mace-tiny, 2 members, 20 / 5 frames, 10 test frames, 1 s each")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset, args.channels, args.size, args.workers = "mace-tiny", None, 2, 1
        args.budget_s, args.n_test = 1.0, 10
    return args


def main(argv: list[str] | None = None) -> int:
    """Train the committee, score it, write ``results.json`` and ``calibration.png``."""
    args = parse_args(argv)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = (args.out / f"uncertainty_acac_{stamp}").resolve()
    sizes = acac.SMOKE if args.smoke else {"n_train": 450, "n_test": args.n_test}
    split = acac.write_split(args.data_dir, run_dir, **sizes)
    config = run_config(args, split, run_dir / "committee")
    settings = CommitteeConfig(size=args.size, workers=args.workers, threads_per_worker=1)
    committee = train_committee(config, settings)
    calculator = CommitteeCalculator(committee.model_paths)
    reports, samples = {}, {}
    for name, path in split.tests.items():
        samples[name] = committee_errors(calculator, read(path, index=":"))
        reports[name] = calibration_report(samples[name])
    figure = plot_calibration(
        reports, samples, run_dir / "calibration.png",
        title=f"AcAc: {args.size} x {args.preset} ({args.channels or 'preset'} channels), "
        "trained at 300 K",
    )
    valid = committee_errors(calculator, read(split.valid, index=":"))
    scales = {"one scale": fit_spread_scales(valid),
              "per species": fit_spread_scales(valid, per_species=True)}
    calibrated = {
        name: {how: _ratios(scaled(sample, s)) for how, s in
               {"raw": {"force_spread_scale": 1.0}, **scales}.items()}
        for name, sample in samples.items()
    }
    report = {**run_record("benchmarks.uncertainty_acac", argv), "settings": vars(args),
              "run_config": config.to_dict(), "members": committee.members,
              "reports": reports, "figure": str(figure), "scales": scales,
              "calibrated": calibrated}
    path = run_dir / "results.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"{'test set':14s} {'F RMSE':>8s} {'mean |dF|':>9s} {'spread':>8s} "
          f"{'rho atoms':>9s} {'rho frames':>10s}   (meV/Å)")
    for name, r in reports.items():
        print(f"{name:14s} {r['force_rmse_meV_A']:8.1f} {r['force_error_mean_meV_A']:9.1f} "
              f"{r['spread_mean_meV_A']:8.1f} {r['spearman_atoms']:9.3f} "
              f"{r['spearman_structures']:10.3f}")
    fitted = "; ".join(f"{how} {_scales_text(s)}" for how, s in scales.items())
    print("\nmean |dF|^2 / spread^2 on the test sets (1: calibrated), scales fitted on the "
          f"validation frames: {fitted}")
    for name, rows in calibrated.items():
        for how, ratios in rows.items():
            print(f"{name:14s} {how:12s} " + "  ".join(f"{k} {v:.3g}" for k, v in ratios.items()))
    print(f"\nwrote {path} and {figure}")
    return 0


def _ratios(errors) -> dict[str, float]:
    """Mean |dF|^2 / spread^2 over all atoms and over each species' atoms."""
    report = calibration_report(errors)
    by_species = {s: r["mean_squared_error_over_spread"] for s, r in report["by_species"].items()}
    return {"all": report["mean_squared_error_over_spread"], **by_species}


def _scales_text(scales: dict[str, Any]) -> str:
    by_species = scales.get("force_spread_scale_by_species") or {}
    return f"x {scales['force_spread_scale']:.3g}" + "".join(
        f", {s} x {v:.3g}" for s, v in by_species.items())


if __name__ == "__main__":
    sys.exit(main())
