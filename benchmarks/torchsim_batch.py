r"""N structures relaxed and MD'd: batched through TorchSim vs one by one through ASE.

The structures are rattled fcc Al cells of the sizes ``--repeats`` cycles through (repeat 1: 4
atoms, 2: 32, 3: 108), or with ``--slabs`` fcc(111) slabs of 4 layers of repeat x repeat atoms
with the bottom layer fixed (the surface-screening case: slabs share the molecules' TorchSim
states, periodic in x and y only), run with a preset's random-weight ``-al`` model
(``equiforce.models.presets``) or a model file (``--model``, any species in ``--element``).
Per preset:

* relax: FIRE with the cell fixed, ``--relax-steps`` steps for every structure (``fmax`` 1e-9
  eV/Å, so no structure stops early and both paths do the same work): ``relax_batched``
  (``EquiforceModel``, one model call per step for all structures) vs ``relax_structures``
  (``EquiforceCalculator``, ASE's FIRE, structure after structure);
* md: Langevin NVT at 300 K, ``--md-steps`` steps of 0.5 fs: ``run_batched_md`` (TorchSim's
  ``nvt_langevin`` on the batch) vs ``run_md`` per structure (ASE's Langevin);
* npt_<barostat>: for each of ``--barostats`` (mtk, berendsen, c-rescale), isotropic NPT at
  300 K and 0 GPa, ``--npt-steps`` steps of 0.5 fs (barostat 200 fs, thermostat 50 fs), the
  model computing the stress: ``run_batched_md`` (``equiforce.md.batched_mtk`` /
  ``batched_npt`` / ``batched_crescale``: the step on every cell) vs ``run_md`` per structure
  (the same integrator's);
* parity: the largest |energy| difference between the batch and the calculator on the starting
  structures (float64: round-off).

Each time is the median of ``--timing-repeats`` runs after the parity calls (the warm-up).

    python -m benchmarks.torchsim_batch --presets allegro-tiny-al mace-128-l1-al \\
        --n-structures 8 --repeats 1 2 --relax-steps 20 --md-steps 20 --npt-steps 20 \\
        --timing-repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import functools
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk, fcc111
from ase.constraints import FixAtoms

from benchmarks.common import add_common_arguments, run_record
from equiforce.workflows.bench.report import write_json


def structures(
    n: int, repeats: list[int], element: str, seed: int = 0, slabs: bool = False
) -> list[Atoms]:
    """``n`` rattled (0.05 Å) fcc cells of ``element``, sizes cycling through ``repeats``;
    ``slabs``: fcc(111) slabs of (repeat, repeat, 4) atoms instead, 8 Å of vacuum, periodic
    in x and y, the bottom layer fixed (``FixAtoms``)."""
    lattice = {"Al": 4.05, "Cu": 3.61}.get(element, 4.0)
    frames = []
    for index in range(n):
        repeat = repeats[index % len(repeats)]
        if slabs:
            atoms = fcc111(element, (repeat, repeat, 4), a=lattice, vacuum=8.0)
            atoms.set_constraint(FixAtoms(mask=atoms.get_tags() == 4))
        else:
            atoms = bulk(element, "fcc", a=lattice, cubic=True) * (repeat, repeat, repeat)
        atoms.rattle(0.05, seed=seed + index)
        frames.append(atoms)
    return frames


def _timed(call, repeats: int) -> float:
    """Median wall time of ``repeats`` calls, s."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_case(model_source: Any, frames: list[Atoms], args: argparse.Namespace) -> dict:
    """Relax, MD and NPT-MD ``frames`` both ways with one model; timings and parity."""
    from equiforce.md.batched import run_batched_md
    from equiforce.md.calculator import EquiforceCalculator
    from equiforce.md.dynamics import NPTSettings, run_md
    from equiforce.md.relax import relax_batched, relax_structures
    from equiforce.md.torchsim import CellAxesModel, EquiforceModel, atoms_to_state

    model = EquiforceModel(model_source, device=args.device, compute_stress=False)
    calculator = EquiforceCalculator(model.model)
    batch_energy = CellAxesModel(model)(atoms_to_state(frames, model.device))["energy"]
    batch_energy = batch_energy.cpu().numpy()
    serial_energy = np.array([calculator.get_potential_energy(atoms) for atoms in frames])
    repeats = args.timing_repeats
    relax = dict(fmax=1e-9, steps=args.relax_steps)
    relax_batched_s = _timed(lambda: relax_batched(frames, model, **relax), repeats)
    relax_serial_s = _timed(lambda: relax_structures(frames, calculator, **relax), repeats)
    n = len(frames)
    case = {
        "n_structures": n,
        "atoms": [len(atoms) for atoms in frames],
        "max_abs_energy_diff_eV": float(np.abs(batch_energy - serial_energy).max()),
        "relax": _pair(relax_batched_s, relax_serial_s, n * args.relax_steps),
    }
    with_stress = EquiforceModel(model.model, device=args.device, compute_stress=True)
    runs = {"md": (dict(n_steps=args.md_steps), model)}
    for barostat in [] if args.slabs else args.barostats:
        npt = NPTSettings(barostat=barostat, barostat_time_fs=200.0, thermostat_time_fs=50.0)
        runs[f"npt_{barostat}"] = (
            dict(n_steps=args.npt_steps, ensemble="npt", npt=npt),
            with_stress,
        )

    def one_by_one(**settings) -> None:
        for k, atoms in enumerate(frames):
            run_md(atoms, calculator, seed=k, **settings)

    for name, (settings, batch_model) in runs.items():
        settings = dict(settings, log_interval=settings["n_steps"])
        batched = functools.partial(run_batched_md, frames, batch_model, **settings)
        batched_s = _timed(batched, repeats)
        serial_s = _timed(functools.partial(one_by_one, **settings), repeats)
        case[name] = _pair(batched_s, serial_s, n * settings["n_steps"])
    return case


def _pair(batched_s: float, serial_s: float, structure_steps: int) -> dict[str, float]:
    return {
        "batched_s": batched_s,
        "serial_s": serial_s,
        "batched_structure_steps_per_s": structure_steps / batched_s,
        "serial_structure_steps_per_s": structure_steps / serial_s,
        "speedup": serial_s / batched_s,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, "bench_out/torchsim_batch")
    parser.add_argument("--presets", nargs="+", default=["allegro-tiny-al"])
    parser.add_argument("--model", default=None, help="a model file instead of the presets")
    parser.add_argument("--element", default="Al", help="fcc element (Al for the presets)")
    parser.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    parser.add_argument("--n-structures", type=int, default=8)
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--slabs",
        action="store_true",
        help="fcc(111) slabs with the bottom layer fixed instead of cells (no NPT)",
    )
    parser.add_argument("--relax-steps", type=int, default=20)
    parser.add_argument("--md-steps", type=int, default=20)
    parser.add_argument("--npt-steps", type=int, default=20)
    parser.add_argument(
        "--barostats",
        nargs="*",
        default=["mtk", "berendsen", "c-rescale"],
        choices=("mtk", "berendsen", "c-rescale"),
    )
    parser.add_argument("--timing-repeats", type=int, default=3, help="median of this many")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the cases, print one line each, write ``out/torchsim_batch_<time>.json``."""
    from equiforce.models.presets import preset_potential

    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    frames = structures(args.n_structures, args.repeats, args.element, slabs=args.slabs)
    sources = (
        {args.model: args.model}
        if args.model
        else {name: preset_potential(name, args.dtype) for name in args.presets}
    )
    document = {
        **run_record("benchmarks.torchsim_batch", argv),
        "threads": args.threads,
        "slabs": args.slabs,
        "cases": {},
    }
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(args.out) / f"torchsim_batch_{stamp}.json"
    for name, source in sources.items():
        case = run_case(source, frames, args)
        document["cases"][name] = case
        write_json(document, path)
        timings = "; ".join(
            f"{kind} {pair['batched_s']:.2f} s batched vs {pair['serial_s']:.2f} s one by one "
            f"(x{pair['speedup']:.2f})"
            for kind, pair in case.items()
            if isinstance(pair, dict)
        )
        print(
            f"{name}: {case['n_structures']} structures ({sum(case['atoms'])} atoms): "
            f"{timings}; energy parity {case['max_abs_energy_diff_eV']:.1e} eV"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
