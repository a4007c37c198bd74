"""Inference speed and memory: equiforce's MACE vs mace-torch on identical weights.

The cases are every (preset, dtype, call kind) of the options over the systems; each is one
``equiforce bench`` run (``equiforce.workflows.bench.run_bench``): a fresh worker process per
implementation and system, the peer (here mace-torch, in ``.venv-mace``) running our preset's
weights exported with ``equiforce.interop.to_mace_torch``, single calls alternated between
the workers, median ms per call, the calls' peak memory above each worker's baseline, and the
parity of the first call. Periodic boxes take their own warm-up and repeat counts.

This module is also the runner of the other case-list scripts (``allegro_inference``,
``mace_train_step``, ``allegro_compile``, ``profile_models``, ``allegro_profile``): each calls
``run`` with its own defaults.

    python -m benchmarks.inference --presets mace-128-l1 --dtypes float32 \\
        --systems batch64 box-3000 --threads 2 --repeats 3 --warmup 1

Output: ``<out>/inference_<time>.json`` (the run record and one bench report per case) and a
table per case on stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import failures, preset_with_species, run_benches
from equiforce.models import save_model
from equiforce.models.presets import PRESETS
from equiforce.workflows.bench import BenchConfig
from equiforce.workflows.bench.kinds import KINDS
from equiforce.workflows.bench.options import Variant
from equiforce.workflows.bench.profile import format_profile
from equiforce.workflows.bench.systems import parse_system

__all__ = ["add_run_arguments", "cases", "main", "parser", "run"]

DEFAULTS: dict[str, Any] = {
    "presets": ("mace-128-l1", "mace-small"),
    "dtypes": ("float32", "float64"),
    "systems": ("molecule", "batch64", "box-2187"),
    "kinds": ("inference",),
    "peers": True,
    "threads": 2,
    "warmup": 2,
    "repeats": 5,
    "box_warmup": 1,
    "box_repeats": 3,
}


def add_run_arguments(p: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """``--backend``, ``--threads``, ``--warmup``, ``--repeats``, ``--out`` (every runner's)."""
    p.add_argument("--backend", default=None, help="equiforce kernel backend")
    p.add_argument("--threads", type=int, default=defaults["threads"])
    p.add_argument("--warmup", type=int, default=defaults["warmup"], help="untimed rounds")
    p.add_argument("--repeats", type=int, default=defaults["repeats"], help="timed rounds")
    p.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder")


def parser(description: str, **defaults: Any) -> argparse.ArgumentParser:
    """The options of a case-list script; ``defaults`` override ``DEFAULTS``."""
    d = {**DEFAULTS, **defaults}
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--presets", nargs="+", default=list(d["presets"]), choices=sorted(PRESETS))
    p.add_argument("--dtypes", nargs="+", default=list(d["dtypes"]), help="precisions")
    p.add_argument("--systems", nargs="+", default=list(d["systems"]), help="bench systems")
    p.add_argument("--kinds", nargs="+", default=list(d["kinds"]), choices=KINDS)
    p.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=d["peers"],
        help="also the peer (mace-torch / nequip-allegro) on the same weights",
    )
    p.add_argument(
        "--peers-same-backward",
        action="store_true",
        help="training kinds: the peer's backward into its parameters only, as ours (default: "
        "its trainers' loss.backward())",
    )
    add_run_arguments(p, d)
    p.add_argument("--box-warmup", type=int, default=d["box_warmup"], help="boxes: untimed")
    p.add_argument("--box-repeats", type=int, default=d["box_repeats"], help="boxes: timed")
    p.add_argument("--seed", type=int, default=0, help="weights and systems")
    p.add_argument(
        "--species",
        nargs="+",
        default=None,
        help="build the presets on these species (of H C N O; e.g. for file:3bpa.xyz systems), "
        "saved as model files in --out; default: the presets' own",
    )
    return p


def cases(
    args: argparse.Namespace, variants: tuple[Variant, ...] = (), profile: bool = False
) -> list[BenchConfig]:
    """One bench configuration per (preset, dtype, kind, molecules-or-boxes)."""
    molecules = ("molecule", "batch", "file")
    groups = (
        ([s for s in args.systems if parse_system(s)[0] in molecules], False),
        ([s for s in args.systems if parse_system(s)[0] not in molecules], True),
    )
    return [
        BenchConfig(
            **_source(args, preset),
            systems=tuple(systems),
            precision=dtype,
            kind=kind,
            backend=args.backend,
            variants=variants,
            profile=profile,
            peers=args.peers,
            peers_same_backward=args.peers_same_backward,
            repeats=args.box_repeats if boxes else args.repeats,
            warmup=args.box_warmup if boxes else args.warmup,
            threads=args.threads,
            seed=args.seed,
        )
        for preset in args.presets
        for dtype in args.dtypes
        for kind in args.kinds
        for systems, boxes in groups
        if systems
    ]


def _source(args: argparse.Namespace, preset: str) -> dict[str, str]:
    """The ``BenchConfig`` model source: the preset, or with ``--species`` its model on those
    species (weights from ``--seed``) saved in ``--out``."""
    if not args.species:
        return {"preset": preset}
    path = args.out / f"{preset}_{'-'.join(args.species)}_seed{args.seed}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        model = preset_with_species(preset, tuple(args.species), "float64", args.seed)
        save_model(model, path)
    return {"model": str(path)}


def run(
    argv: list[str] | None,
    script: str,
    description: str,
    variants: Callable[[argparse.Namespace], tuple[Variant, ...]] = lambda args: (),
    options: Callable[[argparse.ArgumentParser], None] = lambda p: None,
    profile: bool = False,
    **defaults: Any,
) -> int:
    """Parse ``argv``, run the cases, print tables (and profiles), write the JSON.

    Args:
        argv: the script's arguments.
        script: its module name (for the run record).
        description: its ``--help`` line.
        variants: further equiforce variants from the parsed options.
        options: adds the script's own options to the parser.
        profile: profile one call of every implementation.
        **defaults: option defaults (``DEFAULTS``' keys).

    Returns:
        0, or 1 when a case failed (the JSON and the tables say which and why).
    """
    p = parser(description, **defaults)
    options(p)
    args = p.parse_args(argv)
    document = run_benches(script, argv, cases(args, variants(args), profile), args.out)
    for report in document["runs"] if profile else ():
        for result in report["results"]:
            for impl, data in result.get("implementations", {}).items():
                title = f"{impl}, {report['model']['source']}, {result['system']}"
                title += f", {report['settings']['precision']}, {report['settings']['kind']}"
                print(format_profile(title, data["profile"]) + "\n")
    return 1 if failures(document) else 0


def main(argv: list[str] | None = None) -> int:
    """MACE presets against mace-torch (see the module docstring)."""
    return run(argv, "benchmarks.inference", __doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
