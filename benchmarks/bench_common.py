"""Helpers shared by the benchmark scripts: machine description, git commit, free memory.

Thin re-export of ``equiforce.workflows.bench.machine`` (what ``equiforce bench`` records), so the
scripts and the command describe a run the same way. The scripts run as
``python benchmarks/<script>.py``, so this module is importable by name.
"""

from __future__ import annotations

from pathlib import Path

from equiforce.workflows.bench.machine import git_commit, machine_info, mem_available_gb

__all__ = ["REPO_ROOT", "git_commit", "machine_info", "mem_available_gb"]

REPO_ROOT = Path(__file__).resolve().parents[1]
