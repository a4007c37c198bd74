"""Scaling with system size: time and memory of energy + forces from 10^3 to 10^6 atoms.

The cases are periodic fcc aluminium boxes at fixed density (bench systems ``fcc-N``:
``--reps`` n -> n^3 cubic cells, 4 n^3 atoms; 6, 9, 14, 20, 29 -> 864 ... 97,556 atoms;
43, 63 -> 318,028 and 1,000,188), rattled, lattice-ordered (``--shuffle``: random order), run
as one ``equiforce bench`` configuration with the scaling model ``allegro-tiny-al`` (l_max 1,
1 layer, 32 / 8 features, r_max 4 Å, ~13.4 edges per atom; ``--preset mace-128-l1-al`` for
MACE). Smallest box first; a box whose worker peak, extrapolated from the two largest boxes
before it, would exceed ``--max-peak-gb`` (or the memory available) is skipped. ``--peers``
adds nequip-allegro on the same weights; ``--whole`` adds our model without blocks of centre
atoms (``Potential.blocking = None``) and ``--chunk-edges`` MACE with other receiver chunks
(0: one pass), each in its own worker, interleaved call by call. The report fits log-log
exponents of time and call memory against atoms and plots ms per atom-step.

    python -m benchmarks.allegro_scaling --peers --whole --threads 1 --warmup 1 --repeats 2
    python -m benchmarks.allegro_scaling --reps 43 63 --threads 1 --warmup 1 --repeats 2 \\
        --max-peak-gb 16
    python -m benchmarks.allegro_scaling --combine A.json B.json --plot-out docs/scaling.png

Output: ``<out>/allegro_scaling_<time>.json`` and ``.png`` beside it, a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import failures, run_benches
from benchmarks.inference import add_run_arguments
from equiforce.models.presets import PRESETS
from equiforce.workflows.bench import BenchConfig
from equiforce.workflows.bench.options import Variant
from equiforce.workflows.bench.report import format_table, scaling_exponents, write_plot

__all__ = ["combine", "main", "parser", "run"]

DEFAULTS: dict[str, Any] = {
    "preset": "allegro-tiny-al",
    "reps": (6, 9, 14, 20, 29),
    "threads": 2,
    "warmup": 2,
    "repeats": 3,
    "max_peak_gb": 8.0,
}


def parser(description: str, **defaults: Any) -> argparse.ArgumentParser:
    """The scaling options; ``defaults`` override ``DEFAULTS``."""
    d = {**DEFAULTS, **defaults}
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--preset", default=d["preset"], choices=sorted(PRESETS))
    p.add_argument("--reps", nargs="+", type=int, default=list(d["reps"]), help="cells per side")
    p.add_argument("--shuffle", action="store_true", help="atoms in seeded random order")
    p.add_argument("--peers", action="store_true", help="also the peer on the same weights")
    p.add_argument("--whole", action="store_true", help="also ours without blocks")
    p.add_argument(
        "--chunk-edges", nargs="*", type=int, default=[], help="also MACE with these chunks"
    )
    p.add_argument("--dtype", default="float32")
    add_run_arguments(p, d)
    p.add_argument("--seed", type=int, default=7, help="weights and rattles")
    p.add_argument("--max-peak-gb", type=float, default=d["max_peak_gb"])
    p.add_argument("--combine", nargs="+", type=Path, help="only plot these outputs as one")
    p.add_argument("--plot-out", type=Path, default=Path("docs/scaling.png"))
    return p


def _variants(args: argparse.Namespace) -> tuple[Variant, ...]:
    whole = (Variant("whole graph", whole_graph=True),) if args.whole else ()
    chunks = tuple(
        Variant(f"chunk_edges={n}" if n else "one pass", chunk_edges=n) for n in args.chunk_edges
    )
    return whole + chunks


def combine(paths: list[Path], plot: Path) -> dict[str, Any]:
    """One report of several outputs' boxes (sorted by atoms), refitted; plotted to ``plot``."""
    runs = [run for path in paths for run in json.loads(path.read_text())["runs"]]
    results = sorted((r for run in runs for r in run["results"]), key=lambda r: r["n_atoms"])
    report = {**runs[0], "results": results}
    report["scaling_exponents"] = scaling_exponents(report)
    write_plot(report, plot)
    return report


def run(argv: list[str] | None, script: str, description: str, **defaults: Any) -> int:
    """Parse ``argv``, run the boxes (or ``--combine``), print, write JSON and plot.

    Returns:
        0, or 1 when a box failed (skipped boxes do not count).
    """
    args = parser(description, **defaults).parse_args(argv)
    if args.combine:
        report = combine(args.combine, args.plot_out)
        print(format_table(report) + f"\nwrote {args.plot_out}")
        return 0
    suffix = "-shuffled" if args.shuffle else ""
    config = BenchConfig(
        preset=args.preset,
        systems=tuple(f"fcc-{4 * n**3}{suffix}" for n in sorted(args.reps)),
        precision=args.dtype,
        backend=args.backend,
        variants=_variants(args),
        peers=args.peers,
        repeats=args.repeats,
        warmup=args.warmup,
        threads=args.threads,
        seed=args.seed,
        max_peak_gb=args.max_peak_gb,
    )
    document = run_benches(script, argv, [config], args.out)
    plot = write_plot(document["runs"][0], Path(document["path"]).with_suffix(".png"))
    print(f"wrote {plot}")
    return 1 if failures(document) else 0


def main(argv: list[str] | None = None) -> int:
    """Allegro (or any preset) on growing fcc boxes (see the module docstring)."""
    return run(argv, "benchmarks.allegro_scaling", __doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
