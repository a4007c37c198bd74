"""Named parts of a model for fine-tuning: freezing them and giving them their own learning rate.

The parts follow the block structure every architecture declares through the model contract
(``AtomicEnergyModel.num_layers``, one ``run_layer`` per block):

* ``embeddings``: what ``initial_state`` uses (MACE: species embedding and edge embedding,
  and the charge and spin embedding; Allegro: the two-body edge embedding);
* ``layer_<k>``, k = 0 .. ``num_layers`` - 1: block k of ``run_layer`` (MACE: interaction k
  and product k; Allegro: tensor product k and latent MLP k, plus the first projection for
  ``layer_0``, which produces the first layer's environment weights);
* ``readouts``: what turns features into energies (MACE: the per-layer readouts and the
  charge and spin embedding's; Allegro: the edge-energy MLP).

Every trainable parameter belongs to exactly one part; a family whose parameters are not all
covered raises, so a new block cannot silently escape a freeze.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from torch import nn

from equiforce.models.potential import Potential

__all__ = [
    "PARTS",
    "apply_freeze",
    "count_trainable",
    "find_potential",
    "model_parts",
    "parameter_groups",
]

EMBEDDINGS = "embeddings"
READOUTS = "readouts"

# family -> (regex on the parameter name inside ``energy_model``, part; "{k}" = layer group)
PARTS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "mace": (
        (r"(embedding|edge_embedding|electronic_state)\..*", EMBEDDINGS),
        (r"(interactions|products)\.(\d+)\..*", "layer_{2}"),
        (r"(readouts|state_readout)\..*", READOUTS),
    ),
    "allegro": (
        (r"embedding\..*", EMBEDDINGS),
        (r"layers\.first_projection\..*", "layer_0"),
        (r"layers\.(tps|latents)\.(\d+)\..*", "layer_{2}"),
        (r"readout\..*", READOUTS),
    ),
}


def _part_of(family: str, name: str) -> str | None:
    for pattern, part in PARTS[family]:
        match = re.fullmatch(pattern, name)
        if match is not None:
            return part.replace("{2}", match.group(2)) if "{2}" in part else part
    return None


def model_parts(potential: Potential) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The model's parameters by part, parts in model order (embeddings, layers, readouts).

    Args:
        potential: a model of a family in ``PARTS``.

    Returns:
        part name -> ``[(parameter name in the potential, parameter), ...]``.

    Raises:
        ValueError: the family has no part table, or a parameter is in no part.
    """
    family = potential.family
    if family not in PARTS:
        raise ValueError(f"fine-tuning parts are defined for {sorted(PARTS)}, not {family!r}")
    n_layers = int(potential.energy_model.num_layers)
    order = [EMBEDDINGS, *(f"layer_{k}" for k in range(n_layers)), READOUTS]
    parts: dict[str, list[tuple[str, nn.Parameter]]] = {name: [] for name in order}
    for name, param in potential.energy_model.named_parameters():
        part = _part_of(family, name)
        if part not in parts:
            raise ValueError(
                f"parameter energy_model.{name} of the {family!r} model is in no fine-tuning "
                f"part (parts: {order}); extend equiforce.train.finetune.PARTS"
            )
        parts[part].append((f"energy_model.{name}", param))
    return parts


def find_potential(module: nn.Module, setting: str) -> Potential:
    """The ``Potential`` that is ``module`` or inside it (the first one found).

    Raises:
        ValueError: none, naming ``setting`` (the config key that needs it).
    """
    potential = next((m for m in module.modules() if isinstance(m, Potential)), None)
    if potential is None:
        raise ValueError(f"{setting}: no model among the trained modules")
    return potential


def _check_names(names: Sequence[str], parts: Mapping[str, Any], setting: str) -> None:
    unknown = [n for n in names if n not in parts]
    if unknown:
        raise ValueError(f"{setting}: unknown part(s) {unknown}; this model's parts: {list(parts)}")


def apply_freeze(potential: Potential, freeze: Sequence[str]) -> list[str]:
    """Set ``requires_grad=False`` on the parameters of the ``freeze`` parts.

    Args:
        potential: the model (changed in place).
        freeze: part names (``model_parts`` keys).

    Returns:
        Names of the frozen parameters.

    Raises:
        ValueError: an unknown part, naming the model's parts.
    """
    if not freeze:
        return []
    parts = model_parts(potential)
    _check_names(freeze, parts, "training.finetune.freeze")
    frozen = []
    for part in freeze:
        for name, param in parts[part]:
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def parameter_groups(
    module: nn.Module, lr: float, lr_scale: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with per-part learning rates.

    Args:
        module: what is optimised: a ``Potential``, or a module holding one (e.g. the model
            and an auxiliary loss); parameters outside the potential train at ``lr``.
        lr: the base learning rate.
        lr_scale: part -> factor on ``lr``.

    Returns:
        Groups ``{"params", "lr", "lr_scale", "name"}``; the first is the base group (scale
        1, every parameter not in a scaled part), then one per scaled part. Parameters with
        ``requires_grad=False`` (frozen) are left out; empty groups are dropped.

    Raises:
        ValueError: ``lr_scale`` names a part the model does not have, or ``module`` holds
            no ``Potential`` while ``lr_scale`` is given.
    """
    scaled: dict[int, str] = {}
    if lr_scale:
        potential = find_potential(module, "training.finetune.lr_scale")
        parts = model_parts(potential)
        _check_names(list(lr_scale), parts, "training.finetune.lr_scale")
        scaled = {id(p): part for part in lr_scale for _, p in parts[part]}
    base = [p for p in module.parameters() if p.requires_grad and id(p) not in scaled]
    groups = [{"params": base, "lr": lr, "lr_scale": 1.0, "name": "base"}]
    for part, factor in lr_scale.items():
        params = [p for p in module.parameters() if p.requires_grad and scaled.get(id(p)) == part]
        groups.append({"params": params, "lr": lr * factor, "lr_scale": factor, "name": part})
    return [g for g in groups if g["params"]]


def count_trainable(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of parameter elements of ``module``."""
    total = sum(p.numel() for p in module.parameters())
    return sum(p.numel() for p in module.parameters() if p.requires_grad), total
