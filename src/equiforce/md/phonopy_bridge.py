"""Force constants handed to phonopy (Togo, J. Phys.: Condens. Matter 35, 353001 (2023)), the
field's tool for what follows phonons: band structures on its own paths, projected densities
of states, group velocities, mode Grüneisen parameters, phono3py's conductivities.

``to_phonopy`` builds a ``phonopy.Phonopy`` of a ``PhononModel``'s crystal and supercell and
sets its compact force constants from the model's exact Hessian rows (no displacements:
phonopy's own finite differences with the same potential agree to their step's error, tested);
``phonopy_yaml`` is the ``phonopy_params.yaml`` text (structures, supercell, force
constants) that ``phonopy-load`` and ``phonopy.load`` read.

Phonopy orders its supercell unlike ASE's ``repeat`` (the copies of each cell atom together),
and its primitive cell may be a reduction of the crystal's cell (``primitive_matrix="auto"``):
each of its primitive atoms p is the copy in lattice cell m_p of crystal atom kappa_p, so by
translation symmetry its row to supercell atom s (the copy in cell m_s of kappa_s) is the
model's ``Phi(0 kappa_p, j)``, j the copy of kappa_s in cell (m_s - m_p) mod the supercell.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from equiforce.md.phonons import SYMMETRY_TOLERANCE, PhononModel

if TYPE_CHECKING:
    from phonopy import Phonopy

# phonopy's supercell atoms repeat the crystal's fractional coordinates within this
MATCH_TOLERANCE = 1e-6


def to_phonopy(model: PhononModel, primitive_matrix: str | np.ndarray = "auto") -> Phonopy:
    """A ``phonopy.Phonopy`` of ``model``'s crystal (its masses) and supercell, with the
    model's force constants.

    Args:
        model: ``equiforce.md.phonons.force_constants``' result.
        primitive_matrix: phonopy's primitive cell relative to the crystal's ("auto": found
            by symmetry, the default; "P": the crystal's own cell; or a (3, 3) matrix).

    Raises:
        ImportError: phonopy is not installed (``pip install phonopy``).
    """
    require_phonopy()
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms
    from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning

    crystal = model.primitive
    unitcell = PhonopyAtoms(
        symbols=crystal.get_chemical_symbols(),
        cell=crystal.cell.array,
        scaled_positions=crystal.get_scaled_positions(),
        masses=crystal.get_masses(),
    )
    with warnings.catch_warnings():  # "auto" is asked for, not phonopy's changed default
        warnings.simplefilter("ignore", PrimitiveMatrixAutoDefaultWarning)
        phonon = Phonopy(
            unitcell,
            supercell_matrix=np.diag(model.supercell),
            primitive_matrix=primitive_matrix,
            symprec=SYMMETRY_TOLERANCE,
        )
    phonon.force_constants = compact_force_constants(
        model, phonon.supercell.scaled_positions, phonon.primitive.p2s_map
    )
    return phonon


def require_phonopy() -> None:
    """Raise a clear ``ImportError`` (what to install) when phonopy is missing."""
    try:
        import phonopy  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "the phonopy export needs phonopy: pip install phonopy (or equiforce[sim])"
        ) from error


def compact_force_constants(
    model: PhononModel, supercell_fractions: np.ndarray, primitive_atoms: np.ndarray
) -> np.ndarray:
    """Phonopy's compact force constants from the model's rows (module docstring).

    Args:
        model: the force constants.
        supercell_fractions: (N, 3) phonopy's supercell atoms, fractional coordinates of the
            supercell (``model.supercell`` repetitions of the crystal's cell), in its order.
        primitive_atoms: (n_p,) the supercell indices of phonopy's primitive atoms
            (``p2s_map``).

    Returns:
        (n_p, N, 3, 3) eV/Å^2, row p the force constants of primitive atom p with every
        supercell atom.

    Raises:
        ValueError: a supercell atom that is no copy of a crystal atom.
    """
    repeats = np.asarray(model.supercell)
    n = len(model.primitive)
    in_cells = np.asarray(supercell_fractions) * repeats  # crystal-cell fractional coordinates
    own = model.primitive.get_scaled_positions(wrap=False)
    differences = in_cells[:, None, :] - own[None, :, :]  # (N, n, 3)
    mismatch = np.abs(differences - np.rint(differences)).max(axis=2)
    kappa = mismatch.argmin(axis=1)
    worst = mismatch[np.arange(len(kappa)), kappa].max()
    if worst > MATCH_TOLERANCE:
        raise ValueError(
            f"phonopy's supercell does not repeat the crystal (an atom {worst:.1e} off)"
        )
    cell = np.rint(in_cells - own[kappa]).astype(int)  # (N, 3) lattice cell of each atom
    primitive_atoms = np.asarray(primitive_atoms)
    relative = np.mod(cell[None, :, :] - cell[primitive_atoms][:, None, :], repeats)
    index = ((relative[..., 0] * repeats[1] + relative[..., 1]) * repeats[2] + relative[..., 2]) * n
    return model.rows[kappa[primitive_atoms][:, None], index + kappa[None, :]]


def phonopy_yaml(phonon: Phonopy) -> str:
    """The ``phonopy_params.yaml`` text of ``phonon``, its force constants included."""
    return str(phonon.to_phonopy_yaml(settings={"force_constants": True}))
