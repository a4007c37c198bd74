"""An equiforce model as the force field of i-PI (Litman et al., J. Chem. Phys. 161, 062504
(2024)): path-integral MD (nuclear quantum effects: zero-point motion and tunnelling of light
atoms), ring-polymer and centroid MD, replica exchange, generalised Langevin thermostats and
i-PI's other samplers, with the model evaluated here.

i-PI runs the simulation and sends each bead's positions and cell over a socket (its
protocol: atomic units, the cell as columns); ``run_ipi_driver`` answers with the energy,
forces and virial (``-V stress`` for a 3D-periodic structure, else zero) through ASE's
``SocketClient``, which speaks the protocol, until i-PI says it is done. The structure given
here is the template: its species and order (i-PI sends positions only), periodicity, and its
constraints are not used (i-PI's own apply). Several drivers may connect to one i-PI to share
its beads.
"""

from __future__ import annotations

import time
from typing import IO

from ase import Atoms

# seconds between two attempts to reach an i-PI that is still starting
RETRY_S = 0.5


def run_ipi_driver(
    template: Atoms,
    calculator,
    unix: str | None = None,
    host: str = "localhost",
    port: int = 31415,
    wait_s: float = 60.0,
    log: IO[str] | None = None,
) -> int:
    """Serve i-PI's force requests until it ends the run (module docstring).

    Args:
        template: the structure i-PI simulates: its species in i-PI's atom order, its pbc.
        calculator: the ASE calculator (an ``EquiforceCalculator``).
        unix: the name of i-PI's UNIX socket (its ``<address>`` with ``mode='unix'``; the
            file ``/tmp/ipi_<name>``), or None: the internet socket ``host:port``.
        host: i-PI's host (``mode='inet'``).
        port: i-PI's port.
        wait_s: how long to keep trying to reach an i-PI that is still starting, s.
        log: a text stream for the protocol's messages, or None.

    Returns:
        The number of structures evaluated (beads times steps).

    Raises:
        ConnectionError: no i-PI at the address within ``wait_s`` (the address named).
    """
    from ase.calculators.socketio import SocketClient

    where = f"UNIX socket /tmp/ipi_{unix}" if unix is not None else f"{host}:{port}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client = SocketClient(host=host, port=port, unixsocket=unix, log=log)
            break
        except (FileNotFoundError, ConnectionRefusedError) as error:
            if time.monotonic() > deadline:
                raise ConnectionError(f"no i-PI at {where} after {wait_s:g} s") from error
            time.sleep(RETRY_S)
    atoms = template.copy()
    atoms.constraints = []
    atoms.calc = calculator
    evaluations = 0
    try:
        for _ in client.irun(atoms, use_stress=bool(atoms.pbc.all())):
            evaluations += 1
    finally:
        client.close()
    return evaluations
