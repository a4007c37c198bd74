"""NEB: the band evaluated in one model call per step (``equiforce.md.neb.run_neb``) against
ASE's NEB asking each image's own ``EquiforceCalculator`` in turn, the same model in the same
process.

For each system, ``--steps`` FIRE steps of a climbing band of ``--images`` interior images
both ways (medians of ``--timing-repeats`` after one warm-up each), the time per step, the
ratio, and the largest difference between the two bands' final positions (the same path to
round-off). The model has random weights (a preset), so the bands do not converge: the steps
are timed, not the physics. Writes ``out/neb_<time>.json``::

    python -m benchmarks.neb --preset mace-128-l1-al --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from benchmarks.common import add_common_arguments, run_record
from equiforce.testing.structures import vacancy_hop
from equiforce.workflows.bench.report import write_json


def water_cluster() -> tuple[Atoms, Atoms]:
    """Five waters 3 Å apart (15 atoms, a molecule), before and after the first one turns
    a quarter revolution in its plane about its oxygen."""
    water = np.array([[0.0, 0.0, 0.0], [0.76, 0.59, 0.0], [-0.76, 0.59, 0.0]])
    centres = np.array([[0, 0, 0], [3, 0, 0], [0, 3, 0], [3, 3, 0], [1.5, 1.5, 2.8]], float)
    positions = (centres[:, None, :] + water[None, :, :]).reshape(-1, 3)
    initial = Atoms("OH2" * 5, positions=positions)
    final = initial.copy()
    quarter = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    final.positions[1:3] = water[1:] @ quarter.T
    return initial, final


# the vacancy: 31 atoms of fcc Al, periodic
SYSTEMS = {"water-cluster": water_cluster, "Al-vacancy": lambda: vacancy_hop("Al", 4.05)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "bench_out/neb")
    parser.add_argument("--preset", default="mace-128-l1-al", help="model preset (H/O/Al)")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--images", type=int, default=7, help="interior images")
    parser.add_argument("--steps", type=int, default=10, help="FIRE steps timed")
    parser.add_argument("--timing-repeats", type=int, default=3, help="median of this many")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    return parser


def _median_seconds(run, repeats: int) -> tuple[float, object]:
    """One warm-up call, then the median wall time of ``repeats`` calls and the last result."""
    result = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def run_case(band: list[Atoms], model_path: Path, args) -> dict:
    """One system: both ways timed, their final bands compared (module docstring)."""
    from ase.mep import NEB
    from ase.optimize import FIRE

    from equiforce.md.calculator import EquiforceCalculator
    from equiforce.md.neb import run_neb

    calculator = EquiforceCalculator(model_path)

    def ours():
        return run_neb(band, calculator, fmax=1e-9, steps=args.steps)

    def theirs():
        images = [atoms.copy() for atoms in band]
        for image in images:
            image.calc = EquiforceCalculator(model_path)
        FIRE(NEB(images, climb=True, method="improvedtangent"), logfile=None).run(
            fmax=1e-9, steps=args.steps
        )
        return images

    ours_s, result = _median_seconds(ours, args.timing_repeats)
    theirs_s, images = _median_seconds(theirs, args.timing_repeats)
    difference = max(
        np.abs(mine.positions - reference.positions).max()
        for mine, reference in zip(result.images, images, strict=True)
    )
    return {
        "atoms": len(band[0]),
        "interior_images": len(band) - 2,
        "steps": args.steps,
        "equiforce_step_s": ours_s / args.steps,
        "ase_step_s": theirs_s / args.steps,
        "ase_over_equiforce": theirs_s / ours_s,
        "model_calls": result.model_calls,
        "max_position_difference_A": float(difference),
    }


def main(argv: list[str] | None = None) -> int:
    """Time both ways for each system, write the JSON, print one line each."""
    from equiforce.md.neb import interpolated_band
    from equiforce.models import save_model
    from equiforce.models.presets import preset_potential

    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp())
    save_model(preset_potential(args.preset, dtype=args.dtype), scratch / "model.pt")
    document = {**run_record("benchmarks.neb", argv), "preset": args.preset, "cases": {}}
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(args.out) / f"neb_{stamp}.json"
    for name in args.systems:
        band = interpolated_band(*SYSTEMS[name](), args.images, "linear")
        case = run_case(band, scratch / "model.pt", args)
        document["cases"][name] = case
        write_json(document, path)
        print(
            f"{name}: {case['atoms']} atoms x {case['interior_images']} images, per step "
            f"equiforce {case['equiforce_step_s'] * 1e3:.1f} ms, ASE image by image "
            f"{case['ase_step_s'] * 1e3:.1f} ms ({case['ase_over_equiforce']:.2f}x), bands "
            f"within {case['max_position_difference_A']:.1e} Å"
        )
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
