"""``equiforce bench MODEL|--preset NAME``: inference or training-step speed and memory,
optionally against the peer framework on the same weights (``--peers``, ``--train-step``)."""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``bench`` options on ``parser``."""
    from equiforce.cli.options import add_device_option
    from equiforce.models.presets import PRESETS
    from equiforce.workflows.bench.systems import DEFAULT_SYSTEMS

    parser.add_argument(
        "model",
        nargs="?",
        default=None,
        help="equiforce model file, or an exported .pt2 package (timed as exported: "
        "--precision, --backend, --compile, --exported, --peers, --train-step do not apply)",
    )
    parser.add_argument(
        "--preset", default=None, help=f"random-weight model instead: {', '.join(PRESETS)}"
    )
    parser.add_argument(
        "--systems",
        nargs="+",
        default=None,
        help="molecule, batchN (N rattled copies in one batch), box-N (water box, ~N atoms), "
        "fcc-N (fcc Al box, ~N atoms, for the -al presets), file:PATH[@INDEX] (a structure "
        "file's frames, e.g. file:train.xyz@:5, in one batch); "
        f"default: {' '.join(DEFAULT_SYSTEMS)} (a .pt2 package, one structure per call: "
        "without the batches)",
    )
    parser.add_argument(
        "--precision",
        default=None,
        help="float32 (default), float64 or a precision mode (a package: as exported)",
    )
    parser.add_argument("--backend", default=None, help="kernel backend for equiforce")
    parser.add_argument("--compile", action="store_true", help="torch.compile equiforce's model")
    parser.add_argument(
        "--exported",
        default=None,
        choices=("reference", "fast"),
        metavar="BACKEND",
        help="also time the model's exported .pt2 package (equiforce export), traced with this "
        "kernel backend (fast: the C++ kernel library, carried by the package; reference: plain "
        "torch ops); inference only",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="also run the same weights through the peer framework (mace-torch for MACE, "
        "nequip-allegro for Allegro; equiforce.interop), in its own venv and worker process, "
        "calls interleaved with ours; its python: --mace-python / --nequip-python, else "
        "$EQUIFORCE_MACE_PYTHON / $EQUIFORCE_NEQUIP_PYTHON, else .venv-mace / .venv-nequip",
    )
    parser.add_argument(
        "--train-step",
        action="store_true",
        help="time a training step instead of inference: energy + forces with create_graph, "
        "the force loss, its (double) backward and an Adam step (equiforce train's default "
        "optimiser); the peer too with --peers, with its own trainers' loss.backward() (ours "
        "goes into the parameters only)",
    )
    parser.add_argument(
        "--peers-same-backward",
        action="store_true",
        help="with --train-step: the peer's backward into its parameters only, as ours",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per system")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument(
        "--settle",
        type=int,
        default=0,
        help="untimed calls of an implementation right before each of its timed ones (as an "
        "MD loop calls one model step after step; default 0: calls strictly alternate "
        "between the implementations' processes, each finding the caches as the other left "
        "them, which inflates sub-millisecond calls)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: all); every call's wall time and the worker's CPU time "
        "are reported: on a loaded machine, with 1 thread, quote the CPU-time ratio",
    )
    add_device_option(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of preset weights and systems")
    parser.add_argument(
        "--mace-python", default=None, help="python of the mace-torch venv (for --peers)"
    )
    parser.add_argument(
        "--nequip-python", default=None, help="python of the nequip-allegro venv (for --peers)"
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default: bench_out/<model>-<time>)"
    )


def default_systems(model: str | None) -> tuple[str, ...]:
    """The systems when ``--systems`` is not given: ``DEFAULT_SYSTEMS``, less the batches of
    several structures for an exported package (it evaluates one structure per call)."""
    from equiforce.workflows.bench.options import is_package
    from equiforce.workflows.bench.systems import DEFAULT_SYSTEMS, parse_system

    if not is_package(model):
        return DEFAULT_SYSTEMS
    return tuple(name for name in DEFAULT_SYSTEMS if parse_system(name)[0] != "batch")


def command_line(args: argparse.Namespace) -> str:
    """The ``equiforce bench ...`` command of ``args``: the model and every option that
    differs from its default, in the parser's order (recorded in the report and the ratio
    rows, so each figure carries the command that reproduces it)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    words = ["equiforce", "bench"] + ([args.model] if args.model else [])
    for action in parser._actions:  # noqa: SLF001  (argparse exposes no public list)
        value = getattr(args, action.dest, None)
        if not action.option_strings or value == action.default or action.dest == "out":
            continue
        if isinstance(action, argparse._StoreTrueAction):  # noqa: SLF001
            words.append(action.option_strings[0])
        else:
            values = value if isinstance(value, list) else [value]
            words += [action.option_strings[0], *map(str, values)]
    return shlex.join(words)


def config_from_args(args: argparse.Namespace) -> Any:
    """The ``BenchConfig`` of parsed ``bench`` arguments (``ValueError`` on bad options)."""
    from equiforce.workflows.bench.options import Variant
    from equiforce.workflows.bench.run import BenchConfig

    pythons = {"mace-torch": args.mace_python, "nequip-allegro": args.nequip_python}
    options = {"threads": args.threads} if args.threads is not None else {}
    return BenchConfig(
        model=args.model,
        preset=args.preset,
        systems=tuple(args.systems or default_systems(args.model)),
        precision=args.precision,
        backend=args.backend,
        compile=args.compile,
        kind="train-step" if args.train_step else "inference",
        variants=(Variant("exported", export_backend=args.exported),) if args.exported else (),
        peers=args.peers,
        peers_same_backward=args.peers_same_backward,
        repeats=args.repeats,
        warmup=args.warmup,
        settle=args.settle,
        device=args.device,
        seed=args.seed,
        peer_python={k: v for k, v in pythons.items() if v is not None},
        **options,
    )


def run(args: argparse.Namespace) -> int:
    """Run the bench, print the table and write ``bench.json``, ``bench.png`` and
    ``ratios.md`` (the rows of docs/performance.md's "current ratios" table, with --peers).

    Returns:
        0, or 1 when a system or a peer failed (the report says which and why).
    """
    from equiforce.files import atomic_write_text
    from equiforce.workflows.bench.report import (
        RATIO_HEADER,
        format_table,
        ratio_rows,
        write_json,
        write_plot,
    )
    from equiforce.workflows.bench.run import run_bench

    config = config_from_args(args)
    label = args.preset or Path(args.model).stem
    out = Path(args.out or f"bench_out/{label}-{_dt.datetime.now():%Y%m%d-%H%M%S}")
    report = run_bench(config, log=lambda line: print(line, flush=True))
    report["command"] = command_line(args)
    print(format_table(report))
    print(f"report written to {write_json(report, out / 'bench.json')}")
    print(f"plot written to {write_plot(report, out / 'bench.png')}")
    rows = ratio_rows(report, report["command"])
    if rows:
        table = "\n".join([RATIO_HEADER, *rows]) + "\n"
        atomic_write_text(table, out / "ratios.md")
        print(f"ratio rows (docs/performance.md) written to {out / 'ratios.md'}:\n{table}")
    failed = [r["system"] for r in report["results"] if "error" in r or r.get("failed")]
    return 1 if failed else 0
