"""``equiforce preprocess DATA.xyz [MORE.xyz ...] OUT/ --r-max R``: the on-disk dataset format.

Streams the extxyz files into shards of ``.npy`` arrays with neighbour lists and streaming
statistics (``equiforce.data.ondisk``); ``data.train_file: OUT/`` then trains from the
directory without loading it (docs/training.md, "Datasets larger than memory").
``equiforce preprocess --verify OUT/`` checks every shard file against the manifest's size and
CRC-32 (after copying a dataset to another machine, say), naming each file that differs.
"""

from __future__ import annotations

import argparse
import time

from equiforce.cli.options import add_state_key_options
from equiforce.data.extxyz import KeySpec
from equiforce.data.ondisk import preprocess, verify_preprocessed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``preprocess`` subcommand."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="extxyz file(s), then OUT/")
    parser.add_argument("--r-max", type=float, help="neighbour cutoff, Å (required to preprocess)")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check the shard files of the preprocessed directory PATH against its manifest",
    )
    parser.add_argument(
        "--species",
        nargs="+",
        default=None,
        metavar="SYMBOL",
        help="species order of atom_type (default: those present, by atomic number)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes building neighbour lists")
    parser.add_argument(
        "--shard-size", type=int, default=10_000, help="structures per shard (default 10000)"
    )
    for name in ("energy", "forces", "stress", "virials"):
        parser.add_argument(f"--{name}-key", default=name, help=f"extxyz key of the {name}")
    parser.add_argument("--weight-key", default="config_weight", help="per-config weight key")
    parser.add_argument("--config-type-key", default="config_type", help="config type key")
    add_state_key_options(parser)
    parser.add_argument(
        "--config-type-weights",
        nargs="+",
        default=(),
        metavar="TYPE=W",
        help="weights of the frames of these config types (data.config_type_weights)",
    )


def run(args: argparse.Namespace) -> int:
    """Preprocess and print a one-line summary (or verify: 1 when a file differs)."""
    if args.verify:
        return _verify(args.paths)
    if args.r_max is None:
        raise ValueError("--r-max is required to preprocess")
    if len(args.paths) < 2:
        raise ValueError("give one or more extxyz files and then the output directory")
    if args.workers < 1 or args.shard_size < 1:
        raise ValueError("--workers and --shard-size must be >= 1")
    *inputs, out = args.paths
    keys = KeySpec(
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        stress_key=args.stress_key,
        virials_key=args.virials_key,
        weight_key=args.weight_key,
        config_type_key=args.config_type_key,
        config_type_weights=_config_type_weights(args.config_type_weights),
        total_charge_key=args.total_charge_key,
        total_spin_key=args.total_spin_key,
    )
    start = time.perf_counter()
    manifest = preprocess(
        inputs, out, args.species, args.r_max, keys, args.workers, shard_size=args.shard_size
    )
    print(
        f"{out}: {manifest['n_structures']} structures, {manifest['n_atoms']} atoms, "
        f"{manifest['n_edges']} edges in {len(manifest['shards'])} shard(s), species "
        f"{manifest['type_names']}, r_max {manifest['r_max']} Å "
        f"({time.perf_counter() - start:.1f} s)"
    )
    return 0


def _config_type_weights(pairs: list[str]) -> tuple[tuple[str, float], ...]:
    """``TYPE=W`` options as sorted ``(type, weight)`` pairs (``KeySpec``'s).

    Raises:
        ValueError: not ``TYPE=W`` with a number W >= 0.
    """
    weights = {}
    for pair in pairs:
        kind, _, value = pair.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not kind or not weight >= 0:
            raise ValueError(f"--config-type-weights {pair!r}: give TYPE=W, W a number >= 0")
        weights[kind] = weight
    return tuple(sorted(weights.items()))


def _verify(paths: list[str]) -> int:
    """``--verify DIR``: every problem on a line of its own; 0 when every file is intact."""
    if len(paths) != 1:
        raise ValueError("--verify takes one preprocessed directory")
    start = time.perf_counter()
    problems = verify_preprocessed(paths[0])
    for problem in problems:
        print(problem)
    seconds = time.perf_counter() - start
    if problems:
        print(
            f"{paths[0]}: {len(problems)} shard file(s) differ from the manifest ({seconds:.1f} s)"
        )
        return 1
    print(f"{paths[0]}: every shard file matches the manifest's size and CRC-32 ({seconds:.1f} s)")
    return 0
