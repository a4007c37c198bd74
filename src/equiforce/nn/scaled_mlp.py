"""The forward pass shared by both families' bias-free scalar MLPs, with explicit precision.

MACE's radial net (``nn.mace.mlp.RadialMLP``) and Allegro's latent nets
(``nn.allegro.mlp.AllegroMLP``) differ only in how they scale their weights and which
nonlinearity sits between layers; the casts that make ``math_dtype`` work are written once here.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def scaled_mlp_forward(
    x: torch.Tensor,
    scaled_weights: Sequence[torch.Tensor],
    activation: Callable[[torch.Tensor], torch.Tensor] | None,
    math_dtype: torch.dtype | None,
) -> torch.Tensor:
    """``act(... act(x @ W0) @ W1 ...) @ Wlast`` in ``math_dtype``, cast back to ``x.dtype``.

    Args:
        x: (n, d_in) input, any float dtype.
        scaled_weights: the layers' weights already multiplied by their normalisation,
            (d_k, d_{k+1}) each; scaling the small weight, not the (n, width) product.
        activation: applied after every layer but the last; None for a (deep) linear map.
        math_dtype: dtype of the matmuls and activations (None: the first weight's dtype).
            The input and each weight are cast to it, as ``torch.autocast`` would.

    Returns:
        (n, d_out), dtype of ``x``.
    """
    dtype = math_dtype or scaled_weights[0].dtype
    h = x.to(dtype)
    last = len(scaled_weights) - 1
    for index, weight in enumerate(scaled_weights):
        h = h @ weight.to(dtype)
        if index < last and activation is not None:
            h = activation(h)
    return h.to(x.dtype)
