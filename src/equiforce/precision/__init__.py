"""Precision policies (float64, float32, tf32, bf16-mixed, fp16-mixed) and how to apply them.

``PrecisionPolicy.from_name("bf16-mixed")`` gives a policy; ``apply_policy(model, policy)``
casts a model and installs it; ``precision_scope(policy)`` covers code that backpropagates
outside the model's forward; ``DynamicLossScaler`` is fp16 training's loss scaling. This
package sits beside ``models`` (it imports ``nn``/``o3`` only to recognise op classes);
``models``, ``train``, ``md`` and the CLI use it. See docs/precision.md.
"""

from equiforce.precision.apply import apply_policy, current_policy, op_class, precision_scope
from equiforce.precision.policy import (
    DEFAULT_AUTOCAST_OPS,
    MODES,
    OP_CLASSES,
    PrecisionPolicy,
    from_name,
)
from equiforce.precision.scaler import DynamicLossScaler

__all__ = [
    "DEFAULT_AUTOCAST_OPS",
    "MODES",
    "OP_CLASSES",
    "DynamicLossScaler",
    "PrecisionPolicy",
    "apply_policy",
    "current_policy",
    "from_name",
    "op_class",
    "precision_scope",
]
