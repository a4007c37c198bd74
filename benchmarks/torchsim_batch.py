r"""N structures relaxed and MD'd: batched through TorchSim vs one by one through ASE.

The structures are rattled fcc Al cells of the sizes ``--repeats`` cycles through (repeat 1: 4
atoms, 2: 32, 3: 108), run with a preset's random-weight ``-al`` model (``equiforce.models.
presets``) or a model file (``--model``, any species in ``--element``). Per preset:

* relax: FIRE with the cell fixed, ``--relax-steps`` steps for every structure (``fmax`` 1e-9
  eV/Å, so no structure stops early and both paths do the same work): ``relax_batched``
  (``EquiforceModel``, one model call per step for all structures) vs ``relax_structures``
  (``EquiforceCalculator``, ASE's FIRE, structure after structure);
* md: Langevin NVT at 300 K, ``--md-steps`` steps of 0.5 fs: ``run_batched_md`` (TorchSim's
  ``nvt_langevin`` on the batch) vs ``run_md`` per structure (ASE's Langevin);
* parity: the largest |energy| difference between the batch and the calculator on the starting
  structures (float64: round-off).

    python -m benchmarks.torchsim_batch --presets allegro-tiny-al mace-128-l1-al \\
        --n-structures 8 --repeats 1 2 --relax-steps 20 --md-steps 20 --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk

from benchmarks.common import add_common_arguments, run_record
from equiforce.workflows.bench.report import write_json


def structures(n: int, repeats: list[int], element: str, seed: int = 0) -> list[Atoms]:
    """``n`` rattled (0.05 Å) fcc cells of ``element``, sizes cycling through ``repeats``."""
    lattice = {"Al": 4.05, "Cu": 3.61}.get(element, 4.0)
    frames = []
    for index in range(n):
        repeat = repeats[index % len(repeats)]
        atoms = bulk(element, "fcc", a=lattice, cubic=True) * (repeat, repeat, repeat)
        atoms.rattle(0.05, seed=seed + index)
        frames.append(atoms)
    return frames


def _timed(call) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def run_case(model_source: Any, frames: list[Atoms], args: argparse.Namespace) -> dict:
    """Relax and MD ``frames`` both ways with one model; timings and parity."""
    from equiforce.md.batched import run_batched_md
    from equiforce.md.calculator import EquiforceCalculator
    from equiforce.md.dynamics import run_md
    from equiforce.md.relax import relax_batched, relax_structures
    from equiforce.md.torchsim import EquiforceModel, atoms_to_state

    model = EquiforceModel(model_source, device=args.device, compute_stress=False)
    calculator = EquiforceCalculator(model.model)
    batch_energy = model(atoms_to_state(frames, model.device))["energy"].cpu().numpy()
    serial_energy = np.array([calculator.get_potential_energy(atoms) for atoms in frames])
    relax = dict(fmax=1e-9, steps=args.relax_steps)
    _, relax_batched_s = _timed(lambda: relax_batched(frames, model, **relax))
    _, relax_serial_s = _timed(lambda: relax_structures(frames, calculator, **relax))
    md = dict(n_steps=args.md_steps, log_interval=args.md_steps)
    _, md_batched_s = _timed(lambda: run_batched_md(frames, model, **md))
    _, md_serial_s = _timed(
        lambda: [run_md(atoms, calculator, seed=k, **md) for k, atoms in enumerate(frames)]
    )
    n = len(frames)
    return {
        "n_structures": n,
        "atoms": [len(atoms) for atoms in frames],
        "max_abs_energy_diff_eV": float(np.abs(batch_energy - serial_energy).max()),
        "relax": _pair(relax_batched_s, relax_serial_s, n * args.relax_steps),
        "md": _pair(md_batched_s, md_serial_s, n * args.md_steps),
    }


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
    parser.add_argument("--relax-steps", type=int, default=20)
    parser.add_argument("--md-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="cpu")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the cases, print one line each, write ``out/torchsim_batch_<time>.json``."""
    from equiforce.models.presets import preset_potential

    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    frames = structures(args.n_structures, args.repeats, args.element)
    sources = (
        {args.model: args.model}
        if args.model
        else {name: preset_potential(name, args.dtype) for name in args.presets}
    )
    document = {
        **run_record("benchmarks.torchsim_batch", argv),
        "threads": args.threads,
        "cases": {},
    }
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(args.out) / f"torchsim_batch_{stamp}.json"
    for name, source in sources.items():
        case = run_case(source, frames, args)
        document["cases"][name] = case
        write_json(document, path)
        print(
            f"{name}: {case['n_structures']} structures ({sum(case['atoms'])} atoms): relax "
            f"{case['relax']['batched_s']:.2f} s batched vs {case['relax']['serial_s']:.2f} s "
            f"one by one (x{case['relax']['speedup']:.2f}); md {case['md']['batched_s']:.2f} s "
            f"vs {case['md']['serial_s']:.2f} s (x{case['md']['speedup']:.2f}); energy parity "
            f"{case['max_abs_energy_diff_eV']:.1e} eV"
        )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
