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
from equiforce.workflows.bench.kinds import (
    TRAINING_KINDS,
    Call,
    check_kind,
    plain_backward,
    training_call,
)

__all__ = [
    "CALLS",
    "PEERS",
    "Peer",
    "mace_call",
    "mace_model",
    "nequip_call",
    "peer_for_family",
    "peer_python",
]


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


def _default_pythons(peer: Peer) -> list[Path]:
    """``<venv>/bin/python`` under the working directory, then under equiforce's checkout."""
    from equiforce.measure.machine import source_root

    return [Path(peer.venv) / "bin" / "python", source_root() / peer.venv / "bin" / "python"]


def peer_python(peer: Peer, explicit: str | None) -> str:
    """The python executable of ``peer``'s environment.

    Order: ``explicit`` (the command-line option ``peer.option``), the environment variable
    ``peer.env_var``, then ``<venv>/bin/python`` under the working directory or under the
    checkout equiforce is imported from (where ``make install-mace`` / ``install-nequip``
    put it).

    Raises:
        FileNotFoundError: the option or variable names no executable file, or no default
            venv exists; the message names the option and the variable and says how to
            create the venv.
    """
    hint = (
        f"pass {peer.option} PYTHON or set {peer.env_var} to a python with {peer.name} and "
        f"equiforce installed, or create {peer.venv} with `make {peer.make_target}` in an "
        "equiforce checkout"
    )
    if explicit is not None or os.environ.get(peer.env_var):
        source = peer.option if explicit is not None else f"${peer.env_var}"
        python = Path(explicit if explicit is not None else os.environ[peer.env_var])
        if not python.is_file() or not os.access(python, os.X_OK):
            problem = "is not an executable file" if python.exists() else "does not exist"
            raise FileNotFoundError(
                f"{source} {python}: {problem} (the {peer.name} python for --peers); {hint}"
            )
        return str(python)
    for python in _default_pythons(peer):
        if python.is_file() and os.access(python, os.X_OK):
            return str(python)
    tried = ", ".join(str(p) for p in _default_pythons(peer))
    raise FileNotFoundError(f"--peers: no {peer.name} python found (tried {tried}); {hint}")


def _peer_call(model: torch.nn.Module, forward: Call, kind: str, same_backward: bool) -> Call:
    """``forward`` as a call of ``kind``: as is (eval mode), or ``kinds.training_call`` with the
    peer's trainers' ``loss.backward()`` (``same_backward``: ours, into the parameters only)."""
    check_kind(kind)
    if kind == "inference":
        model.eval()
        return forward
    return training_call(model, forward, kind, None if same_backward else plain_backward)


def mace_model(potential: Potential, device: torch.device, cueq: bool = False) -> torch.nn.Module:
    """mace-torch's model of ``potential``'s weights on ``device`` (``to_mace_torch``); with
    ``cueq``, mace-torch's own cuEquivariance model of them (``mace.cli.convert_e3nn_cueq``,
    as mace-torch users enable it: fused convolution on CUDA).

    Raises:
        ImportError: ``cueq`` without cuequivariance-torch installed (mace-torch would
            silently build its plain e3nn model instead).
    """
    from equiforce.interop import to_mace_torch

    model = to_mace_torch(potential).to(device)
    if not cueq:
        return model
    from mace.cli.convert_e3nn_cueq import run
    from mace.modules.wrapper_ops import CUET_AVAILABLE

    if not CUET_AVAILABLE:
        raise ImportError("mace-torch with cuEquivariance needs cuequivariance-torch installed")
    from equiforce.interop.default_dtype import default_dtype

    with default_dtype():  # ``run`` sets the model's dtype as the default
        return run(model, device=device.type, return_model=True)


def mace_call(
    potential: Potential,
    batch: dict[str, torch.Tensor],
    kind: str,
    same_backward: bool = False,
    model: torch.nn.Module | None = None,
) -> Call:
    """One mace-torch call of ``kind`` on our batch, with ``potential``'s weights
    (``same_backward``: see ``_peer_call``); ``model``: a ``mace_model`` of them (None:
    built here, plain e3nn)."""
    if model is None:
        model = mace_model(potential, batch[keys.POSITIONS].device)
    from equiforce.interop.mace_torch import mace_inputs

    inputs = mace_inputs(batch, len(potential.type_names), potential.dtype)

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        # training=True: forces with create_graph, as mace-torch trains
        out = model(dict(inputs), training=kind in TRAINING_KINDS, compute_force=True)
        return out["energy"], out["forces"]

    return _peer_call(model, call, kind, same_backward)


def nequip_call(
    potential: Potential, batch: dict[str, torch.Tensor], kind: str, same_backward: bool = False
) -> Call:
    """One nequip-allegro call of ``kind`` on our batch, with ``potential``'s weights
    (``same_backward``: see ``_peer_call``).

    In train mode nequip's force output keeps the graph (``create_graph=self.training``).
    """
    from nequip.data import AtomicDataDict

    from equiforce.interop import to_nequip_allegro
    from equiforce.interop.nequip_allegro import nequip_inputs

    model = to_nequip_allegro(potential).to(batch[keys.POSITIONS].device)
    inputs = nequip_inputs(batch)

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        out = model(dict(inputs))
        return (
            out[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1),
            out[AtomicDataDict.FORCE_KEY],
        )

    return _peer_call(model, call, kind, same_backward)


CALLS: dict[str, Callable[[Potential, dict[str, torch.Tensor], str], Call]] = {
    "mace-torch": mace_call,
    "nequip-allegro": nequip_call,
}
