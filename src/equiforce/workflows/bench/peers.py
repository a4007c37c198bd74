"""The peer implementations the bench compares with, and how each is fed our batch.

A peer runs the very weights of the benchmarked equiforce model, exported by
``equiforce.interop`` (``to_mace_torch`` / ``to_nequip_allegro``), in its own virtual
environment. Its inputs are built from our batch (same neighbour list, same edges), so
only the model call differs; a call is of one of the kinds of ``kinds`` (inference or a
training step with the same loss as ours). mace-torch and nequip are imported lazily, inside
the peer's worker process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from equiforce.data import keys
from equiforce.models import Potential
from equiforce.workflows.bench.kinds import Call, check_kind, step_loss

__all__ = ["PEERS", "Peer", "peer_for_family", "peer_python"]


@dataclass(frozen=True)
class Peer:
    """A peer framework.

    Attributes:
        name: its package name as shown in reports.
        family: the equiforce model family it runs.
        venv: default virtual environment (relative to the working directory).
        env_var: environment variable naming its python (a default only).
        option: the command-line option naming its python.
        make_target: the ``make`` target that creates its venv in a checkout.
    """

    name: str
    family: str
    venv: str
    env_var: str
    option: str
    make_target: str


PEERS = {
    "mace-torch": Peer(
        "mace-torch", "mace", ".venv-mace", "EQUIFORCE_MACE_PYTHON", "--mace-python", "install-mace"
    ),
    "nequip-allegro": Peer(
        "nequip-allegro",
        "allegro",
        ".venv-nequip",
        "EQUIFORCE_NEQUIP_PYTHON",
        "--nequip-python",
        "install-nequip",
    ),
}


def peer_for_family(family: str) -> Peer:
    """The peer running models of ``family``; ``ValueError`` if there is none."""
    for peer in PEERS.values():
        if peer.family == family:
            return peer
    raise ValueError(f"no peer framework runs {family!r} models (peers: {sorted(PEERS)})")


def peer_python(peer: Peer, explicit: str | None) -> str:
    """The python executable of ``peer``'s environment.

    Order: ``explicit`` (the command-line option), the environment variable, then
    ``<venv>/bin/python`` under the working directory.

    Raises:
        FileNotFoundError: the chosen executable does not exist (the message says how to
            create the venv or point elsewhere).
    """
    source = "option"
    python = explicit
    if python is None and os.environ.get(peer.env_var):
        python, source = os.environ[peer.env_var], f"${peer.env_var}"
    if python is None:
        python, source = str(Path(peer.venv) / "bin" / "python"), "default"
    if not Path(python).exists():
        raise FileNotFoundError(
            f"--peers: {peer.name} python {python} ({source}) does not exist; create the venv "
            f"with `make {peer.make_target}` in an equiforce checkout, or pass {peer.option} "
            f"PYTHON / set {peer.env_var} to a python with {peer.name} and equiforce installed"
        )
    return python


def _peer_step(
    model: torch.nn.Module, forward: Callable[[], tuple[torch.Tensor, torch.Tensor]], kind: str
) -> Call:
    """``forward`` as a call of ``kind``: as is, or a training step with ``step_loss``."""
    check_kind(kind)
    if kind == "inference":
        model.eval()
        return forward
    model.train()

    def train_step() -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        energy, forces = forward()
        step_loss(energy.double(), forces.double()).backward()
        return energy.detach(), forces.detach()

    return train_step


def mace_call(potential: Potential, batch: dict[str, torch.Tensor], kind: str) -> Call:
    """One mace-torch call of ``kind`` on our batch, with ``potential``'s weights."""
    from equiforce.interop import to_mace_torch

    model = to_mace_torch(potential).to(batch[keys.POSITIONS].device)
    dtype = potential.dtype
    centre = batch[keys.EDGE_INDEX][0]
    cell = batch[keys.CELL][batch[keys.BATCH][centre]]
    # mace's edges run sender (our neighbour) -> receiver (our centre)
    inputs = {
        "positions": batch[keys.POSITIONS].to(dtype),
        "node_attrs": torch.nn.functional.one_hot(
            batch[keys.ATOM_TYPE], len(potential.type_names)
        ).to(dtype),
        "edge_index": batch[keys.EDGE_INDEX].flip(0),
        "shifts": -torch.einsum("ei,eij->ej", batch[keys.EDGE_SHIFT], cell).to(dtype),
        "unit_shifts": -batch[keys.EDGE_SHIFT].to(dtype),
        "cell": batch[keys.CELL].reshape(-1, 3).to(dtype),
        "batch": batch[keys.BATCH],
        "ptr": batch[keys.PTR],
    }

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        # training=True: forces with create_graph, as mace-torch trains
        out = model(dict(inputs), training=kind == "train", compute_force=True)
        return out["energy"], out["forces"]

    return _peer_step(model, call, kind)


def nequip_call(potential: Potential, batch: dict[str, torch.Tensor], kind: str) -> Call:
    """One nequip-allegro call of ``kind`` on our batch, with ``potential``'s weights.

    In train mode nequip's force output keeps the graph (``create_graph=self.training``).
    """
    from nequip.data import AtomicDataDict

    from equiforce.interop import to_nequip_allegro

    model = to_nequip_allegro(potential).to(batch[keys.POSITIONS].device)
    n_graphs = batch[keys.PTR].shape[0] - 1
    inputs = {
        AtomicDataDict.POSITIONS_KEY: batch[keys.POSITIONS],
        AtomicDataDict.EDGE_INDEX_KEY: batch[keys.EDGE_INDEX],
        AtomicDataDict.EDGE_CELL_SHIFT_KEY: batch[keys.EDGE_SHIFT],
        AtomicDataDict.CELL_KEY: batch[keys.CELL],
        AtomicDataDict.PBC_KEY: batch[keys.PBC].reshape(n_graphs, 3),
        AtomicDataDict.ATOM_TYPE_KEY: batch[keys.ATOM_TYPE],
        AtomicDataDict.BATCH_KEY: batch[keys.BATCH],
        AtomicDataDict.NUM_NODES_KEY: batch[keys.PTR].diff(),
    }

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        out = model(dict(inputs))
        return (
            out[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1),
            out[AtomicDataDict.FORCE_KEY],
        )

    return _peer_step(model, call, kind)


CALLS: dict[str, Callable[[Potential, dict[str, torch.Tensor], str], Call]] = {
    "mace-torch": mace_call,
    "nequip-allegro": nequip_call,
}
