"""A worker for the protocol tests: each call touches ``--call-mb`` MB, then frees it.

Run as a script: ``python fake_worker.py --outputs OUT.npz [--call-mb N] [--fail]``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from equiforce.measure.protocol import Session, serve


def _session(call_mb: int, fail: bool) -> Session:
    if fail:
        raise RuntimeError("model file is broken")

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        block = np.ones(call_mb * 2**20 // 8)  # written, so resident
        total = float(block.sum())
        return torch.tensor([total]), torch.full((2, 3), 0.5)

    return Session(call=call, device=torch.device("cpu"), info={"n_atoms": 2})


def main() -> int:
    """Serve the fake session."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--outputs", required=True)
    parser.add_argument("--call-mb", type=int, default=0)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args()
    print("library chatter on stdout is ignored")
    return serve(lambda: _session(args.call_mb, args.fail), args.outputs)


if __name__ == "__main__":
    sys.exit(main())
