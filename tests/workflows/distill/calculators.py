"""ASE calculators for the distillation tests (importable as
``tests.workflows.distill.calculators``)."""

from __future__ import annotations

import time

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT


class SlowEMT(EMT):
    """EMT that sleeps ``delay`` seconds per calculation (gives a test time to kill a process)."""

    def __init__(self, delay: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.delay = delay

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """EMT after a pause."""
        time.sleep(self.delay)
        super().calculate(atoms, properties, system_changes)


class BrokenCalculator(Calculator):
    """A calculator whose every calculation fails."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Always raises."""
        raise RuntimeError("the SCF did not converge")


class NaNCalculator(Calculator):
    """A calculator returning NaN energies."""

    implemented_properties = ["energy", "forces", "stress"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """NaN energy, zero forces."""
        super().calculate(atoms, properties, system_changes)
        self.results = {
            "energy": float("nan"),
            "forces": self.atoms.positions * 0.0,
            "stress": np.zeros(6),
        }
