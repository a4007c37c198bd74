"""``equiforce compress``: the fastest model that keeps the user's accuracy, in one command.

A search over the three speed levers the package has, composed rather than re-implemented:
free speed (kernel backends, ``torch.compile``, export, threads; ``speed``/``timing`` through
the bench's worker and ``equiforce.measure``), precision modes (``precision``: the precision
audit's checks) and distilled students (``students``: the distillation workflow's labels and
the ordinary trainer), each timed on the user's target system. ``compress(config)`` runs it
(resumable, ``state``), ``plan(config)`` is the dry run; see ``docs/compress.md``.
"""

from equiforce.workflows.compress.config import TARGETS, CompressConfig, default_ladder
from equiforce.workflows.compress.run import CompressRefused, CompressResult, compress, plan

__all__ = [
    "TARGETS",
    "CompressConfig",
    "CompressRefused",
    "CompressResult",
    "compress",
    "default_ladder",
    "plan",
]
