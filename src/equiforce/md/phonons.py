"""Phonons of a crystal from the exact Hessian of a supercell: force constants, dispersion
along a band path, density of states.

``force_constants`` builds the supercell ``primitive.repeat(supercell)`` and takes the rows of
its Hessian that belong to the atoms of the first primitive cell, by double backward
(``EquiforceCalculator.get_hessian(rows_of=...)``: one backward pass per row, 3 n in all; no
finite displacements, so no displacement step to choose and no numerical noise):
Phi(0 kappa, j) (eV/Å^2) for every supercell atom j; atoms the crystal's symmetry maps onto
each other share one representative's rows, rotated (``symmetric_rows``). Each j stands for
the image of it nearest to kappa (minimum image over the supercell's translations); images at
the same distance (within ``IMAGE_TOLERANCE``) share its force constant equally, as phonopy
does, so the interpolation between the commensurate wave vectors respects the crystal's
symmetry. The dynamical matrix at wave vector q (fractional coordinates of the primitive
cell's reciprocal lattice, ASE's band path convention) is

    D(q)_{kappa a, kappa' b} = sum_j w_j Phi_{a b}(0 kappa, j) exp(2 pi i q . R_j)
                               / sqrt(m_kappa m_kappa')

with R_j the lattice vector (integers, primitive cell) of j's image and kappa' its atom in the
primitive cell. At the supercell's commensurate wave vectors the frequencies are exact (the
supercell's own vibrations: tested); between them, interpolated. Frequencies are
``sqrt(eigenvalue) / 2 pi`` in THz, an imaginary one (a negative eigenvalue: the structure is
not a minimum) given as a negative number. Translation invariance makes the acoustic
frequencies at Gamma vanish: ``PhononModel.sum_rule_residual`` is what the model leaves
(round-off for an equiforce potential).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units

# images of a supercell atom whose distances to the centre differ by less than this (Å) share
# its force constant
IMAGE_TOLERANCE = 1e-5
# crystals symmetric within this (Å) share the Hessian rows of equivalent atoms
SYMMETRY_TOLERANCE = 1e-5
# sqrt(eV / (Å^2 amu)) / 2 pi in THz: the frequency of a unit eigenvalue
THZ_PER_ROOT_EIGENVALUE = np.sqrt(units._e / (1e-20 * units._amu)) / (2 * np.pi) / 1e12


@dataclass(frozen=True)
class PhononModel:
    """Force constants of a crystal, ready for ``frequencies``.

    Attributes:
        primitive: the crystal's cell (any cell: primitive or conventional).
        supercell: repetitions (n1, n2, n3) of the supercell the Hessian was taken of.
        atom: (n_terms,) the primitive cell's atom kappa of each term.
        partner: (n_terms,) the primitive cell's atom kappa' of the term's supercell atom.
        lattice: (n_terms, 3) int, R_j of the term's image, primitive cell vectors.
        constants: (n_terms, 3, 3) eV/Å^2, w_j Phi(0 kappa, j) (image weight included).
        rows: (n, N, 3, 3) eV/Å^2, Phi(0 kappa, j) for every atom j of the supercell
            ``primitive.repeat(supercell)`` (index ``((m0 n2 + m1) n3 + m2) n + kappa'``),
            before the images' weights: what phonopy's compact force constants hold
            (``equiforce.md.phonopy_bridge``).
        max_force: the largest force norm on the supercell, eV/Å (not a minimum where it is
            large: the frequencies then describe a strained expansion).
        sum_rule_residual: largest |sum_j Phi(0 kappa, j)| over the blocks, eV/Å^2 (zero for
            a translation-invariant model).
    """

    primitive: Atoms
    supercell: tuple[int, int, int]
    atom: np.ndarray
    partner: np.ndarray
    lattice: np.ndarray
    constants: np.ndarray
    rows: np.ndarray
    max_force: float
    sum_rule_residual: float

    def dynamical_matrices(self, qpoints: np.ndarray) -> np.ndarray:
        """D(q) (module docstring) for each wave vector.

        Args:
            qpoints: (n_q, 3) fractional coordinates of the reciprocal lattice of
                ``primitive``.

        Returns:
            (n_q, 3 n, 3 n) complex Hermitian, eV/(Å^2 amu), row ``3 kappa + a``.
        """
        n = len(self.primitive)
        masses = self.primitive.get_masses()
        phases = np.exp(2j * np.pi * np.asarray(qpoints, dtype=np.float64) @ self.lattice.T)
        blocks = np.zeros((len(phases), n, n, 3, 3), dtype=complex)
        pairs = self.atom * n + self.partner  # terms of each (kappa, kappa') block
        flat = blocks.reshape(len(phases), n * n, 3, 3)
        for block in np.unique(pairs):
            terms = pairs == block
            flat[:, block] = np.einsum("qt,tab->qab", phases[:, terms], self.constants[terms])
        scale = 1 / np.sqrt(np.outer(masses, masses))
        blocks = blocks * scale[None, :, :, None, None]
        matrices = blocks.transpose(0, 1, 3, 2, 4).reshape(len(phases), 3 * n, 3 * n)
        return (matrices + matrices.conj().transpose(0, 2, 1)) / 2  # Hermitian to round-off

    def frequencies(self, qpoints: np.ndarray) -> np.ndarray:
        """Phonon frequencies, THz, ascending at each wave vector; an imaginary one (the
        structure unstable along that mode) as its negative.

        Args:
            qpoints: (n_q, 3) fractional reciprocal coordinates (``dynamical_matrices``).

        Returns:
            (n_q, 3 n) float64.
        """
        eigenvalues = np.linalg.eigvalsh(self.dynamical_matrices(qpoints))
        return np.sign(eigenvalues) * np.sqrt(np.abs(eigenvalues)) * THZ_PER_ROOT_EIGENVALUE


def force_constants(
    primitive: Atoms,
    calculator,
    supercell: tuple[int, int, int],
    symmetry_tolerance: float | None = SYMMETRY_TOLERANCE,
) -> PhononModel:
    """The force constants of ``primitive`` from the Hessian of its supercell (module
    docstring).

    Args:
        primitive: a 3D-periodic crystal (its atoms where they are: relax it first).
        calculator: an ``EquiforceCalculator`` (a model file, not an exported package).
        supercell: repetitions along the three cell vectors, each >= 1; the supercell should
            be wider than twice the model's interaction range for converged dispersions.
        symmetry_tolerance: atoms a symmetry operation of the crystal maps onto each other
            (spglib within this tolerance, Å) share the Hessian rows of one of them, rotated
            (``symmetric_rows``): one representative's 3 backward passes serve its whole
            orbit. None: every atom's own rows. The default is tight, so only a crystal
            symmetric to round-off (relaxed with its symmetry kept) is reduced.

    Raises:
        ValueError: not periodic in 3D, a repetition below 1, or a calculator without the
            exact Hessian (a committee).
    """
    if not primitive.pbc.all() or primitive.cell.rank < 3:
        raise ValueError(
            f"{primitive.get_chemical_formula()}: phonons need a crystal periodic in 3D"
        )
    from equiforce.md.vibrations import require_hessian

    require_hessian(calculator)
    repeats = tuple(int(r) for r in supercell)
    if len(repeats) != 3 or min(repeats) < 1:
        raise ValueError(f"supercell must be three repetitions >= 1, got {supercell}")
    large = primitive.repeat(repeats)  # atom index ((m0 n2 + m1) n3 + m2) n + kappa
    large.calc = calculator
    n, n_large = len(primitive), len(large)
    orbits = _orbits(primitive, symmetry_tolerance)
    computed = sorted({representative for representative, _, _ in orbits.values()})
    hessian_rows = calculator.get_hessian(large, rows_of=computed)  # 3 per representative
    max_force = float(np.linalg.norm(large.get_forces(), axis=1).max())
    blocks = hessian_rows.reshape(len(computed), 3, n_large, 3).transpose(0, 2, 1, 3)
    own = dict(zip(computed, blocks, strict=True))
    rows = np.stack(
        [symmetric_rows(own, orbits[kappa], primitive, repeats) for kappa in range(n)]
    )  # (n, N, 3, 3)
    residual = float(np.abs(rows.sum(axis=1)).max())
    cells = np.array(list(itertools.product(*(range(r) for r in repeats))))  # m of each block
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=3))) * np.array(repeats)
    atom, partner, lattice, constants = [], [], [], []
    positions, vectors = primitive.positions, primitive.cell.array
    for kappa in range(n):
        for j in range(n_large):
            cell_index, kappa_j = divmod(j, n)
            candidates = cells[cell_index] + shifts  # lattice vectors of j's images
            separations = candidates @ vectors + positions[kappa_j] - positions[kappa]
            lengths = np.linalg.norm(separations, axis=1)
            nearest = np.flatnonzero(lengths < lengths.min() + IMAGE_TOLERANCE)
            for image in nearest:
                atom.append(kappa)
                partner.append(kappa_j)
                lattice.append(candidates[image])
                constants.append(rows[kappa, j] / len(nearest))
    return PhononModel(
        primitive=primitive.copy(),
        supercell=repeats,
        atom=np.array(atom),
        partner=np.array(partner),
        lattice=np.array(lattice),
        constants=np.array(constants),
        rows=rows,
        max_force=max_force,
        sum_rule_residual=residual,
    )


def _orbits(
    primitive: Atoms, tolerance: float | None
) -> dict[int, tuple[int, np.ndarray, np.ndarray]]:
    """For each atom kappa of ``primitive``: ``(representative, rotation, translation)``,
    a symmetry operation (fractional rotation (3, 3) int, translation (3,)) taking its
    orbit's representative onto it; the identity for the representatives (and for every
    atom without ``tolerance``)."""
    identity = (np.eye(3, dtype=int), np.zeros(3))
    if tolerance is None:
        return {kappa: (kappa, *identity) for kappa in range(len(primitive))}
    from ase.constraints import FixSymmetry

    fix = FixSymmetry(primitive.copy(), symprec=tolerance, adjust_positions=False)
    orbits: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
    for kappa in range(len(primitive)):
        for representative in range(kappa):  # the orbit's first atom, if not kappa itself
            ops = zip(fix.rotations, fix.translations, fix.symm_map, strict=True)
            found = [(r, t) for r, t, image in ops if image[representative] == kappa]
            if found:
                orbits[kappa] = (representative, *found[0])
                break
        else:
            orbits[kappa] = (kappa, *identity)
    return orbits


def symmetric_rows(
    own: dict[int, np.ndarray],
    orbit: tuple[int, np.ndarray, np.ndarray],
    primitive: Atoms,
    repeats: tuple[int, int, int],
) -> np.ndarray:
    """The force-constant rows (N, 3, 3) of an atom from its representative's: the operation
    g (x -> r x + t, fractional) takes the representative onto the atom, and supercell atom j
    onto g(j), so ``Phi(atom, g(j)) = C Phi(representative, j) C^T`` with ``C = L^T r L^-T``
    the operation's Cartesian rotation (L the cell vectors as rows).

    Args:
        own: the computed rows of the representatives, by atom.
        orbit: ``_orbits``' entry of the atom.
        primitive: the crystal.
        repeats: the supercell's repetitions (supercell atom index
            ``((m0 n2 + m1) n3 + m2) n + kappa``).
    """
    representative, rotation, translation = orbit
    rows = own[representative]
    if np.array_equal(rotation, np.eye(3)) and not translation.any():
        return rows  # the representative itself
    n = len(primitive)
    fractions = primitive.get_scaled_positions(wrap=False)
    cells = np.array(list(itertools.product(*(range(r) for r in repeats))))
    sites = (fractions[None, :, :] + cells[:, None, :]).reshape(-1, 3)  # supercell atoms
    moved = sites @ rotation.T + translation
    # each moved atom's image kappa': the primitive atom whose fractional coordinates it
    # repeats; its lattice vector, relative to where the operation took the representative
    differences = moved[:, None, :] - fractions[None, :, :]
    kappa_of = np.argmin(np.abs(differences - np.rint(differences)).sum(axis=2), axis=1)
    lattice = np.rint(moved - fractions[kappa_of]).astype(int)
    origin = np.rint(moved[representative] - fractions[kappa_of[representative]]).astype(int)
    lattice = np.mod(lattice - origin, repeats)
    index = (((lattice[:, 0] * repeats[1]) + lattice[:, 1]) * repeats[2] + lattice[:, 2]) * n
    target = index + kappa_of
    vectors = primitive.cell.array
    cartesian = vectors.T @ rotation @ np.linalg.inv(vectors.T)
    turned = np.empty_like(rows)
    turned[target] = cartesian @ rows @ cartesian.T
    return turned


def density_of_states(
    model: PhononModel, mesh: tuple[int, int, int], width: float, n_points: int = 400
) -> tuple[np.ndarray, np.ndarray]:
    """The phonon density of states on a Monkhorst-Pack mesh, Gaussian-broadened.

    Args:
        model: the force constants.
        mesh: wave vectors along each reciprocal axis (Gamma-centred when odd).
        width: the Gaussians' standard deviation, THz.
        n_points: frequencies sampled, from the lowest to the highest mode +- 4 widths.

    Returns:
        ``(frequencies (n_points,) THz, density (n_points,) states/THz per cell)``: the
        density integrates to 3 n (n atoms of ``model.primitive``).
    """
    from ase.dft.kpoints import monkhorst_pack

    modes = model.frequencies(monkhorst_pack(mesh)).ravel()
    grid = np.linspace(modes.min() - 4 * width, modes.max() + 4 * width, n_points)
    density = np.zeros(n_points)
    for start in range(0, len(modes), 10_000):  # bounded memory: n_points x 10^4 at a time
        part = modes[start : start + 10_000]
        density += np.exp(-0.5 * ((grid[:, None] - part[None, :]) / width) ** 2).sum(axis=1)
    return grid, density / (width * np.sqrt(2 * np.pi)) / np.prod(mesh)


# modes below this (THz) are left out of the thermal properties: Gamma's acoustic modes (and
# the imaginary ones, which have no harmonic free energy; counted apart)
THERMAL_CUTOFF_THZ = 1e-3


@dataclass(frozen=True)
class ThermalProperties:
    """Harmonic thermodynamics of the crystal's phonons, per cell of ``PhononModel.primitive``.

    Attributes:
        temperature: (n_T,) K.
        free_energy: (n_T,) Helmholtz free energy of the vibrations, eV (zero point included).
        energy: (n_T,) vibrational energy, eV (zero point included).
        entropy: (n_T,) eV/K.
        heat_capacity: (n_T,) at constant volume, eV/K.
        zero_point_energy: eV.
        skipped_modes: mesh modes left out: below ``THERMAL_CUTOFF_THZ`` (Gamma's acoustic
            ones) or imaginary.
        imaginary_modes: of those, the imaginary ones (below -``THERMAL_CUTOFF_THZ``).
    """

    temperature: np.ndarray
    free_energy: np.ndarray
    energy: np.ndarray
    entropy: np.ndarray
    heat_capacity: np.ndarray
    zero_point_energy: float
    skipped_modes: int
    imaginary_modes: int


def thermal_properties(
    model: PhononModel, mesh: tuple[int, int, int], temperatures_K: np.ndarray
) -> ThermalProperties:
    """Harmonic free energy, energy, entropy and heat capacity from the modes of a
    Monkhorst-Pack mesh (each mode of energy e = h nu: ``F = e / 2 + kT ln(1 - exp(-e / kT))``,
    ``E = e / 2 + e / (exp(e / kT) - 1)``, ``S = (E - F) / T``, ``C = k x^2 e^x / (e^x - 1)^2``
    with x = e / kT), averaged over the mesh's wave vectors.

    Args:
        model: the force constants.
        mesh: wave vectors along each reciprocal axis (the quasi-harmonic figures converge
            with it; even meshes leave Gamma out).
        temperatures_K: (n_T,) temperatures, K (0 gives the zero-point values).
    """
    from ase.dft.kpoints import monkhorst_pack

    modes = model.frequencies(monkhorst_pack(mesh)).ravel()
    kept = modes > THERMAL_CUTOFF_THZ
    quanta = modes[kept] * 1e12 * units._hplanck / units._e  # eV
    n_q = int(np.prod(mesh))
    temperatures = np.asarray(temperatures_K, dtype=np.float64)
    zero_point = float(quanta.sum() / 2 / n_q)
    free = np.full(len(temperatures), zero_point)
    energy = np.full(len(temperatures), zero_point)
    capacity = np.zeros(len(temperatures))
    for index, temperature in enumerate(temperatures):
        if temperature <= 0:
            continue
        kT = units.kB * temperature
        x = quanta / kT
        boltzmann, empty = np.exp(-x), -np.expm1(-x)  # e^-x and 1 - e^-x, without overflow
        free[index] += kT * np.log(empty).sum() / n_q
        energy[index] += (quanta * boltzmann / empty).sum() / n_q
        capacity[index] = units.kB * (x**2 * boltzmann / empty**2).sum() / n_q
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = np.where(temperatures > 0, (energy - free) / temperatures, 0.0)
    return ThermalProperties(
        temperature=temperatures,
        free_energy=free,
        energy=energy,
        entropy=entropy,
        heat_capacity=capacity,
        zero_point_energy=zero_point,
        skipped_modes=int((~kept).sum()),
        imaginary_modes=int((modes < -THERMAL_CUTOFF_THZ).sum()),
    )
