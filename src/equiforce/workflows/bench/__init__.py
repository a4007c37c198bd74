"""``equiforce bench``: inference speed and memory of a model, optionally against its peers.

``run_bench(BenchConfig(preset="mace-128-l1", peers=True))`` times energy+forces calls on
generated systems (``systems``), each implementation in a fresh worker process
(``worker``, ``peer_worker``, ``protocol``), and returns a JSON-ready report that
``report`` writes as JSON, a table and a plot. Sits beside ``md``: imports ``models``,
``data`` and ``interop``; nothing imports it.
"""

from equiforce.models.presets import PRESETS, preset_potential
from equiforce.workflows.bench.run import BenchConfig, run_bench
from equiforce.workflows.bench.systems import DEFAULT_SYSTEMS, make_system

__all__ = [
    "DEFAULT_SYSTEMS",
    "PRESETS",
    "BenchConfig",
    "make_system",
    "preset_potential",
    "run_bench",
]
