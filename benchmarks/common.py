"""What every benchmark script shares: the data folder, the output folder, the run record.

``add_common_arguments`` gives every script ``--data-dir`` (default ``../shared/data`` beside
the checkout: the real datasets are never copied into the project) and ``--out``;
``run_record`` is the header every JSON result starts with (date, machine, commit, the command
line that reproduces it), the same facts ``equiforce bench`` records. ``run_benches`` runs a
speed script's cases (``equiforce.workflows.bench`` configurations) and writes them under one
such header.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from equiforce.measure.machine import git_commit, machine_info, mem_available_gb
from equiforce.models import build_model
from equiforce.models.presets import PRESETS

__all__ = [
    "DEFAULT_DATA_DIR",
    "REPO_ROOT",
    "add_common_arguments",
    "failures",
    "git_commit",
    "machine_info",
    "mem_available_gb",
    "preset_with_species",
    "require_data",
    "run_benches",
    "run_record",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
_ATOMIC_ENERGIES = {"H": -1.0, "C": -2.0, "N": -2.5, "O": -3.0}  # eV, of preset_with_species


def preset_with_species(preset: str, species: tuple[str, ...], dtype: str, seed: int):
    """The preset's model on ``species`` (any of H, C, N, O), random weights from ``seed``."""
    family, fields, _ = PRESETS[preset]
    energies = tuple(_ATOMIC_ENERGIES[s] for s in species)
    spec = {**fields, "type_names": species, "atomic_energies": energies}
    return build_model(family, {**spec, "dtype": dtype, "seed": seed}).eval()


def add_common_arguments(parser: argparse.ArgumentParser, out: str) -> None:
    """Add ``--data-dir`` and ``--out`` (default ``out``, e.g. ``bench_out/inference``)."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"folder of the shared datasets (default {DEFAULT_DATA_DIR})",
    )
    parser.add_argument("--out", type=Path, default=Path(out), help=f"output folder ({out})")


def require_data(data_dir: Path, *relative: str) -> list[Path]:
    """The files ``data_dir / r`` for each ``r``.

    Raises:
        FileNotFoundError: naming the first missing file and the ``--data-dir`` option.
    """
    paths = [Path(data_dir) / r for r in relative]
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} not found (pass --data-dir FOLDER)")
    return paths


def run_record(script: str, argv: list[str] | None = None) -> dict[str, Any]:
    """Date, machine, commit and the reproducing command of a benchmark run.

    Args:
        script: the module name, e.g. ``benchmarks.inference``.
        argv: the script's arguments (default ``sys.argv[1:]``).
    """
    args = sys.argv[1:] if argv is None else argv
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", script, *args]),
        "machine": machine_info(),
    }


def run_benches(
    script: str,
    argv: list[str] | None,
    configs: Sequence[Any],
    out: Path,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run each ``BenchConfig`` through ``run_bench``; print its table; write one JSON.

    The file ``out/<script>_<time>.json`` (rewritten after every case, so an interrupted run
    keeps what it measured) holds ``run_record(script, argv)`` and ``runs``: one bench report
    per configuration, in order.

    Args:
        script: the module name, e.g. ``benchmarks.inference``.
        argv: the script's arguments (``run_record``).
        configs: the cases, ``equiforce.workflows.bench.BenchConfig`` each.
        out: output folder.
        log: receives progress lines and the tables.

    Returns:
        The JSON document written (with ``path``, the file's name).
    """
    from equiforce.workflows.bench import run_bench
    from equiforce.workflows.bench.report import format_table, write_json

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(out) / f"{script.rsplit('.', 1)[-1]}_{stamp}.json"
    document: dict[str, Any] = {**run_record(script, argv), "path": str(path), "runs": []}
    for config in configs:
        report = run_bench(config, log=log)
        document["runs"].append(report)
        write_json(document, path)
        log(format_table(report))
    log(f"wrote {path}")
    return document


def failures(document: dict[str, Any]) -> list[str]:
    """``"<model> <system>"`` of every case of ``run_benches`` that failed, whole or in part.

    Systems skipped for memory (``BenchConfig.max_peak_gb``) are not failures.
    """
    return [
        f"{run['model']['source']} {result['system']}"
        for run in document["runs"]
        for result in run["results"]
        if ("error" in result and not result.get("skipped")) or result.get("failed")
    ]
