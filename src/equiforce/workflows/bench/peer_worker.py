"""Worker process timing a peer on an equiforce model's weights.

Run in the peer's own environment (which has equiforce installed):
``python -m equiforce.workflows.bench.peer_worker --peer mace-torch --model M --frames F
--outputs O``.
It loads the equiforce model, exports it to the peer (``equiforce.interop.to_*``), builds
the peer's inputs from our batch (same neighbour list) and serves the protocol of
``equiforce.measure.protocol`` with calls of one kind (``kinds``), plus the ``profile``
command.
"""

from __future__ import annotations

import argparse
import importlib.metadata

import torch

from equiforce.measure.protocol import Session, serve
from equiforce.process_exit import exit_process
from equiforce.workflows.bench.peers import CALLS, PEERS
from equiforce.workflows.bench.profile import profile_call
from equiforce.workflows.bench.worker import add_common_arguments, prepare_batch

_DISTRIBUTION = {"mace-torch": "mace-torch", "nequip-allegro": "nequip-allegro"}


def _prepare(args: argparse.Namespace) -> Session:
    from equiforce.models import load_model

    if args.peer == "mace-torch":
        import mace  # noqa: F401  (mace first: it patches torch.load for e3nn 0.4.4)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # the reference kernels suffice to hand the weights over, and need no compiled extension
    potential = load_model(args.model, map_location="cpu", backend="reference").eval()
    if potential.family != PEERS[args.peer].family:
        raise ValueError(
            f"{args.peer} runs {PEERS[args.peer].family} models, not {potential.family}"
        )
    batch, info = prepare_batch(args.frames, potential.type_names, potential.r_max, device)
    call = CALLS[args.peer](potential, batch, args.kind, args.same_backward)
    info.update(
        {
            "implementation": args.peer,
            "version": importlib.metadata.version(_DISTRIBUTION[args.peer]),
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads(),
            "dtype": str(potential.dtype).replace("torch.", ""),
            "kind": args.kind,
            "backward": "parameters" if args.same_backward else "loss.backward()",
        }
    )
    profile = {"profile": lambda: {"profile": profile_call(call)}}
    return Session(call=call, device=device, info=info, commands=profile)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the peer worker process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--peer", required=True, choices=sorted(CALLS))
    parser.add_argument(
        "--same-backward",
        action="store_true",
        help="training kinds: backward into the parameters only, as equiforce's trainer, "
        "instead of the peer's trainers' loss.backward()",
    )
    args = parser.parse_args(argv)
    return serve(lambda: _prepare(args), args.outputs)


if __name__ == "__main__":
    exit_process(main())
