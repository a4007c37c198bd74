"""Run an ``equiforce`` command on several CPU ranks the way users launch it, for tests."""

from __future__ import annotations

import os
import subprocess
import sys


def torchrun_equiforce(
    *args: str, ranks: int = 2, timeout_s: float = 600.0
) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node RANKS -m equiforce ARGS``, one thread per rank.

    Returns:
        The finished process (text stdout and stderr captured).

    Raises:
        AssertionError: the command failed (its stderr in the message).
    """
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc_per_node", str(ranks), "-m", "equiforce", *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stderr
    return done
