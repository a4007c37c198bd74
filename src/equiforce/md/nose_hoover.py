"""ASE's Nosé–Hoover chain integrators as ``run_md`` uses them: ``FixAtoms`` honoured in NVT,
and targets that move (temperature ramps; MTK NPT: pressure ramps too).

ASE's ``NoseHooverChainNVT`` keeps its own copy of the momenta and integrates them with the
forces ASE hands to MD integrators (``get_forces(md=True)``, which leaves ``FixAtoms`` out:
the atoms' own momenta are zeroed only when written back). So the fixed atoms' momenta grow
in that copy and enter the chain's kinetic energy, and the chain drives 3N degrees of
freedom, the fixed atoms' included: with a fixed slab layer the free atoms are cooled, more
with every step. Here the forces are the constrained ones (the fixed atoms feel none and stay
at rest) and the chain drives the free atoms' degrees of freedom (``Atoms.
get_number_of_degrees_of_freedom``) to kT, which is the temperature ASE measures. Without
constraints this is ASE's integrator, step for step (tested).

ASE's integrators fix their target temperature when built; ``set_temperature`` here moves it
and, as LAMMPS's ``fix nvt``/``fix npt`` ramps do, the virtual masses with it (every mass of
the chains and of the cell momenta is kT times a constant), so the damping times stay those
asked for.
"""

from __future__ import annotations

from ase import Atoms, units
from ase.md.nose_hoover_chain import (
    MTKNPT,
    IsotropicMTKNPT,
    MaskedMTKNPT,
    NoseHooverChainNVT,
    NoseHooverChainThermostat,
)


def _retarget(parts, temperature_K: float) -> None:
    """Set the target of ASE's chain and barostat objects ``parts`` (their ``_kT``) to
    ``temperature_K`` K, their virtual masses (``_Q``; ``_W``, ``_R``) scaled with it."""
    kT = units.kB * temperature_K
    for part in parts:
        scale = kT / part._kT
        for mass in ("_Q", "_W", "_R"):
            if hasattr(part, mass):
                setattr(part, mass, getattr(part, mass) * scale)
        part._kT = kT


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
        """Set the chain's target temperature, K; its masses follow (module docstring)."""
        _retarget([self._thermostat], temperature_K)

    def _get_forces(self):
        """The forces with the constraints applied (the fixed atoms' zero), eV/Å."""
        self._update_atoms()
        return self.atoms.get_forces()


class _MovableTargetMTK:
    """``set_temperature`` and ``set_pressure`` for ASE's MTK NPT integrators (mixed in
    before them)."""

    def set_temperature(self, temperature_K: float) -> None:
        """Set the target temperature, K, of the atoms' and the cell's chains and the cell
        momenta; their masses follow (module docstring)."""
        _retarget([self._thermostat, self._barostat, self], temperature_K)
        self._temperature_K = temperature_K

    def set_pressure(self, pressure_au: float) -> None:
        """Set the target pressure, eV/Å^3."""
        self._pressure_au = pressure_au


class IsotropicMTKNPTRamp(_MovableTargetMTK, IsotropicMTKNPT):
    """ASE's ``IsotropicMTKNPT`` whose targets can move (``set_temperature``,
    ``set_pressure``)."""


class MTKNPTRamp(_MovableTargetMTK, MTKNPT):
    """ASE's ``MTKNPT`` (every cell component moves) whose targets can move
    (``set_temperature``, ``set_pressure``)."""


class MaskedMTKNPTRamp(_MovableTargetMTK, MaskedMTKNPT):
    """ASE's ``MaskedMTKNPT`` (the lengths of the cell axes of ``mask`` move) whose targets
    can move (``set_temperature``, ``set_pressure``)."""
