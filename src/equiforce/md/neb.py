"""Minimum energy paths and barriers by the nudged elastic band (NEB), every image of the band
evaluated in one model call.

``run_neb`` runs ASE's NEB (``ase.mep.NEB``: Henkelman and Jónsson's improved tangent by
default, the climbing image (Henkelman, Uberuaga & Jónsson, J. Chem. Phys. 113, 9901 (2000))
on request, springs, the optimizers, constraints such as ``FixAtoms``) on a band between
two end points (interpolated linearly or by IDPP, Smidstrup et al., J. Chem. Phys. 140,
214106 (2014)), or on a band given whole. ASE asks each interior image for its forces in
turn; here each image's calculator is a ``BandImageCalculator`` of one shared ``BandBatch``,
which at the first request of a step evaluates the whole band as one batch
(``EquiforceCalculator.energies_and_forces``) and hands each image its part: one model call
per step instead of one per image, the same numbers to round-off. The end points are
evaluated once.

The result's barrier is the highest image's energy above the initial (forward) and final
(backward) end; with the climbing image converged that image is the saddle point (a first-
order one: tested with the exact Hessian).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator

from equiforce.md.relax import OPTIMIZERS, Optimizer, frozen_copy

Method = Literal["improvedtangent", "aseneb", "eb", "spline", "string"]
METHODS = ("improvedtangent", "aseneb", "eb", "spline", "string")  # ASE's NEB methods
INTERPOLATIONS = ("idpp", "linear")


class BandBatch:
    """The interior images of a band, evaluated together (module docstring).

    Attributes:
        model_calls: batched evaluations so far (one per optimizer step).

    Args:
        calculator: an ``EquiforceCalculator``.
        images: the band's interior images (the ``Atoms`` the NEB moves), in order.
    """

    def __init__(self, calculator, images: Sequence[Atoms]):
        self.calculator = calculator
        self.images = list(images)
        self.model_calls = 0
        self._key: np.ndarray | None = None
        self._energies = np.empty(0)
        self._forces: list[np.ndarray] = []

    def results(self, index: int) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces (n_atoms, 3) eV/Å of image ``index``, from the batch of the
        band's current positions (evaluated anew when any image has moved)."""
        key = np.concatenate([image.positions.ravel() for image in self.images])
        if self._key is None or not np.array_equal(key, self._key):
            self._energies, self._forces = self.calculator.energies_and_forces(self.images)
            self._key = key
            self.model_calls += 1
        return float(self._energies[index]), self._forces[index]


class BandImageCalculator(Calculator):
    """ASE calculator of one interior image of a ``BandBatch``: energy and forces."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, band: BandBatch, index: int):
        super().__init__()
        self.band = band
        self.index = index

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Take this image's part of the band's batch (``BandBatch.results``)."""
        super().calculate(atoms, properties, system_changes)
        energy, forces = self.band.results(self.index)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces.copy()}


@dataclass(frozen=True)
class NEBResult:
    """A relaxed band.

    Attributes:
        images: the band, end points included, each with a ``SinglePointCalculator``
            holding its energy (eV) and forces (eV/Å; the constrained ones, as ASE's).
        energies: (n_images,) eV, along the band.
        distances: (n_images,) Å, the reaction coordinate: the summed distances between
            consecutive images (minimum image in periodic cells).
        converged: whether the largest NEB force fell below ``fmax``.
        n_steps: optimizer steps taken.
        fmax: the largest NEB force norm at the end, eV/Å.
        climb: whether the highest image climbed.
        model_calls: batched band evaluations (end points not counted); None when the
            calculator evaluated image by image.
    """

    images: list[Atoms]
    energies: np.ndarray
    distances: np.ndarray
    converged: bool
    n_steps: int
    fmax: float
    climb: bool
    model_calls: int | None

    @property
    def saddle(self) -> int:
        """Index of the highest image (the saddle point when the climbing image converged)."""
        return int(np.argmax(self.energies))

    @property
    def forward_barrier(self) -> float:
        """Highest image's energy above the initial image, eV."""
        return float(self.energies.max() - self.energies[0])

    @property
    def backward_barrier(self) -> float:
        """Highest image's energy above the final image, eV."""
        return float(self.energies.max() - self.energies[-1])


def interpolated_band(
    initial: Atoms, final: Atoms, n_images: int, interpolation: str = "idpp"
) -> list[Atoms]:
    """``n_images`` interior images between copies of ``initial`` and ``final`` (constraints
    of ``initial`` kept), placed by ``interpolation`` (``INTERPOLATIONS``; minimum image
    along periodic directions).

    Raises:
        ValueError: fewer than 1 image, an unknown interpolation, or end points that differ
            in atom count, species order, periodicity or cell (named).
    """
    from ase.mep import NEB

    if n_images < 1:
        raise ValueError(f"a band needs at least 1 interior image, got {n_images}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    check_ends(initial, final)
    band = [initial.copy() for _ in range(n_images + 1)] + [final.copy()]
    NEB(band, method="improvedtangent").interpolate(
        method=interpolation, mic=bool(initial.pbc.any()), apply_constraint=False
    )
    return band


def check_ends(initial: Atoms, final: Atoms) -> None:
    """Raise a ``ValueError`` naming what differs between the end points of a band."""
    if len(initial) != len(final):
        raise ValueError(f"the end points have {len(initial)} and {len(final)} atoms")
    if (initial.numbers != final.numbers).any():
        first = int(np.flatnonzero(initial.numbers != final.numbers)[0])
        raise ValueError(
            f"the end points list their atoms in different orders (atom {first}: "
            f"{initial.get_chemical_symbols()[first]} and {final.get_chemical_symbols()[first]})"
        )
    if (initial.pbc != final.pbc).any():
        raise ValueError(f"the end points have pbc {initial.pbc} and {final.pbc}")
    if initial.pbc.any() and not np.allclose(initial.cell, final.cell, atol=1e-8):
        raise ValueError("the end points have different cells (a NEB keeps the cell fixed)")


def run_neb(
    band: Sequence[Atoms],
    calculator: Calculator,
    fmax: float = 0.05,
    steps: int = 500,
    climb: bool = True,
    method: Method = "improvedtangent",
    spring: float = 0.1,
    optimizer: Optimizer = "fire",
) -> NEBResult:
    """Relax a band (its end points fixed) to the minimum energy path.

    Args:
        band: at least 3 images, end points included (``interpolated_band``, or a band of
            one's own); not modified.
        calculator: an ``EquiforceCalculator``: the interior images are evaluated in one
            model call per step (``BandBatch``); any other ASE calculator: one call per
            image, as ASE's NEB does by itself. The end points are evaluated once.
        fmax: convergence threshold of the NEB forces, eV/Å.
        steps: most optimizer steps.
        climb: the highest image climbs to the saddle point (its spring force off, its
            force along the band reversed).
        method: ASE's NEB method (``METHODS``).
        spring: spring constant between images, eV/Å^2.
        optimizer: ``"fire"``, ``"bfgs"`` or ``"lbfgs"`` on the whole band.

    Raises:
        ValueError: fewer than 3 images, mismatched images (``check_ends``), a bad option.
    """
    from ase.mep import NEB
    from ase.optimize import BFGS, FIRE, LBFGS

    if len(band) < 3:
        raise ValueError(f"a band needs its end points and at least 1 image, got {len(band)}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not fmax > 0 or steps < 0 or not spring > 0 or optimizer not in OPTIMIZERS:
        raise ValueError(
            f"fmax {fmax}, steps {steps}, spring {spring}, optimizer {optimizer!r}: need a "
            f"positive fmax and spring, steps >= 0 and one of {OPTIMIZERS}"
        )
    for image in band[1:]:
        check_ends(band[0], image)
    images = [atoms.copy() for atoms in band]
    for end in (images[0], images[-1]):  # fixed: evaluated once
        end.calc = calculator
        end.calc = SinglePointCalculator(
            end, energy=end.get_potential_energy(), forces=end.get_forces(apply_constraint=False)
        )
    interior = images[1:-1]
    shared = None
    if hasattr(calculator, "energies_and_forces"):
        shared = BandBatch(calculator, interior)
    for index, image in enumerate(interior):
        image.calc = calculator if shared is None else BandImageCalculator(shared, index)
    neb = NEB(images, k=spring, climb=climb, method=method, allow_shared_calculator=True)
    optimizers = {"fire": FIRE, "bfgs": BFGS, "lbfgs": LBFGS}
    dynamics = optimizers[optimizer](neb, logfile=None)
    converged = bool(dynamics.run(fmax=fmax, steps=steps))
    final_fmax = float(np.linalg.norm(neb.get_forces().reshape(-1, 3), axis=1).max(initial=0.0))
    frozen = [
        frozen_copy(image, image.get_potential_energy(), image.get_forces(), None)
        for image in images
    ]  # constraints kept
    return NEBResult(
        images=frozen,
        energies=np.array([image.get_potential_energy() for image in frozen]),
        distances=_reaction_coordinate(images),
        converged=converged,
        n_steps=int(dynamics.nsteps),
        fmax=final_fmax,
        climb=climb,
        model_calls=None if shared is None else shared.model_calls,
    )


def _reaction_coordinate(images: Sequence[Atoms]) -> np.ndarray:
    """Summed distances (Å) between consecutive images, minimum image along periodic axes."""
    from ase.geometry import find_mic

    steps = [0.0]
    for before, after in zip(images[:-1], images[1:], strict=True):
        difference = after.positions - before.positions
        if before.pbc.any():
            difference, _ = find_mic(difference, before.cell, before.pbc)
        steps.append(float(np.linalg.norm(difference)))
    return np.cumsum(steps)


def committee_barriers(images: Sequence[Atoms], committee) -> dict[str, np.ndarray]:
    """Each committee member's energies along a band (the committee's mean path, its members
    evaluated in one call each: ``CommitteeCalculator.member_energies_and_forces``) and its
    barriers: the uncertainty of a barrier as the members' disagreement.

    Returns:
        ``energies`` (n_members, n_images) eV, ``forward`` and ``backward`` (n_members,) eV:
        each member's highest image above the initial and the final one.
    """
    energies, _ = committee.member_energies_and_forces(images)
    highest = energies.max(axis=1)
    return {
        "energies": energies,
        "forward": highest - energies[:, 0],
        "backward": highest - energies[:, -1],
    }
