"""Stochastic cell rescaling NPT (Bernetti & Bussi, J. Chem. Phys. 153, 114107 (2020); its
anisotropic form: Del Tatto, Raiteri, Bernetti & Bussi, Appl. Sci. 12, 1139 (2022)):
``run_md``'s ``barostat="c-rescale"``, GROMACS's ``pcoupl = C-rescale``.

A first-order barostat like Berendsen's (the volume relaxes to the target pressure without
the oscillations of MTK's cell momenta, so it is safe far from equilibrium), with a noise term
that gives the cell the isothermal-isobaric ensemble's fluctuations (Berendsen's are too
small). In the log-volume eps = ln V, over a step dt:

    d eps = -(beta_T / tau_p) (P0 - P) dt + sqrt(2 kT beta_T dt / (V tau_p)) xi

with P the instantaneous pressure (virial and kinetic parts), beta_T the coupling
compressibility, tau_p the barostat time and xi a standard normal variate. The step integrates
it in lambda = sqrt(V), whose noise is additive (the papers' time-reversible scheme): lambda
moves by ``(D / kT) f dt + sqrt(2 D dt) xi`` with ``D = kT beta_T / (4 tau_p)`` and
``f = -2 lambda (P0 - P - kT / (2 V))``. Isotropic, positions and cell scale by
``s = (V' / V)^(1/3)``, momenta by 1/s. Anisotropic (every cell component fluctuates), lambda
moves in two half steps (a normal variate each) around a volume-preserving change of shape
``exp(beta_T / (3 tau_p) dev(P_int) dt + b sqrt(dt) dev(X))``, ``P_int`` the pressure tensor,
``dev`` the traceless part, X a matrix of nine normal variates and
``b = sqrt(2 kT beta_T / (3 tau_p V_half))`` (``V_half`` the volume after the first half step);
the cell's rotation is removed (the paper's lower-triangular box, taken in the cell's own
frame, so any orientation keeps its frame), then scaled by ``(V' / V)^(1/3)``. The target is
a hydrostatic pressure. With a mask of K free cell vectors (the others and every angle held:
a slab or a 2D material in its plane), each free vector h_a scales along its own direction,
driven by the pressure along it, ``P_a = (h P h^-1)_aa`` (``dE/d ln|h_a| = -V P_a``); free
vectors may be coupled into groups g of k_g vectors scaled by one factor (``couple``), each
group with the coordinate ``x_g = sum_{a in g} ln |h_a|``, driven by its mean pressure P_g
(every other free vector its own group). The x_g sample the ensemble of the flat measure over
each group's product of lengths (``prod_g d prod_{a in g} |h_a|``: the volume's ``dV`` for
one group): ``d x_g = beta_T k_g / (3 tau_p) (P_g - P0) dt + sqrt(2 kT beta_T k_g dt / (3
tau_p V)) xi_g`` (Ito; the measure's and the mobility's drifts cancel). Their sum, ln V up to
a constant, is the isotropic equation with ``K beta_T / 3`` and the mean of the P_a over the
free vectors, integrated in lambda as above in two half steps, around the parts of the x_g
independent of it, ``x_g - k_g / K sum_h x_h``: the drift ``beta_T k_g / (3 tau_p) (P_g -
mean(P)) dt`` and the noise ``b sqrt(dt) (sqrt(k_g) X_g - k_g / K sum_h sqrt(k_h) X_h)``, X
one normal variate per group. Every form moves the cell by a deformation R (row vectors:
positions ``x R``, cell vectors ``h R``, momenta ``p R^-T``; masked: ``R = h^-1 diag(s) h``,
``ln s_a = Delta x_g / k_g`` for a in g). The temperature is held by Bussi's stochastic
velocity rescaling (``equiforce.md.batched_bussi.bussi_factors``, ASE's ``Bussi``), so both the
particles and the cell sample the ensemble.

A step, one model call (energy, forces, stress):

1. the momenta scaled by Bussi's factor over dt (ASE's ``Bussi`` order: a normal, then a gamma
   variate from the run's generator);
2. a half kick by the forces;
3. the deformation R from the pressure of the current positions and momenta (one normal
   variate isotropic; anisotropic: one, nine, one; masked: one, one per group, one);
4. positions ``x R + (p R^-T + p R) / 2 dt / m`` (the drift across the deformation), the cell
   by R, momenta ``p R^-T``;
5. the model at the new positions and cell, and a half kick.

``cell_deformations`` computes step 3 for many systems at once (batched MD shares it:
``equiforce.md.batched_crescale``); ``StochasticCellRescalingNPT`` is the ASE integrator of
``run_md``. Units: eV, Å, amu, ASE time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.linalg
from ase import Atoms, units
from ase.md.md import MolecularDynamics

from equiforce.md.batched_bussi import BussiCoupling, bussi_factors


@dataclass(frozen=True)
class CRescaleCoupling:
    """The couplings of stochastic cell rescaling in ASE units.

    Attributes:
        dt: time step (ASE time).
        taut: Bussi thermostat's time constant (ASE time).
        taup: barostat time (ASE time): the volume relaxes over ~``taup`` where
            ``compressibility_au`` is the material's.
        compressibility_au: coupling compressibility beta_T, Å^3/eV (only scales how fast
            the cell relaxes; the fluctuations do not depend on it).
        anisotropic: every cell component fluctuates (module docstring) instead of a uniform
            scaling.
        mask: with ``anisotropic``, the cell vectors (a, b, c) whose lengths fluctuate, each
            along its own direction, the others and the angles held (module docstring; one
            at least True, as ``NPTSettings`` checks); None: Del Tatto et al.'s fully
            anisotropic form.
        couple: with ``mask``, free cell vectors scaled by one factor (``"ab"``: a 2D
            material's plane keeps its shape; LAMMPS's ``couple xy``), driven by their mean
            pressure; None: each free vector by its own.

    The target pressure is not a coupling: it may differ between systems and move (a ramp).
    """

    dt: float
    taut: float
    taup: float
    compressibility_au: float
    anisotropic: bool = False
    mask: tuple[bool, bool, bool] | None = None
    couple: str | None = None

    @property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        """The free cell vectors (indices 0, 1, 2 for a, b, c) in groups scaled together:
        ``couple``'s vectors one group, every other free vector its own."""
        together = tuple("abc".index(name) for name in self.couple or "")
        free = [axis for axis in range(3) if self.mask[axis] and axis not in together]
        return ((together,) if together else ()) + tuple((axis,) for axis in free)

    @property
    def thermostat(self) -> BussiCoupling:
        """The Bussi thermostat's couplings."""
        return BussiCoupling(dt=self.dt, taut=self.taut)


def cell_deformations(
    pressure: np.ndarray,
    target: np.ndarray,
    cells: np.ndarray,
    kT: np.ndarray,
    generators: Sequence[np.random.Generator],
    coupling: CRescaleCoupling,
) -> np.ndarray:
    """Each system's cell deformation R over one step (module docstring), drawing from each
    system's generator one normal variate (isotropic), eleven (anisotropic: the volume's
    first half step, the shape's nine, the volume's second half step) or G + 2 (a mask of
    free cell vectors in G groups: the volume's half step, the shape's G, the volume's half
    step).

    Args:
        pressure: (n, 3, 3) instantaneous pressure tensors (virial and kinetic parts: minus
            ASE's stress with its ideal-gas part), eV/Å^3.
        target: (n,) target (hydrostatic) pressures P0, eV/Å^3.
        cells: (n, 3, 3) cell vectors as rows, Å.
        kT: (n,) target temperatures, eV.
        generators: one NumPy generator per system.
        coupling: the couplings.

    Returns:
        (n, 3, 3) R: positions and cell vectors (rows) move to ``x R``, momenta to
        ``p R^-T``; ``s I`` isotropic.

    Raises:
        RuntimeError: a volume would turn negative (a barostat far too strong for the time
            step).
    """
    if coupling.mask is not None:
        return _masked_deformations(pressure, target, cells, kT, generators, coupling)
    dt, beta, taup = coupling.dt, coupling.compressibility_au, coupling.taup
    volume = np.abs(np.linalg.det(cells))
    root = np.sqrt(volume)  # lambda
    scalar = np.trace(pressure, axis1=1, axis2=2) / 3
    drift, diffusion = _volume_drift(scalar, target, volume, kT, beta, coupling)
    if not coupling.anisotropic:
        noise = np.array([generator.standard_normal() for generator in generators])
        steps = drift + np.sqrt(2 * diffusion * dt) * noise
        return (_volume_ratios(root, steps) ** (2 / 3))[:, None, None] * np.eye(3)
    draws = np.stack([generator.standard_normal(11) for generator in generators])
    half = drift / 2 + np.sqrt(diffusion * dt) * draws[:, 0]
    width = _shape_width(kT, root + half, coupling)
    shape = beta / (3 * taup) * dt * _deviatoric(pressure)
    shape = shape + (width * np.sqrt(dt))[:, None, None] * _deviatoric(draws[:, 1:10])
    steps = half + drift / 2 + np.sqrt(diffusion * dt) * draws[:, 10]
    scalings = (_volume_ratios(root, steps) ** (2 / 3))[:, None, None]
    return scalings * _without_rotation(scipy.linalg.expm(shape), cells)


def _volume_drift(
    scalar: np.ndarray,
    target: np.ndarray,
    volume: np.ndarray,
    kT: np.ndarray,
    compressibility: float,
    coupling: CRescaleCoupling,
) -> tuple[np.ndarray, np.ndarray]:
    """(n,) drift of lambda = sqrt(V) over a step, Å^(3/2), and its diffusion coefficient
    D = kT beta / (4 tau_p), Å^3 per ASE time, for the scalar pressure ``scalar`` (eV/Å^3)
    that drives the volume and the coupling compressibility ``compressibility`` (Å^3/eV)."""
    diffusion = kT * compressibility / (4 * coupling.taup)
    root = np.sqrt(volume)
    drift = -2 * diffusion / kT * root * (target - scalar - kT / (2 * volume)) * coupling.dt
    return drift, diffusion


def _shape_width(kT: np.ndarray, root: np.ndarray, coupling: CRescaleCoupling) -> np.ndarray:
    """(n,) ``b = sqrt(2 kT beta_T / (3 tau_p V))``, the shape noise's amplitude per sqrt of
    ASE time, at the volume ``V = root^2`` after the first half step (module docstring)."""
    return np.sqrt(2 * kT * coupling.compressibility_au / (3 * coupling.taup * root**2))


def _masked_deformations(
    pressure: np.ndarray,
    target: np.ndarray,
    cells: np.ndarray,
    kT: np.ndarray,
    generators: Sequence[np.random.Generator],
    coupling: CRescaleCoupling,
) -> np.ndarray:
    """``cell_deformations`` with ``coupling.mask``'s K free cell vectors in G groups
    (``coupling.groups``; module docstring): ``R = h^-1 diag(s) h``, each free vector
    scaled along its direction, the vectors of a group by one factor."""
    dt, beta, taup = coupling.dt, coupling.compressibility_au, coupling.taup
    groups = coupling.groups
    sizes = np.array([len(group) for group in groups], dtype=float)  # k_g
    free = sizes.sum()  # K
    inverses = np.linalg.inv(cells)
    # the pressure along each cell vector, (h P h^-1)_aa: dE/d(ln |h_a|) = -V (h P h^-1)_aa
    along = np.einsum("nab,nbc,nca->na", cells, pressure, inverses)
    grouped = np.stack([along[:, list(group)].mean(axis=1) for group in groups], axis=1)
    mean = grouped @ sizes / free  # the mean pressure along the free vectors
    volume = np.abs(np.linalg.det(cells))
    root = np.sqrt(volume)
    drift, diffusion = _volume_drift(mean, target, volume, kT, free * beta / 3, coupling)
    draws = np.stack([generator.standard_normal(len(groups) + 2) for generator in generators])
    half = drift / 2 + np.sqrt(diffusion * dt) * draws[:, 0]
    width = _shape_width(kT, root + half, coupling)
    noise = draws[:, 1:-1] * np.sqrt(sizes)
    noise = noise - np.outer(noise.sum(axis=1), sizes / free)  # independent of the volume's
    shape = beta / (3 * taup) * dt * sizes * (grouped - mean[:, None])
    shape = shape + (width * np.sqrt(dt))[:, None] * noise  # of x_g = sum of its log-lengths
    steps = half + drift / 2 + np.sqrt(diffusion * dt) * draws[:, -1]
    volume_logs = 2 / free * np.log(_volume_ratios(root, steps))
    logs = np.zeros((len(cells), 3))
    for index, group in enumerate(groups):
        logs[:, list(group)] = (volume_logs + shape[:, index] / sizes[index])[:, None]
    return inverses @ (np.exp(logs)[:, :, None] * cells)


def _volume_ratios(root: np.ndarray, step: np.ndarray) -> np.ndarray:
    """(n,) ``sqrt(V' / V)`` of lambda = sqrt(V) moving by ``step``.

    Raises:
        RuntimeError: a volume would turn negative.
    """
    ratio = 1 + step / root
    if not (ratio > 0).all():
        raise RuntimeError(
            f"stochastic cell rescaling: a volume would turn negative (sqrt(V'/V) = "
            f"{ratio.min():.3g}); lengthen the barostat time or shorten the time step"
        )
    return ratio


def _deviatoric(matrices: np.ndarray) -> np.ndarray:
    """The traceless parts of (n, 3, 3) matrices (or of (n, 9) rows read as 3 x 3)."""
    matrices = matrices.reshape(-1, 3, 3)
    trace = np.trace(matrices, axis1=1, axis2=2)
    return matrices - trace[:, None, None] / 3 * np.eye(3)


def _without_rotation(deformations: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """``deformations`` (n, 3, 3) with their rotations removed in the frames of ``cells``
    (rows): each deformation D with ``D D^T`` unchanged that keeps its cell's
    lower-triangular form in the cell's own frame (cell = L Q, L lower-triangular, Q
    orthogonal; then ``cell D = L' Q`` with L' lower-triangular), as Del Tatto et al.'s box
    kept lower-triangular."""
    transpose = (0, 2, 1)
    frames = np.linalg.qr(cells.transpose(transpose))[0]  # cell^T = Q r: cell = r^T Q^T
    # (Q's column signs do not matter: the Cholesky factor commutes with flipping them)
    in_frame = frames.transpose(transpose) @ deformations @ frames
    lower = np.linalg.cholesky(in_frame @ in_frame.transpose(transpose))
    return frames @ lower @ frames.transpose(transpose)


class StochasticCellRescalingNPT(MolecularDynamics):
    """Stochastic cell rescaling NPT with Bussi's thermostat (module docstring).

    Args:
        atoms: a 3D-periodic structure with momenta (not at rest). ASE's ``FixAtoms`` may hold
            atoms at rest: they move with the cell (their fractional coordinates kept, as
            LAMMPS's ``fix npt ... dilate all`` moves frozen atoms), feel no force, and leave
            the thermostat's degrees of freedom (``get_number_of_degrees_of_freedom``) and the
            kinetic pressure; their virial stays in the pressure. Other constraints are
            refused.
        timestep: time step (ASE time).
        temperature_K: target temperature, K.
        pressure_au: target (hydrostatic) pressure, eV/Å^3.
        taut: thermostat time constant (ASE time).
        taup: barostat time (ASE time).
        compressibility_au: coupling compressibility, Å^3/eV.
        rng: the NumPy generator of the noise (thermostat, then barostat, each step).
        anisotropic: every cell component fluctuates (else a uniform scaling).
        mask: with ``anisotropic``, the cell vectors (a, b, c) whose lengths fluctuate (the
            others and the angles held); None: every component.
        couple: with ``mask``, free cell vectors scaled by one factor (e.g. ``"ab"``).

    Raises:
        ValueError: constraints other than ``FixAtoms``, or a structure at rest (Bussi's
            thermostat scales momenta).
    """

    def __init__(
        self,
        atoms: Atoms,
        timestep: float,
        temperature_K: float,
        pressure_au: float,
        taut: float,
        taup: float,
        compressibility_au: float,
        rng: np.random.Generator,
        anisotropic: bool = False,
        mask: tuple[bool, bool, bool] | None = None,
        couple: str | None = None,
    ):
        kinds = [type(constraint).__name__ for constraint in atoms.constraints]
        if any(kind != "FixAtoms" for kind in kinds):
            raise ValueError(
                f"constraints {kinds}: stochastic cell rescaling applies FixAtoms only (its "
                "atoms at rest, moving with the cell); use NVT for the others"
            )
        if not atoms.get_kinetic_energy() > 0:
            raise ValueError(
                "the structure starts at rest: Bussi's thermostat of stochastic cell "
                "rescaling scales its momenta (start it at a temperature > 0)"
            )
        super().__init__(atoms, timestep)
        self.coupling = CRescaleCoupling(
            timestep, taut, taup, compressibility_au, anisotropic, mask, couple
        )
        self.rng = rng
        self.kT = units.kB * temperature_K
        self.pressure_au = pressure_au

    def set_temperature(self, temperature_K: float) -> None:
        """Set the target temperature (thermostat and barostat noise), K."""
        self.kT = units.kB * temperature_K

    def set_pressure(self, pressure_au: float) -> None:
        """Set the target pressure, eV/Å^3."""
        self.pressure_au = pressure_au

    def step(self) -> None:
        """One step (module docstring)."""
        atoms, dt, kT = self.atoms, self.dt, np.array([self.kT])
        degrees = np.array([atoms.get_number_of_degrees_of_freedom()])
        kinetic = np.array([atoms.get_kinetic_energy()])
        factor = bussi_factors(kinetic, kT, degrees, [self.rng], self.coupling.thermostat)[0]
        atoms.set_momenta(factor * atoms.get_momenta() + dt / 2 * atoms.get_forces())
        momenta = atoms.get_momenta()  # FixAtoms' rows zero
        pressure = -atoms.get_stress(voigt=False, include_ideal_gas=True)[None]
        cell, target = atoms.cell.array, np.array([self.pressure_au])
        deformation = cell_deformations(pressure, target, cell[None], kT, [self.rng], self.coupling)
        deformation = deformation[0]
        inverse_transpose = np.linalg.inv(deformation).T
        drift = (momenta @ inverse_transpose + momenta @ deformation) / 2 * dt / self.masses
        positions = atoms.positions @ deformation + drift  # FixAtoms' atoms: x R alone
        atoms.set_cell(cell @ deformation, scale_atoms=False)
        atoms.set_positions(positions, apply_constraint=False)
        atoms.set_momenta(momenta @ inverse_transpose)
        atoms.set_momenta(atoms.get_momenta() + dt / 2 * atoms.get_forces())
