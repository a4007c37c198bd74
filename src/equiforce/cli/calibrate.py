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
    parser.add_argument(
        "--per-species",
        action="store_true",
        help="also fit one force spread scale per chemical species (over its own atoms)",
    )


def run(args: argparse.Namespace) -> int:
    """Calibrate, print the scales and the spread against the error before and after.

    Raises:
        ValueError: not a committee folder, structures without reference forces, or members
            that never disagree.
    """
    from equiforce.workflows.calibration import calibrate_committee

    result = calibrate_committee(
        args.committee, args.data, args.forces_key, plot=args.plot, per_species=args.per_species
    )
    energy = result["energy_spread_scale"]
    by_species = result.get("force_spread_scale_by_species") or {}
    print(
        f"calibrated {args.committee} on {result['n_structures']} structures "
        f"({result['n_atoms']} atoms) of {args.data}: force spread x "
        f"{result['force_spread_scale']:.4g}"
        + "".join(f", {symbol} x {scale:.4g}" for symbol, scale in by_species.items())
        + ", energy spread x "
        + ("- (no reference energies)" if energy is None else f"{energy:.4g}")
    )
    print("| | atoms | force RMSE (meV/Å) | mean spread (meV/Å) | mean |dF|^2 / spread^2 |")
    print("|---|---|---|---|---|")
    for when in ("before", "after"):
        rows = {"all": result[when], **result[when]["by_species"]}
        for name, row in rows.items():
            ratio = row["mean_squared_error_over_spread"]
            print(
                f"| {when} | {name} ({row['n_atoms']}) | {row['force_rmse_meV_A']:.2f} | "
                f"{row['spread_mean_meV_A']:.2f} | "
                + ("-" if ratio is None else f"{ratio:.3f}")
                + " |"
            )
    if args.plot:
        print(f"wrote {args.plot}")
    return 0
