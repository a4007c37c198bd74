"""``equiforce export MODEL OUT.pt2``: an AOTInductor package that runs without equiforce."""

from __future__ import annotations

import argparse

from equiforce.cli.options import add_device_option, add_precision_option


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``export`` options on ``parser``."""
    parser.add_argument("model", help="model file (save_model output or training checkpoint)")
    parser.add_argument("out", help="package to write (.pt2)")
    add_precision_option(parser, "export in this precision mode (default: as saved)")
    parser.add_argument(
        "--backend",
        default="fast",
        choices=("reference", "fast"),
        help="kernel backend to trace (default fast: packages ~2x (MACE) and ~1.7x (Allegro) "
        "faster than reference on one molecule; MACE's through equiforce.kernels.export_ops)",
    )
    add_device_option(parser, choices=("cpu", "cuda"))
    parser.add_argument("--stress", action="store_true", help="also output stress and virial")
    parser.add_argument(
        "--per-atom",
        action="store_true",
        help="also output atomic energies and per-edge energy gradients (per-atom virials; "
        "the LAMMPS pair style needs them)",
    )
    parser.add_argument(
        "--max-atoms",
        type=int,
        default=None,
        metavar="N",
        help="bound the package's atom axis to N atoms per structure (>= 64, the export "
        "check's largest structure); larger structures are refused when run; default: unbounded",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="OpenMP threads the package's CPU loops are compiled for (default 1: serial loops; "
        "2-thread packages ran 2.1-4.6x slower here, their scatter-adds atomic; docs/export.md)",
    )
    parser.add_argument(
        "--cpu-target",
        default="native",
        metavar="MARCH",
        help="CPUs the package's compiled code is for, a -march value (default native: this "
        "CPU's every instruction set; e.g. x86-64-v3 runs on any AVX2 CPU, x86-64-v4 on "
        "AVX-512 ones: for cluster nodes unlike the exporting machine); a package is refused "
        "on a CPU lacking one of them",
    )


def run(args: argparse.Namespace) -> int:
    """Export, print the validation figures; nothing is written when validation fails.

    Raises:
        ValueError: the model cannot be exported or its package fails validation
            (``equiforce.export.ExportError``, with the figures).
    """
    from equiforce.export.build import export_potential, format_validation
    from equiforce.models import load_model

    if not args.out.endswith(".pt2"):
        raise ValueError(f"the package name must end in .pt2, got {args.out}")
    model = load_model(args.model, backend=args.backend, precision=args.precision)
    metadata = export_potential(
        model,
        args.out,
        backend=args.backend,
        device=args.device,
        stress=args.stress,
        per_atom=args.per_atom,
        max_atoms=args.max_atoms,
        threads=args.threads,
        cpu_target=args.cpu_target,
    )
    validation = metadata["validation"]
    print(f"package vs eager, (atol, rtol) = {tuple(validation['tolerance'])}:")
    print(format_validation(validation["figures"]))
    library = metadata["kernel_library"]
    if library is not None:
        print(
            f"the package carries the kernel library {library['namespace']} "
            f"({len(library['operators'])} operators, {library['bytes'] / 1e6:.1f} MB), "
            "loaded with it by load_exported"
        )
    cpu = metadata["cpu"]
    print(f"compiled for {cpu['machine']} CPUs with: {' '.join(cpu['features'])}")
    print(f"exported {metadata['family']} ({metadata['dtype']}) to {args.out}")
    return 0
