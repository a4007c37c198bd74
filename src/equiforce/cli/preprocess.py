"""``equiforce preprocess DATA.xyz [MORE.xyz ...] OUT/ --r-max R``: the on-disk dataset format.

Streams the extxyz files into memory-mapped shards with neighbour lists and streaming
statistics (``equiforce.data.ondisk``); ``data.train_file: OUT/`` then trains from the
directory without loading it (docs/training.md, "Datasets larger than memory").
"""

from __future__ import annotations

import argparse
import time

from equiforce.data.extxyz import KeySpec
from equiforce.data.ondisk import preprocess


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of the ``preprocess`` subcommand."""
    parser.add_argument("paths", nargs="+", metavar="PATH", help="extxyz file(s), then OUT/")
    parser.add_argument("--r-max", type=float, required=True, help="neighbour cutoff, Å")
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


def run(args: argparse.Namespace) -> int:
    """Preprocess and print a one-line summary."""
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
