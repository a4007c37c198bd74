"""Precision policies: which dtype the weights live in, how float32 matmuls run, what autocasts.

A policy has three independent parts (STYLE §7):

* ``model_dtype``: parameter dtype, ``"float64"`` or ``"float32"``;
* ``matmul``: float32 matmul precision, ``"highest"`` (true float32) or ``"tf32"`` (TF32 tensor
  cores on NVIDIA GPUs; PyTorch ignores it for CPU matmuls, so it equals ``float32`` there);
* ``autocast``: ``"none"``, ``"bf16"`` or ``"fp16"``, the compute dtype of the blocks whose op
  class is in ``autocast_ops``; each such block returns float32, so sums across blocks
  (messages, energies) accumulate in float32 and everything outside them stays in the model
  dtype.

The geometry (positions, cell, edge vectors), the per-species shift and the energy sum stay
float64 under every policy (``equiforce.models.potential``), and forces/stress are autograd
derivatives with respect to float64 positions.

Named modes (``MODES``): ``float64``, ``float32``, ``tf32``, ``bf16-mixed``, ``fp16-mixed``.
fp16 has a narrow exponent range, so training in ``fp16-mixed`` uses dynamic loss scaling
(``needs_loss_scaling``); bf16 shares float32's range and needs none.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import torch

__all__ = [
    "AUTOCAST_DTYPES",
    "DEFAULT_AUTOCAST_OPS",
    "MODES",
    "OP_CLASSES",
    "PrecisionPolicy",
    "from_name",
]

# Op classes a low-precision compute dtype can be applied to; a block declares its own as the
# class attribute ``op_class`` (see ``equiforce.precision.apply``):
#   linear: equivariant linear maps (kernel executors of a ``LinearDescriptor``);
#   mlp: scalar MLPs (MACE's radial MLP; Allegro's two-body, latent and readout MLPs);
#   tensor_product: edge tensor products, MACE's symmetric contraction and Allegro's tensor
#       product (kernel executors).
OP_CLASSES = ("linear", "mlp", "tensor_product")

# Linear layers and MLPs: the published MACE recipe (linears cast to bf16/fp16 with float32
# accumulation, tensor products kept in float32).
DEFAULT_AUTOCAST_OPS = ("linear", "mlp")

AUTOCAST_DTYPES: Mapping[str, torch.dtype] = MappingProxyType(
    {"bf16": torch.bfloat16, "fp16": torch.float16}
)
_MODEL_DTYPES: Mapping[str, torch.dtype] = MappingProxyType(
    {"float32": torch.float32, "float64": torch.float64}
)
_MATMUL = {"highest": "highest", "tf32": "high"}  # -> torch.set_float32_matmul_precision


@dataclass(frozen=True)
class PrecisionPolicy:
    """A complete precision setting (see the module docstring).

    Attributes:
        name: the mode name, for logs and reports.
        model_dtype: ``"float64"`` or ``"float32"``.
        matmul: ``"highest"`` or ``"tf32"`` (GPU only; no effect on CPU).
        autocast: ``"none"``, ``"bf16"`` or ``"fp16"``.
        autocast_ops: op classes (``OP_CLASSES``) run under the autocast; empty when
            ``autocast == "none"``.
    """

    name: str
    model_dtype: str = "float64"
    matmul: str = "highest"
    autocast: str = "none"
    autocast_ops: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "autocast_ops", tuple(self.autocast_ops))
        if self.model_dtype not in _MODEL_DTYPES:
            raise ValueError(f"model_dtype must be one of {list(_MODEL_DTYPES)}")
        if self.matmul not in _MATMUL:
            raise ValueError(f"matmul must be one of {list(_MATMUL)}, got {self.matmul!r}")
        if self.autocast not in ("none", *AUTOCAST_DTYPES):
            raise ValueError(f"autocast must be none, bf16 or fp16, got {self.autocast!r}")
        unknown = [op for op in self.autocast_ops if op not in OP_CLASSES]
        if unknown:
            raise ValueError(f"unknown autocast op classes {unknown}; known: {list(OP_CLASSES)}")
        if self.autocast == "none" and self.autocast_ops:
            raise ValueError("autocast_ops needs autocast bf16 or fp16")
        if self.autocast != "none" and not self.autocast_ops:
            raise ValueError(f"autocast {self.autocast} needs at least one op class")
        low_precision = self.autocast != "none" or self.matmul == "tf32"
        if low_precision and self.model_dtype != "float32":
            # autocast leaves float64 tensors alone, and TF32 only replaces float32 matmuls
            raise ValueError(f"{self.name}: tf32 and autocast need model_dtype float32")

    @property
    def torch_dtype(self) -> torch.dtype:
        """Parameter dtype."""
        return _MODEL_DTYPES[self.model_dtype]

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """bfloat16 / float16 inside the autocast regions, None without autocast."""
        return AUTOCAST_DTYPES.get(self.autocast)

    @property
    def float32_matmul_precision(self) -> str:
        """The value for ``torch.set_float32_matmul_precision``."""
        return _MATMUL[self.matmul]

    @property
    def needs_loss_scaling(self) -> bool:
        """Training needs dynamic loss scaling (fp16 gradients underflow/overflow)."""
        return self.autocast == "fp16"

    @classmethod
    def from_name(cls, name: str, autocast_ops: tuple[str, ...] | None = None) -> PrecisionPolicy:
        """The named mode (``MODES``), optionally with other autocast op classes.

        Raises:
            ValueError: unknown name, or op classes given for a mode without autocast.
        """
        if name not in MODES:
            raise ValueError(f"unknown precision mode {name!r}; known: {list(MODES)}")
        policy = MODES[name]
        if autocast_ops is None:
            return policy
        return dataclasses.replace(policy, autocast_ops=tuple(autocast_ops))


MODES: Mapping[str, PrecisionPolicy] = MappingProxyType(
    {
        "float64": PrecisionPolicy("float64", "float64"),
        "float32": PrecisionPolicy("float32", "float32"),
        "tf32": PrecisionPolicy("tf32", "float32", matmul="tf32"),
        "bf16-mixed": PrecisionPolicy(
            "bf16-mixed", "float32", "highest", "bf16", DEFAULT_AUTOCAST_OPS
        ),
        "fp16-mixed": PrecisionPolicy(
            "fp16-mixed", "float32", "highest", "fp16", DEFAULT_AUTOCAST_OPS
        ),
    }
)


def from_name(name: str, autocast_ops: tuple[str, ...] | None = None) -> PrecisionPolicy:
    """Shorthand for ``PrecisionPolicy.from_name``."""
    return PrecisionPolicy.from_name(name, autocast_ops)
