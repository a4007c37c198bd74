"""ASE's Nosé–Hoover chain NVT with ``FixAtoms`` honoured: ``run_md``'s Nosé–Hoover thermostat.

ASE's ``NoseHooverChainNVT`` keeps its own copy of the momenta and integrates them with the
forces ASE hands to MD integrators (``get_forces(md=True)``, which leaves ``FixAtoms`` out:
the atoms' own momenta are zeroed only when written back). So the fixed atoms' momenta grow
in that copy and enter the chain's kinetic energy, and the chain drives 3N degrees of
freedom, the fixed atoms' included: with a fixed slab layer the free atoms are cooled, more
with every step. Here the forces are the constrained ones (the fixed atoms feel none and stay
at rest) and the chain drives the free atoms' degrees of freedom (``Atoms.
get_number_of_degrees_of_freedom``) to kT, which is the temperature ASE measures. Without
constraints this is ASE's integrator, step for step (tested).
"""

from __future__ import annotations

from ase import Atoms, units
from ase.md.nose_hoover_chain import NoseHooverChainNVT, NoseHooverChainThermostat


class FixedAtomsNoseHooverChainNVT(NoseHooverChainNVT):
    """``NoseHooverChainNVT`` (three links, one substep) with ``FixAtoms`` applied (module
    docstring).

    Args:
        atoms: the structure; ``FixAtoms`` its only constraint.
        timestep: time step (ASE time).
        temperature_K: target temperature, K.
        tdamp: damping time (ASE time).

    Raises:
        ValueError: a constraint other than ``FixAtoms``.
    """

    def __init__(self, atoms: Atoms, timestep: float, temperature_K: float, tdamp: float):
        kinds = [type(constraint).__name__ for constraint in atoms.constraints]
        if any(kind != "FixAtoms" for kind in kinds):
            raise ValueError(
                f"constraints {kinds}: the Nosé–Hoover thermostat applies FixAtoms only; "
                "run with the Langevin thermostat"
            )
        super().__init__(atoms, timestep, temperature_K=temperature_K, tdamp=tdamp)
        self._thermostat = NoseHooverChainThermostat(
            num_atoms_global=atoms.get_number_of_degrees_of_freedom() / 3,
            masses=self.masses,
            temperature_K=temperature_K,
            tdamp=tdamp,
        )

    def set_temperature(self, temperature_K: float) -> None:
        """Set the chain's target temperature, K; its masses follow (``kT tdamp^2``, the
        first times the degrees of freedom), as LAMMPS's ``fix nvt`` ramp."""
        chain = self._thermostat
        chain._kT = units.kB * temperature_K
        chain._Q[:] = chain._kT * chain._tdamp**2
        chain._Q[0] *= 3 * chain._num_atoms_global

    def _get_forces(self):
        """The forces with the constraints applied (the fixed atoms' zero), eV/Å."""
        self._update_atoms()
        return self.atoms.get_forces()
