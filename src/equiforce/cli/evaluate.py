"""``equiforce evaluate MODEL DATA [MORE ...]``: error tables, JSON report, parity plots.

MODEL is a model file or an exported package (``equiforce export``, ``.pt2``: run as exported,
one structure per call, so its accuracy in its precision is what is measured). DATA is a
labelled extended XYZ file or a directory of ``equiforce preprocess``; either is streamed (one
batch in memory at a time), so it may be larger than memory. With several, each
gets its own table (and parity plots in ``--plots DIR/<stem>``), and a last table covers all
together. ``--predictions OUT.xyz`` writes one extxyz file's frames with the model's energy,
forces and stress (``equiforce.train.predictions``; labels not needed).
"""

from __future__ import annotations

import argparse

from equiforce.cli.options import add_device_option, add_precision_option, add_state_key_options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``evaluate`` options on ``parser``."""
    parser.add_argument(
        "model",
        help="model file (save_model output or training checkpoint) or exported .pt2 package",
    )
    parser.add_argument(
        "data",
        nargs="+",
        help="labelled extended XYZ file(s) or directories of equiforce preprocess (their "
        "cutoff must be the model's; their label keys those given here)",
    )
    parser.add_argument("--energy-key", default="energy", help="energy label name (eV)")
    parser.add_argument("--forces-key", default="forces", help="forces label name (eV/Å)")
    parser.add_argument("--stress-key", default="stress", help="stress label name (eV/Å^3)")
    parser.add_argument(
        "--config-type-key",
        default="config_type",
        help="the frames' config type (info key): errors also per type (mace-torch's)",
    )
    add_state_key_options(parser)
    parser.add_argument(
        "--predictions",
        default=None,
        metavar="OUT.xyz",
        help="write the frames of the (one, extxyz) data file with the model's predictions: "
        "equiforce_energy, equiforce_forces, equiforce_energies (per atom), equiforce_stress "
        "(mace-torch's mace_eval_configs); unlabelled frames allowed",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="structures per batch")
    parser.add_argument("--json", default=None, metavar="PATH", help="write metrics as JSON")
    parser.add_argument("--plots", default=None, metavar="DIR", help="write parity plots (PNG)")
    parser.add_argument(
        "--parity-points",
        type=int,
        default=100_000,
        metavar="N",
        help="values per quantity in a parity plot: all of them, or a uniform random sample "
        "of N (100000)",
    )
    add_device_option(parser)
    add_precision_option(parser)


def run(args: argparse.Namespace) -> int:
    """Evaluate the model on the file(s), print the tables, write the requested reports.

    Raises:
        ValueError: a file carries none of the requested labels, or a preprocessed directory
            was built with another cutoff or other label keys.
    """
    from pathlib import Path

    from equiforce.data.extxyz import KeySpec
    from equiforce.models import load_model
    from equiforce.train.evaluate import (
        evaluate_files,
        format_table,
        plot_parity,
        structures_in,
        to_json,
    )

    if Path(args.model).suffix == ".pt2":
        from equiforce.export import load_exported

        if args.precision is not None:
            raise ValueError(f"{args.model}: a package runs as exported; drop --precision")
        model = load_exported(args.model, args.device)
    else:
        model = load_model(args.model, map_location=args.device, precision=args.precision)
    label_keys = KeySpec(
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        stress_key=args.stress_key,
        config_type_key=args.config_type_key,
        total_charge_key=args.total_charge_key,
        total_spin_key=args.total_spin_key,
    )
    files = {path: structures_in(path, model, label_keys) for path in args.data}
    options = dict(batch_size=args.batch_size, max_parity_points=args.parity_points)
    if args.predictions is None:
        results = evaluate_files(model, files, **options)
    else:
        results = _evaluate_and_write(model, files, args.predictions, options)
    if getattr(model, "outputs", None) is not None and "stress" not in model.outputs:
        print(f"{args.model}: exported without stress (equiforce export --stress): not evaluated")
    for path in args.data:
        if not results[path].metrics and args.predictions is None:
            raise ValueError(
                f"{path}: no frame has an energy, forces or stress label under the keys "
                f"{args.energy_key!r}, {args.forces_key!r}, {args.stress_key!r}"
            )
    several = len(args.data) > 1
    shown = list(results) if several else args.data
    for name in shown:
        if several:
            print(f"== {'all files' if name not in files else name} ==")
        print(format_table(results[name]))
    if args.json:
        to_json(results if several else results[args.data[0]], args.json)
        print(f"metrics written to {args.json}")
    if args.plots:
        for path in args.data:
            folder = Path(args.plots) / Path(path).stem if several else args.plots
            for plot in plot_parity(results[path], folder):
                print(f"parity plot written to {plot}")
    return 0


def _evaluate_and_write(model, files: dict, out: str, options: dict) -> dict:
    """``evaluate_files`` of one extxyz file, its frames written with the predictions (the
    stress of every 3D-periodic frame, where the model has it) to ``out`` atomically.

    Raises:
        ValueError: several data files, or a preprocessed directory (no frames to write).
    """
    from equiforce.data.ondisk import is_preprocessed
    from equiforce.files import atomic_writer
    from equiforce.train.evaluate import evaluate_files
    from equiforce.train.predictions import PredictionWriter

    if len(files) != 1:
        raise ValueError("--predictions writes one data file's frames: give one file")
    (path,) = files
    if is_preprocessed(path):
        raise ValueError(
            f"{path}: a preprocessed directory keeps no frames to write predictions into; "
            "give its extxyz file"
        )
    outputs = getattr(model, "outputs", None)  # an exported package's, else None
    stress = True if outputs is None or "stress" in outputs else None
    with atomic_writer(out) as handle:
        writer = PredictionWriter(path, handle)
        results = evaluate_files(
            model, files, **options, sinks={path: writer}, compute_stress=stress
        )
    print(f"{writer.n_frames} frames with predictions written to {out}")
    return results
