"""Blocks, one subpackage per family (``mace``, ``allegro``) and shared ones here.

``scale_shift`` (per-atom energy head, both families) and ``edge_chunks`` (a message-passing
layer in checkpointed chunks of receivers) sit at this level.
"""

from equiforce.nn.scale_shift import ScaleShiftEnergy

__all__ = ["ScaleShiftEnergy"]
