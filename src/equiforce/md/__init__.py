"""ASE calculator, molecular dynamics (NVT/NVE/NPT) with stability figures, relaxation.

The TorchSim model (``equiforce.md.torchsim``) needs the ``sim`` extra and is imported from
there; ``run_batched_md`` and ``relax_batched`` import it when called.
"""

from equiforce.md.batched import run_batched_md
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.committee import CommitteeCalculator
from equiforce.md.dynamics import NPTSettings, run_md
from equiforce.md.relax import (
    RelaxResult,
    format_relax_summary,
    relax_batched,
    relax_structure,
    relax_structures,
)
from equiforce.md.report import (
    MDResult,
    format_batched_summary,
    format_md_summary,
    plot_batched_md,
    plot_md,
)
from equiforce.md.stability import BondDeviation, BondMonitor, bond_length_deviation, energy_drift

__all__ = [
    "BondDeviation",
    "BondMonitor",
    "CommitteeCalculator",
    "EquiforceCalculator",
    "MDResult",
    "NPTSettings",
    "RelaxResult",
    "bond_length_deviation",
    "energy_drift",
    "format_batched_summary",
    "format_md_summary",
    "format_relax_summary",
    "plot_batched_md",
    "plot_md",
    "relax_batched",
    "relax_structure",
    "relax_structures",
    "run_batched_md",
    "run_md",
]
