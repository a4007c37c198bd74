"""The forward pass shared by both families' bias-free scalar MLPs, with explicit precision.

MACE's radial net (``nn.mace.mlp.RadialMLP``) and Allegro's latent nets
(``nn.allegro.mlp.AllegroMLP``) differ only in how they scale their weights and which
nonlinearity sits between layers; the casts that make ``math_dtype`` work are written once here.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


def scaled_mlp_forward(
    x: torch.Tensor | Sequence[torch.Tensor],
    scaled_weights: Sequence[torch.Tensor],
    activation: Callable[[torch.Tensor], torch.Tensor] | None,
    math_dtype: torch.dtype | None,
    row_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """``act(... act(x @ W0) @ W1 ...) @ Wlast`` in ``math_dtype``, cast back to ``x.dtype``.

    Args:
        x: (n, d_in) input, any float dtype; or its column blocks ``[(n, d_0), (n, d_1), ...]``
            (``d_in = sum d_k``, one dtype), multiplied by the matching rows of ``W0`` and
            summed: the product with their concatenation without forming it (a concatenation
            of pair-sized blocks and its gradient are two passes over memory each).
        scaled_weights: the layers' weights already multiplied by their normalisation,
            (d_k, d_{k+1}) each; scaling the small weight, not the (n, width) product.
        activation: applied after every layer but the last; None for a (deep) linear map.
        math_dtype: dtype of the matmuls and activations (None: the first weight's dtype).
            The input and each weight are cast to it, as ``torch.autocast`` would.
        row_scale: (n, 1) factors of the output's rows, or None: applied to the last layer's
            input (``(h s) @ W = (h @ W) s``, the layers having no biases), a product of the
            hidden width rather than of the output's (MACE's radial weights times the
            envelope: 64 against ~1000 columns per edge, and its gradient likewise).

    Returns:
        (n, d_out), dtype of ``x``.
    """
    blocks = [x] if isinstance(x, torch.Tensor) else list(x)
    dtype = math_dtype or scaled_weights[0].dtype
    first = scaled_weights[0].to(dtype)
    h, start = None, 0
    for block in blocks:
        rows = first.narrow(0, start, block.shape[-1]) if len(blocks) > 1 else first
        start += block.shape[-1]
        h = block.to(dtype) @ rows if h is None else torch.addmm(h, block.to(dtype), rows)
    last = len(scaled_weights) - 1
    for index, weight in enumerate(scaled_weights):
        if index == last and row_scale is not None:  # of one layer: its output
            h = h * row_scale.to(dtype)
        if index > 0:
            h = h @ weight.to(dtype)
        if index < last and activation is not None:
            h = activation(h)
    return h.to(blocks[0].dtype)
