"""ASE calculator and molecular dynamics with stability figures."""

from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.committee import CommitteeCalculator
from equiforce.md.dynamics import (
    BondDeviation,
    BondMonitor,
    MDResult,
    bond_length_deviation,
    energy_drift,
    format_md_summary,
    plot_md,
    run_md,
)

__all__ = [
    "BondDeviation",
    "BondMonitor",
    "CommitteeCalculator",
    "EquiforceCalculator",
    "MDResult",
    "bond_length_deviation",
    "energy_drift",
    "format_md_summary",
    "plot_md",
    "run_md",
]
