"""What every benchmark script shares: the data folder, the output folder, the run record.

``add_common_arguments`` gives every script ``--data-dir`` (default ``../shared/data`` beside
the checkout: the real datasets are never copied into the project) and ``--out``;
``run_record`` is the header every JSON result starts with (date, machine, commit, the command
line that reproduces it), the same facts ``equiforce bench`` records.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from pathlib import Path
from typing import Any

from equiforce.measure.machine import git_commit, machine_info, mem_available_gb

__all__ = [
    "DEFAULT_DATA_DIR",
    "REPO_ROOT",
    "add_common_arguments",
    "git_commit",
    "machine_info",
    "mem_available_gb",
    "require_data",
    "run_record",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


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
