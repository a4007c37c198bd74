"""Parity of ``from_mace_torch`` conversions with mace-torch itself (energies and forces)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

mace_modules = pytest.importorskip("mace.modules")

from e3nn import o3  # noqa: E402  (mace must be imported before e3nn)

from equiforce.data import keys  # noqa: E402
from equiforce.data.batch import collate  # noqa: E402
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph  # noqa: E402
from equiforce.interop import from_mace_torch  # noqa: E402
from equiforce.testing.structures import make_molecule  # noqa: E402
from equiforce.testing.tolerances import TOL  # noqa: E402

TYPE_NAMES = ("H", "C", "O")
R_MAX = 4.0


def _periodic_cell(seed: int = 3) -> Atoms:
    """A small rattled triclinic H/C/O cell, periodic in all directions."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    cell = np.array([[3.6, 0.0, 0.0], [0.5, 3.4, 0.0], [-0.3, 0.4, 3.8]])
    positions = (grid + 0.25) / 2.0 @ cell + rng.normal(scale=0.15, size=(8, 3))
    numbers = rng.choice([1, 6, 8], size=8)
    return Atoms(numbers=numbers, positions=positions, cell=cell, pbc=True)


def _structures() -> list[Atoms]:
    molecules = [make_molecule(name, seed=k) for k, name in enumerate(["CH3CH2OH", "H2O"])]
    return molecules + [_periodic_cell()]


def _mace_model(max_L: int, first_residual: bool, dtype: torch.dtype):  # noqa: N803
    """A random small ScaleShiftMACE, built under mace's default-dtype convention."""
    first = (
        "RealAgnosticResidualInteractionBlock" if first_residual else "RealAgnosticInteractionBlock"
    )
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(7 + max_L)
            model = mace_modules.ScaleShiftMACE(
                r_max=R_MAX,
                num_bessel=6,
                num_polynomial_cutoff=5,
                max_ell=3,
                interaction_cls=mace_modules.interaction_classes[
                    "RealAgnosticResidualInteractionBlock"
                ],
                interaction_cls_first=mace_modules.interaction_classes[first],
                num_interactions=2,
                num_elements=len(TYPE_NAMES),
                hidden_irreps=o3.Irreps("16x0e + 16x1o" + (" + 16x2e" if max_L == 2 else "")),
                MLP_irreps=o3.Irreps("16x0e"),
                atomic_energies=np.array([-13.6, -1029.8, -2041.9]),
                avg_num_neighbors=6.5,
                atomic_numbers=[1, 6, 8],
                correlation=3,
                gate=torch.nn.functional.silu,
                radial_MLP=[32, 32, 32],
                atomic_inter_scale=1.7,
                atomic_inter_shift=-0.3,
            )
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.add_(0.3 * torch.randn_like(parameter))
    finally:
        torch.set_default_dtype(previous)
    return model


def _batch(atoms_list: list[Atoms]) -> dict[str, torch.Tensor]:
    graphs = [
        configuration_to_graph(atoms_to_configuration(a), TYPE_NAMES, R_MAX) for a in atoms_list
    ]
    return collate(graphs)


def _mace_inputs(batch: dict[str, torch.Tensor], dtype: torch.dtype) -> dict:
    """mace-torch's input dict for the same graphs (edges reversed: sender = neighbour)."""
    centre = batch[keys.EDGE_INDEX][0]
    cell = batch[keys.CELL][batch[keys.BATCH][centre]]
    shifts = -torch.einsum("ei,eij->ej", batch[keys.EDGE_SHIFT], cell)
    return {
        "positions": batch[keys.POSITIONS].to(dtype).clone(),
        "node_attrs": torch.nn.functional.one_hot(batch[keys.ATOM_TYPE], 3).to(dtype),
        "edge_index": batch[keys.EDGE_INDEX].flip(0),
        "shifts": shifts.to(dtype),
        "unit_shifts": -batch[keys.EDGE_SHIFT].to(dtype),
        "cell": batch[keys.CELL].reshape(-1, 3).to(dtype),
        "batch": batch[keys.BATCH],
        "ptr": batch[keys.PTR],
    }


def _compare(model, dtype: torch.dtype, tolerance) -> None:
    potential = from_mace_torch(model)
    batch = _batch(_structures())
    reference = model(_mace_inputs(batch, dtype), compute_force=True)
    ours = potential(batch, compute_forces=True)
    torch.testing.assert_close(
        ours[keys.ENERGY], reference["energy"].to(torch.float64), **tolerance.__dict__
    )
    torch.testing.assert_close(
        ours[keys.FORCES], reference["forces"].to(torch.float64), **tolerance.__dict__
    )


@pytest.mark.parametrize("max_L", [1, 2])
def test_float64_conversion_matches_energies_and_forces(max_L):  # noqa: N803
    _compare(_mace_model(max_L, False, torch.float64), torch.float64, TOL.peer_parity)


def test_residual_first_interaction_matches():
    _compare(_mace_model(1, True, torch.float64), torch.float64, TOL.peer_parity)


def test_float32_conversion_matches():
    _compare(_mace_model(1, False, torch.float32), torch.float32, TOL.fp32)
