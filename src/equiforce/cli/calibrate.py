"""``equiforce calibrate COMMITTEE_DIR VALID.xyz``: fit a committee's spread scales on
validation data and store them in its ``committee.json`` (``workflows.calibration``)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``calibrate`` options on ``parser``."""
    parser.add_argument("committee", help="committee folder (equiforce committee's output_dir)")
    parser.add_argument(
        "data",
        help="extxyz of labelled validation structures (reference forces, and energies for "
        "the energy scale); never the test set",
    )
    parser.add_argument(
        "--forces-key", default="forces", help="per-atom array of reference forces (eV/Å)"
    )
    parser.add_argument(
        "--plot", default=None, metavar="PNG", help="write the calibration curves before/after"
    )


def run(args: argparse.Namespace) -> int:
    """Calibrate, print the scales and the spread against the error before and after.

    Raises:
        ValueError: not a committee folder, structures without reference forces, or members
            that never disagree.
    """
    from equiforce.workflows.calibration import calibrate_committee

    result = calibrate_committee(args.committee, args.data, args.forces_key, plot=args.plot)
    energy = result["energy_spread_scale"]
    print(
        f"calibrated {args.committee} on {result['n_structures']} structures "
        f"({result['n_atoms']} atoms) of {args.data}: force spread x "
        f"{result['force_spread_scale']:.4g}, energy spread x "
        + ("- (no reference energies)" if energy is None else f"{energy:.4g}")
    )
    print("| | force RMSE (meV/Å) | mean spread (meV/Å) | mean |dF|^2 / spread^2 |")
    print("|---|---|---|---|")
    for when in ("before", "after"):
        row = result[when]
        print(
            f"| {when} | {row['force_rmse_meV_A']:.2f} | {row['spread_mean_meV_A']:.2f} | "
            f"{row['mean_squared_error_over_spread']:.3f} |"
        )
    if args.plot:
        print(f"wrote {args.plot}")
    return 0
