"""Scalar MLPs with e3nn-style normalisation (the radial network of MACE)."""

from __future__ import annotations

import math
from typing import ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from equiforce.nn.scaled_mlp import scaled_mlp_forward


def normalized_silu_scale() -> float:
    """``1 / sqrt(E[silu(z)^2])`` for ``z ~ N(0, 1)``, so ``scale * silu`` keeps unit variance.

    Computed by 200-point Gauss–Hermite quadrature (exact to ~1e-15); e3nn estimates the same
    constant by Monte Carlo, ``equiforce.interop`` absorbs the small difference.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    silu = nodes / (1.0 + np.exp(-nodes))
    second_moment = np.sum(weights * silu**2) / math.sqrt(2.0 * math.pi)
    return float(1.0 / math.sqrt(second_moment))


class ScaledSiLU(nn.Module):
    """``silu(x) * normalized_silu_scale()``: SiLU normalised to unit second moment."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = normalized_silu_scale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise; any shape and dtype."""
        return nn.functional.silu(x) * self.scale


class RadialMLP(nn.Module):
    """Fully connected net ``sizes[0] -> ... -> sizes[-1]`` with normalised SiLU, no biases.

    Each layer is ``h @ W / sqrt(fan_in)`` (W ~ N(0, 1)), followed by ``ScaledSiLU`` except
    after the last layer: e3nn's ``FullyConnectedNet`` in the same parameter layout.

    Parameters: ``weights.{i}`` (sizes[i], sizes[i + 1]) float64.

    Precision: op class ``mlp``. ``math_dtype`` (None: the parameter dtype; set by
    ``equiforce.precision.apply_policy``) is the dtype of the matmuls and activations: the
    input and each normalised weight are cast to it, and the output is cast back to the input
    dtype (what ``torch.autocast`` does to this net).

    Args:
        sizes: layer widths, input first, at least two entries.
        generator: random source for the initial weights.
    """

    op_class: ClassVar[str] = "mlp"

    def __init__(self, sizes: Sequence[int], generator: torch.Generator):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least input and output sizes, got {sizes}")
        self.sizes = tuple(sizes)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(h_in, h_out, generator=generator, dtype=torch.float64))
            for h_in, h_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.activation = ScaledSiLU()
        self.math_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor, row_scale: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the net.

        Args:
            x: (n, sizes[0]).
            row_scale: (n, 1) factors of the output's rows (MACE's envelope when it follows
                the net), applied inside it (``scaled_mlp_forward``); None: none.

        Returns:
            (n, sizes[-1]), dtype of ``x``.
        """
        scaled = [weight / math.sqrt(weight.shape[0]) for weight in self.weights]
        return scaled_mlp_forward(x, scaled, self.activation, self.math_dtype, row_scale)
