"""Helpers shared by the benchmark scripts: machine description, git commit, free memory.

The scripts run as ``python benchmarks/<script>.py``, so this module is importable by name.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    """Current commit of the repository (with ``-dirty`` when tracked files have local changes)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def mem_available_gb() -> float:
    """``MemAvailable`` of /proc/meminfo, GB (inf when unreadable)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("inf")


def machine_info(packages: Sequence[str]) -> dict[str, Any]:
    """CPU, memory, OS, load, the versions of ``packages`` (as importable here) and the commit."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fields = {
            key.strip(): value.strip()
            for key, value in (line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        }
        info["cpu_model"] = fields.get("Model name")
        info["cpus"] = fields.get("CPU(s)")
        info["flags_avx512"] = "avx512f" in fields.get("Flags", "")
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as handle:
            info["mem_total_kb"] = int(handle.readline().split()[1])
    except OSError:
        pass
    for package in packages:
        try:
            info[f"{package}_version"] = getattr(__import__(package), "__version__", "?")
        except Exception as err:  # noqa: BLE001  (report whatever is missing, never fail)
            info[f"{package}_version"] = f"unavailable ({type(err).__name__})"
    info["git_commit"] = git_commit()
    return info
