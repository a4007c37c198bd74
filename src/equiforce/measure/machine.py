"""Facts about the machine and the code a measurement ran on (recorded in every report)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Sequence

import equiforce
from equiforce.cpu_features import cpu_flag_set

__all__ = [
    "LOW_PRECISION_FLAGS",
    "cpu_flags",
    "git_commit",
    "machine_info",
    "mem_available_gb",
    "source_root",
]

# CPU features that decide how fast reduced precision runs: bf16 dot products (AVX512-BF16),
# bf16 tile matrix multiplies (AMX), and the vector widths float32 falls back to
LOW_PRECISION_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def source_root() -> Path:
    """Root of the source tree equiforce is imported from (a git checkout when editable)."""
    return Path(equiforce.__file__).resolve().parents[2]


def git_commit(root: Path | None = None) -> str:
    """Commit of the checkout at ``root`` (``-dirty`` when tracked files changed), or "unknown"."""
    root = source_root() if root is None else root
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + ("-dirty" if dirty else "")


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


def _cpu_fields() -> dict[str, Any]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return {}
    fields = {
        key.strip(): value.strip()
        for key, value in (line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    }
    return {
        "cpu_model": fields.get("Model name"),
        "cpus": fields.get("CPU(s)"),
    }


def cpu_flags(cpuinfo: str | None = None) -> dict[str, bool]:
    """Which of ``LOW_PRECISION_FLAGS`` the CPU has (empty when /proc/cpuinfo is unreadable).

    Args:
        cpuinfo: text of /proc/cpuinfo; read from the file when None.
    """
    present = cpu_flag_set(cpuinfo)
    return {} if present is None else {flag: flag in present for flag in LOW_PRECISION_FLAGS}


def machine_info(packages: Sequence[str] = ("torch", "e3nn", "equiforce")) -> dict[str, Any]:
    """CPU (model, count, ``cpu_flags``), GPU, memory, OS, load, ``packages`` versions, commit."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "mem_available_gb": mem_available_gb(),
        **_cpu_fields(),
        "cpu_flags": cpu_flags(),
    }
    try:
        with open("/proc/meminfo") as handle:
            info["mem_total_kb"] = int(handle.readline().split()[1])
    except OSError:
        pass
    import torch

    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    for package in packages:
        try:
            info[f"{package}_version"] = getattr(__import__(package), "__version__", "?")
        except Exception as err:  # noqa: BLE001  (report whatever is missing, never fail)
            info[f"{package}_version"] = f"unavailable ({type(err).__name__})"
    info["git_commit"] = git_commit()
    return info
