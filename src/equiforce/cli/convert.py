"""``equiforce convert SOURCE OUT.pt``: a mace-torch or nequip-allegro model file as an
equiforce model file; ``equiforce convert MODEL.pt OUT.model --to mace-torch``: an
equiforce MACE as a mace-torch model file."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``convert`` options on ``parser``."""
    parser.add_argument(
        "source",
        help="the peer's model file: nequip-allegro *.ckpt (nequip-train) or *.nequip.zip "
        "(nequip-package); otherwise mace-torch (torch.save of a MACE/ScaleShiftMACE, e.g. a "
        "*.model training wrote or a foundation model); loaded with pickle: convert files "
        "you trust",
    )
    parser.add_argument("out", help="model file to write (equiforce's, or with --to the peer's)")
    parser.add_argument(
        "--to",
        choices=("equiforce", "mace-torch"),
        default="equiforce",
        help="mace-torch: SOURCE is an equiforce MACE model file (e.g. fine-tuned), written as "
        "a mace-torch model file (torch.save of its ScaleShiftMACE) that mace-torch's "
        "calculators and tools load; checked against mace-torch before it is written",
    )
    parser.add_argument(
        "--head",
        default=None,
        help="the head of a multi-head mace-torch model (mace's multi-head fine-tuning: "
        "pt_head, Default)",
    )


def run(args: argparse.Namespace) -> int:
    """Convert, check against the peer, print the figures; nothing is written on a mismatch.

    Raises:
        ValueError: not a model file of the peer, an unsupported option, a wrong head, or a
            mismatch (``equiforce.interop.convert.ConversionError``, with the figures).
    """
    from equiforce.export.build import format_validation
    from equiforce.interop.convert import convert_model_file, export_mace_torch_file
    from equiforce.models.io import load_model

    if args.to == "mace-torch":
        if args.head is not None:
            raise ValueError("--head selects a head of a mace-torch source, not with --to")
        figures = export_mace_torch_file(args.source, args.out)
        print(f"wrote {args.out} for mace-torch; its energies (eV) and forces (eV/Å) vs ours:")
        print(format_validation(figures))
        return 0
    peer, figures = convert_model_file(args.source, args.out, args.head)
    print(f"converted {args.source} -> {args.out}; energies (eV) and forces (eV/Å) vs {peer}:")
    print(format_validation(figures))
    conditions = load_model(args.out).energy_model.graph_inputs
    if conditions:
        print(
            f"the model conditions on each structure's {' and '.join(conditions)}: ASE reads "
            "atoms.info['charge'] and ['spin'] (absent: 0 and 1), training files their "
            f"info keys (data.total_charge_key, total_spin_key), LAMMPS 'pair_style equiforce "
            f"{args.out} charge Q spin S'"
        )
    return 0
