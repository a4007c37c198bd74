"""Per-structure electronic state (total charge, spin multiplicity) embedded into the atoms'
initial features: mace-torch's ``GenericJointEmbedding`` for per-graph features, as its
charge- and spin-aware models (MACE-OMOL) build it from ``embedding_specs``.

Each quantity has its own embedder, ``emb_dim`` features per structure:

* ``"categorical"``: a table row, ``table[value + offset]`` (the value must be an integer with
  ``0 <= value + offset < num_classes``; e.g. charges -10..10 with ``offset`` 10);
* ``"continuous"``: ``Linear(SiLU(Linear(value)))`` (1 -> emb_dim -> emb_dim, biases unless
  ``use_bias`` is false).

The embeddings are concatenated in the spec's order and projected, ``SiLU(W [e_1, e_2, ...])``
(no bias), onto the ``num_channels`` scalars that every atom of the structure adds to its
species embedding. Parameters are in torch's
layouts (``nn.Embedding``, ``nn.Linear``): mace-torch's weights carry over unchanged.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn import functional

from equiforce.data import keys

KINDS = ("categorical", "continuous")
# what an entry of ``embedding_specs`` may hold, with the defaults of the optional ones
_OPTIONAL = MappingProxyType({"offset": 0, "use_bias": True, "in_dim": 1, "per": "graph"})
_REQUIRED = {"categorical": ("type", "emb_dim", "num_classes"), "continuous": ("type", "emb_dim")}


def state_spec_problems(specs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What is wrong with ``embedding_specs``, one sentence per problem naming the entry.

    Args:
        specs: quantity name -> its embedder's settings (module docstring): ``type``,
            ``emb_dim``, ``num_classes`` and ``offset`` (categorical), ``use_bias``
            (continuous), ``per`` (``"graph"`` only), ``in_dim`` (1 only).
    """
    problems = []
    if not isinstance(specs, Mapping) or not specs:
        return [f"embedding_specs must be a non-empty mapping of quantities, got {specs!r}"]
    for name, spec in specs.items():
        where = f"embedding_specs[{name!r}]"
        if name not in keys.GRAPH_STATE_KEYS:
            problems.append(f"{where}: unknown quantity, known: {list(keys.GRAPH_STATE_KEYS)}")
            continue
        if not isinstance(spec, Mapping) or spec.get("type") not in KINDS:
            problems.append(f"{where}: needs type, one of {KINDS}")
            continue
        required = _REQUIRED[spec["type"]]
        unknown = set(spec) - set(required) - set(_OPTIONAL) - {"num_classes", "offset"}
        if unknown:
            problems.append(f"{where}: unknown settings {sorted(unknown)}")
        missing = [field for field in required if field not in spec]
        if missing:
            problems.append(f"{where}: missing {missing}")
            continue
        counts = [spec["emb_dim"]] + ([spec["num_classes"]] if "num_classes" in required else [])
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in counts):
            problems.append(f"{where}: emb_dim and num_classes must be integers >= 1")
        if not isinstance(spec.get("offset", 0), int):
            problems.append(f"{where}: offset must be an integer")
        if spec.get("per", "graph") != "graph" or spec.get("in_dim", 1) != 1:
            problems.append(f"{where}: only per-structure scalars (per: graph, in_dim: 1)")
    return problems


class ElectronicStateEmbedding(nn.Module):
    """Per-structure state -> (n_atoms, num_channels) scalars added to the species embedding.

    Parameters: ``embedders.<name>.weight`` (num_classes, emb_dim) N(0, 1) for categorical
    quantities; ``embedders.<name>.0/2.weight/bias`` (torch ``nn.Linear`` layouts) for
    continuous ones; ``project.weight`` (num_channels, sum of emb_dim). Initialised as torch
    initialises those layers, from ``generator``.

    Args:
        specs: quantity name -> settings (``state_spec_problems``; checked by the spec).
        num_channels: the species embedding's width.
        generator: random source for the initial weights.
    """

    def __init__(
        self, specs: Mapping[str, Mapping[str, Any]], num_channels: int, generator: torch.Generator
    ):
        super().__init__()
        self.specs = {name: {**_OPTIONAL, **spec} for name, spec in specs.items()}
        with torch.random.fork_rng(devices=[]):  # torch's own layer init draws globally
            self._build(num_channels, generator)

    def _build(self, num_channels: int, generator: torch.Generator) -> None:
        """The embedders and the projection, their weights drawn from ``generator``."""
        f64 = torch.float64
        self.embedders = nn.ModuleDict()
        for name, spec in self.specs.items():
            width = spec["emb_dim"]
            if spec["type"] == "categorical":
                table = nn.Embedding(spec["num_classes"], width, dtype=f64)
                with torch.no_grad():
                    table.weight.copy_(
                        torch.randn(table.weight.shape, generator=generator, dtype=f64)
                    )
                self.embedders[name] = table
            else:
                bias = bool(spec["use_bias"])
                layers = [
                    nn.Linear(1, width, bias=bias, dtype=f64),
                    nn.SiLU(),
                    nn.Linear(width, width, bias=bias, dtype=f64),
                ]
                for layer in layers[::2]:
                    _torch_default_init(layer, generator)
                self.embedders[name] = nn.Sequential(*layers)
        total = sum(spec["emb_dim"] for spec in self.specs.values())
        self.project = nn.Linear(total, num_channels, bias=False, dtype=f64)
        _torch_default_init(self.project, generator)

    @property
    def names(self) -> tuple[str, ...]:
        """The quantities embedded, in order (keys of the batch)."""
        return tuple(self.specs)

    def forward(self, state: Mapping[str, torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        """Embed each structure's state and hand it to its atoms.

        Args:
            state: ``{name: (n_graphs,) float64}`` for every quantity in ``names``.
            batch: (n_atoms,) int64, each atom's structure.

        Returns:
            (n_atoms, num_channels), the parameters' dtype.

        A categorical value must be an integer its table has a row for: the callers check it
        (``data.charge_spin.check_state``: ``Potential``, compiled calls and packages before
        their programs, LAMMPS at ``pair_style``), as a check on the data here would not
        trace.
        """
        dtype = self.project.weight.dtype
        parts = []
        for name, spec in self.specs.items():
            value = state[name]
            if spec["type"] == "categorical":
                parts.append(self.embedders[name]((value + spec["offset"]).long()))
            else:
                parts.append(self.embedders[name](value.to(dtype).unsqueeze(-1)))
        per_graph = functional.silu(self.project(torch.cat(parts, dim=-1)))
        return per_graph.index_select(0, batch)


def _torch_default_init(layer: nn.Linear, generator: torch.Generator) -> None:
    """``nn.Linear``'s own initialisation (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight
    and the bias), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        for parameter in (layer.weight, layer.bias):
            if parameter is not None:
                draw = torch.rand(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.copy_((2 * draw - 1) * bound)
