"""A worker for the protocol tests: each call touches ``--call-mb`` MB, then frees it, and
keeps the CPU busy for ``--busy-ms`` ms of process CPU time.

Run as a script: ``python fake_worker.py --outputs OUT.npz [--call-mb N] [--busy-ms N] [--fail]``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from equiforce.measure.protocol import Session, serve


def busy(cpu_ms: float) -> None:
    """Spin until this process has used ``cpu_ms`` ms of CPU time."""
    end = time.process_time() + cpu_ms / 1000.0
    while time.process_time() < end:
        pass


def _session(call_mb: int, fail: bool, busy_ms: float = 0.0) -> Session:
    if fail:
        raise RuntimeError("model file is broken")

    def call() -> tuple[torch.Tensor, torch.Tensor]:
        block = np.ones(call_mb * 2**20 // 8)  # written, so resident
        total = float(block.sum())
        busy(busy_ms)
        return torch.tensor([total]), torch.full((2, 3), 0.5)

    return Session(call=call, device=torch.device("cpu"), info={"n_atoms": 2})


def main() -> int:
    """Serve the fake session."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--outputs", required=True)
    parser.add_argument("--call-mb", type=int, default=0)
    parser.add_argument("--busy-ms", type=float, default=0.0)
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args()
    print("library chatter on stdout is ignored")
    return serve(lambda: _session(args.call_mb, args.fail, args.busy_ms), args.outputs)


if __name__ == "__main__":
    sys.exit(main())
