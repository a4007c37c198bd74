"""Phonons: equiforce's force constants (exact Hessian rows, ``equiforce.md.phonons``) against
ASE's finite-displacement ``Phonons``, the same model in the same process.

For each crystal, the force constants of its supercell both ways (medians of
``--timing-repeats`` after one warm-up each), and the largest difference of their frequencies
at the supercell's commensurate wave vectors (where both are exact up to ASE's displacement
error). Writes ``out/phonons_<time>.json``::

    python -m benchmarks.phonons --preset mace-128-l1-al --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import bulk

from benchmarks.common import add_common_arguments, run_record
from equiforce.workflows.bench.report import write_json

# (name, crystal, supercell): one atom, and two of different masses
CRYSTALS = {
    "Al-fcc": (lambda: bulk("Al", "fcc", a=4.05), (4, 4, 4)),
    "AlO-rocksalt": (lambda: bulk("AlO", "rocksalt", a=4.2), (3, 3, 3)),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "bench_out/phonons")
    parser.add_argument("--preset", default="mace-128-l1-al", help="model preset (H/O/Al)")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--crystals", nargs="+", default=list(CRYSTALS), choices=list(CRYSTALS))
    parser.add_argument("--supercell", type=int, default=None, help="n x n x n for all")
    parser.add_argument("--delta", type=float, default=0.01, help="ASE's displacement, Å")
    parser.add_argument("--timing-repeats", type=int, default=3, help="median of this many")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    return parser


def _median_seconds(run, repeats: int) -> tuple[float, object]:
    """One warm-up call, then the median wall time of ``repeats`` calls and the last result."""
    result = run(-1)
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        result = run(repeat)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def run_case(crystal, supercell, calculator, scratch: Path, args) -> dict:
    """One crystal: both ways timed, their frequencies compared (module docstring)."""
    from ase.phonons import Phonons

    from equiforce.md.phonons import force_constants

    def ours(_: int):
        return force_constants(crystal, calculator, supercell)

    def theirs(repeat: int):
        folder = os.fspath(scratch / f"displacements-{repeat}")
        phonons = Phonons(crystal, calculator, supercell=supercell, delta=args.delta, name=folder)
        phonons.run()
        phonons.read(acoustic=True)
        return phonons

    ours_s, model = _median_seconds(ours, args.timing_repeats)
    theirs_s, reference = _median_seconds(theirs, args.timing_repeats)
    axes = [np.arange(n) / n for n in supercell]
    qpoints = np.array(np.meshgrid(*axes, indexing="ij")).reshape(3, -1).T
    hertz = units._hplanck / units._e * 1e12  # eV per THz
    expected = np.sort(reference.band_structure(qpoints), axis=1) / hertz
    difference = np.abs(model.frequencies(qpoints) - expected).max()
    return {
        "supercell": list(supercell),
        "supercell_atoms": len(crystal) * int(np.prod(supercell)),
        "equiforce_s": ours_s,
        "ase_s": theirs_s,
        "ase_over_equiforce": theirs_s / ours_s,
        "max_frequency_difference_THz": float(difference),
    }


def main(argv: list[str] | None = None) -> int:
    """Time both ways for each crystal, write the JSON, print one line each."""
    from equiforce.md.calculator import EquiforceCalculator
    from equiforce.models import save_model
    from equiforce.models.presets import preset_potential

    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp())
    save_model(preset_potential(args.preset, dtype=args.dtype), scratch / "model.pt")
    calculator = EquiforceCalculator(scratch / "model.pt")
    document = {**run_record("benchmarks.phonons", argv), "preset": args.preset, "cases": {}}
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(args.out) / f"phonons_{stamp}.json"
    for name in args.crystals:
        make, supercell = CRYSTALS[name]
        supercell = supercell if args.supercell is None else (args.supercell,) * 3
        case = run_case(make(), supercell, calculator, scratch / name, args)
        document["cases"][name] = case
        write_json(document, path)
        print(
            f"{name}: {case['supercell_atoms']} atoms, equiforce {case['equiforce_s']:.3f} s, "
            f"ASE {case['ase_s']:.3f} s, frequencies within "
            f"{case['max_frequency_difference_THz']:.1e} THz"
        )
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
