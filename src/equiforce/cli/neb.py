"""``equiforce neb MODEL INITIAL FINAL``: the minimum energy path and barrier between two
structures (nudged elastic band, climbing image; ``equiforce.md.neb``).

The band's interior images are evaluated in one model call per step. The run writes
``band.xyz`` (the relaxed band, each image's energy and forces), ``neb.json`` (energies along
the reaction coordinate, the barriers, the saddle image, convergence) and ``neb.png`` (the
energy profile) to ``--out``, and prints a summary. Given one file of at least 3 frames
instead of two end points, its frames are the starting band.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from equiforce.files import atomic_write_text

BAND_NAME = "band.xyz"
SUMMARY_NAME = "neb.json"
FIGURE_NAME = "neb.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``neb`` options on ``parser``."""
    from equiforce.cli.options import add_calculator_options, add_state_options
    from equiforce.md.neb import INTERPOLATIONS, METHODS
    from equiforce.md.relax import OPTIMIZERS

    parser.add_argument(
        "model",
        help="model file (save_model output or training checkpoint), or a committee folder "
        "(equiforce committee): its mean drives the band, its members' barriers are reported",
    )
    parser.add_argument(
        "structures",
        nargs="+",
        metavar="STRUCTURE",
        help="the initial and final structures (first frame of each, any ASE format; the same "
        "atoms in the same order), or one file holding a whole starting band",
    )
    parser.add_argument(
        "--images", type=int, default=5, help="interior images between the end points (5)"
    )
    parser.add_argument(
        "--interpolation",
        choices=INTERPOLATIONS,
        default="idpp",
        help="how the images start between the end points (idpp)",
    )
    parser.add_argument(
        "--relax-ends",
        action="store_true",
        help="relax the end points first (positions, FIRE to --fmax / 5)",
    )
    parser.add_argument(
        "--no-climb",
        dest="climb",
        action="store_false",
        help="no climbing image (by default the highest image climbs to the saddle point)",
    )
    parser.add_argument("--fmax", type=float, default=0.05, help="NEB force threshold, eV/Å")
    parser.add_argument("--steps", type=int, default=500, help="most optimizer steps (500)")
    parser.add_argument("--spring", type=float, default=0.1, help="spring constant, eV/Å^2")
    parser.add_argument(
        "--method", choices=METHODS, default="improvedtangent", help="ASE's NEB method"
    )
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="fire", help="(fire)")
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=None,
        metavar="T",
        help="also the harmonic transition-state theory rates at these temperatures (K), "
        "forward and backward: the vibrations of the end points and the saddle (3 Hessians)",
    )
    add_calculator_options(parser)
    add_state_options(parser)
    parser.add_argument("--out", default="neb", help="output folder (neb)")


def run(args: argparse.Namespace) -> int:
    """Relax the band and write it; returns the exit code (1: not converged).

    Raises:
        FileNotFoundError: a structure file that does not exist.
        ValueError: not two end points or one band of at least 3 frames, end points that
            differ (named), a bad option, ``--relax-ends`` with a band file, ``--rates``
            with ``--no-climb`` (a band that does not converge gets no rates: null), an end
            point that is no minimum (``--relax-ends``; the band and JSON are written).
    """
    from ase.io import read, write

    from equiforce.cli.options import apply_state_options, model_calculator
    from equiforce.md.neb import interpolated_band, run_neb
    from equiforce.md.relax import relax_structure

    if args.rates is not None and (not args.climb or min(args.rates) <= 0):
        raise ValueError("--rates needs the climbing image (the saddle point) and T > 0 K")
    if args.rates is not None and Path(args.model).is_dir():
        raise ValueError("--rates needs one model's Hessian, not a committee")
    for path in args.structures:
        if not Path(path).exists():
            raise FileNotFoundError(f"structure file {path} does not exist")
    if len(args.structures) > 2:
        raise ValueError(f"give two end points or one band file, got {len(args.structures)}")
    calculator = model_calculator(args)
    if len(args.structures) == 1:
        if args.relax_ends:
            raise ValueError("--relax-ends relaxes two end points; a band file is used as given")
        band = read(args.structures[0], index=":")
        apply_state_options(args, band)
        if len(band) < 3:
            raise ValueError(
                f"{args.structures[0]}: a band file needs at least 3 frames, got {len(band)} "
                "(or give the initial and final structures)"
            )
    else:
        ends = [read(path, index=0) for path in args.structures]
        apply_state_options(args, ends)
        if args.relax_ends:
            ends = [relax_structure(end, calculator, fmax=args.fmax / 5).atoms for end in ends]
        band = interpolated_band(*ends, args.images, args.interpolation)
    result = run_neb(
        band,
        calculator,
        fmax=args.fmax,
        steps=args.steps,
        climb=args.climb,
        method=args.method,
        spring=args.spring,
        optimizer=args.optimizer,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write(out / BAND_NAME, result.images, format="extxyz")
    relative = result.energies - result.energies[0]
    summary = {
        "formula": band[0].get_chemical_formula(),
        "images": len(result.images),
        "energies_eV": result.energies.tolist(),
        "relative_energies_eV": relative.tolist(),
        "reaction_coordinate_A": result.distances.tolist(),
        "forward_barrier_eV": result.forward_barrier,
        "backward_barrier_eV": result.backward_barrier,
        "reaction_energy_eV": float(relative[-1]),
        "saddle_image": result.saddle,
        "climb": result.climb,
        "converged": result.converged,
        "steps": result.n_steps,
        "fmax_eV_per_A": result.fmax,
        "model_calls": result.model_calls,
    }
    if hasattr(calculator, "member_energies_and_forces"):
        summary["committee"] = _committee(result, calculator)
    atomic_write_text(json.dumps(summary, indent=1), out / SUMMARY_NAME)
    if args.rates is not None:  # after the band is safe: an end point may not be a minimum
        summary["rates"] = _rates(result, calculator, args.rates) if result.converged else None
        atomic_write_text(json.dumps(summary, indent=1), out / SUMMARY_NAME)
    _plot(result.distances, relative, result.saddle, out / FIGURE_NAME)
    print(_format(summary))
    print(f"band written to {out / BAND_NAME}")
    return 0 if result.converged else 1


def _committee(result, committee) -> dict:
    """The members' barriers along the band and their spread (``committee_barriers``)."""
    from equiforce.md.neb import committee_barriers

    members = committee_barriers(result.images, committee)
    return {
        "members": len(members["forward"]),
        "image_energy_spread_eV": members["energies"].std(axis=0).tolist(),
        "forward_barriers_eV": members["forward"].tolist(),
        "backward_barriers_eV": members["backward"].tolist(),
        "forward_barrier_spread_eV": float(members["forward"].std()),
        "backward_barrier_spread_eV": float(members["backward"].std()),
    }


def _rates(result, calculator, temperatures: list[float]) -> dict:
    """Harmonic TST both ways (``equiforce.md.vibrations.transition_rates``) of a converged
    climbing band (its highest image the saddle point): prefactors (Hz) and classical and
    quantum rates (1/s) per temperature."""
    from equiforce.md.vibrations import transition_rates, vibrations

    saddle = vibrations(result.images[result.saddle], calculator)
    rates = {"temperature_K": list(temperatures)}
    for name, end in (("forward", result.images[0]), ("backward", result.images[-1])):
        crossing = transition_rates(vibrations(end, calculator), saddle, temperatures)
        rates[name] = {
            "prefactor_Hz": crossing.prefactor,
            "classical_per_s": crossing.classical.tolist(),
            "quantum_per_s": crossing.quantum.tolist(),
        }
    rates["saddle_imaginary_cm-1"] = float(saddle.frequencies[0])
    return rates


def _format(summary: dict) -> str:
    """The printed summary."""
    state = "converged" if summary["converged"] else "NOT converged"
    saddle = "saddle point (climbing image)" if summary["climb"] else "highest image"
    return "\n".join(
        [
            f"{summary['formula']}: {summary['images']} images, {state} in {summary['steps']} "
            f"steps (fmax {summary['fmax_eV_per_A']:.3f} eV/Å)",
            f"  barrier {summary['forward_barrier_eV']:.4f} eV forward, "
            f"{summary['backward_barrier_eV']:.4f} eV backward; reaction energy "
            f"{summary['reaction_energy_eV']:+.4f} eV",
            f"  {saddle}: image {summary['saddle_image']}",
        ]
        + (_format_committee(summary["committee"]) if "committee" in summary else [])
        + (_format_rates(summary["rates"]) if "rates" in summary else [])
    )


def _format_committee(committee: dict) -> list[str]:
    """The members' disagreement on the barriers."""
    return [
        f"  committee of {committee['members']}: barrier spread "
        f"{committee['forward_barrier_spread_eV']:.4f} eV forward, "
        f"{committee['backward_barrier_spread_eV']:.4f} eV backward (std of the members')"
    ]


def _format_rates(rates: dict | None) -> list[str]:
    """The printed rates, if any."""
    if rates is None:
        return ["  no rates: the band did not converge"]
    lines = [
        f"  saddle's imaginary mode {-rates['saddle_imaginary_cm-1']:.1f}i cm^-1; "
        f"prefactors {rates['forward']['prefactor_Hz']:.3e} Hz forward, "
        f"{rates['backward']['prefactor_Hz']:.3e} Hz backward",
        "     T (K)   forward (1/s): classical, quantum   backward (1/s): classical, quantum",
    ]
    for index, temperature in enumerate(rates["temperature_K"]):
        values = [
            rates[way][kind][index]
            for way in ("forward", "backward")
            for kind in ("classical_per_s", "quantum_per_s")
        ]
        lines.append(f"  {temperature:8.1f}   " + "  ".join(f"{v:.3e}" for v in values))
    return lines


def _plot(distances: np.ndarray, energies: np.ndarray, saddle: int, path: Path) -> None:
    """The energy profile along the reaction coordinate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(distances, energies, "o-", color="C0")
    axis.plot(distances[saddle], energies[saddle], "s", color="C3", label="saddle")
    axis.set_xlabel("reaction coordinate (Å)")
    axis.set_ylabel("energy (eV)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
