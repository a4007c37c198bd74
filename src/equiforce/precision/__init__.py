"""Precision policies (float64, float32, tf32, bf16-mixed, fp16-mixed) and how to apply them.

``PrecisionPolicy.from_name("bf16-mixed")`` gives a policy; ``apply_policy(model, policy)``
casts a model and sets the compute dtype of every block that declares an op class;
``precision_scope(policy)`` sets the float32 matmul precision (tf32) around a run or call;
``DynamicLossScaler`` is fp16 training's loss scaling. This package imports only torch;
``models``, ``train``, ``md``, the workflows and the CLI use it. See docs/precision.md.
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
