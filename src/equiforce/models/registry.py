"""Registry of model families: name -> (spec dataclass, builder).

A family's spec extends ``ModelSpec`` and its builder returns an ``AtomicEnergyModel``
(``equiforce.models.contract``); ``build_model`` wraps it in a ``Potential`` and checks the
declarations (``check_declaration``, attribute reads only: cheap enough for every build).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from equiforce.kernels import use_backend
from equiforce.models.check import ModelContractError, check_declaration
from equiforce.models.contract import AtomicEnergyModel
from equiforce.models.potential import Potential
from equiforce.models.spec import ModelSpec


@dataclass(frozen=True)
class ModelFamily:
    """A registered architecture.

    Attributes:
        name: lower-case family name used in configs and checkpoints.
        spec_type: frozen ``ModelSpec`` subclass holding every hyperparameter and dataset
            constant.
        build: function ``spec -> AtomicEnergyModel``.
    """

    name: str
    spec_type: type[ModelSpec]
    build: Callable[[Any], AtomicEnergyModel]


MODELS: dict[str, ModelFamily] = {}


def register(
    name: str, spec_type: type[ModelSpec], build: Callable[[Any], AtomicEnergyModel]
) -> None:
    """Register an architecture under ``name``."""
    if name in MODELS:
        raise ValueError(f"model family {name!r} is already registered")
    if not issubclass(spec_type, ModelSpec):
        raise TypeError(f"{name}: spec type {spec_type.__name__} must extend ModelSpec")
    MODELS[name] = ModelFamily(name, spec_type, build)


def family(name: str) -> ModelFamily:
    """Look up a family, naming the known ones on a miss."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {sorted(MODELS)}") from None


def build_model(name: str, spec: Any, backend: str = "auto") -> Potential:
    """Build a ``Potential`` of family ``name`` from its spec (a dataclass or a dict).

    ``backend`` is the kernel backend of its executors (``equiforce.kernels``); blocks are
    built with ``"auto"`` and moved by ``use_backend`` when another is asked for.

    Raises:
        ModelContractError: the family built a model of another spec, or the built model's
            declarations break the contract.
    """
    fam = family(name)
    if isinstance(spec, dict):
        spec = spec_from_dict(fam.spec_type, spec)
    if not isinstance(spec, fam.spec_type):
        raise TypeError(f"{name} needs a {fam.spec_type.__name__}, got {type(spec).__name__}")
    model = Potential(fam.build(spec), name)
    check_declaration(model)
    built = model.spec
    changed = [
        f.name for f in dataclasses.fields(spec) if getattr(built, f.name) != getattr(spec, f.name)
    ]
    if changed:
        raise ModelContractError(
            f"{name}: the built model's spec differs from the one asked in {changed}"
        )
    return model if backend == "auto" else use_backend(model, backend)


def spec_from_dict(spec_type: type, values: dict[str, Any]) -> Any:
    """Build a spec dataclass from a dict; unknown keys are errors naming the key."""
    known = {f.name for f in dataclasses.fields(spec_type)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {spec_type.__name__} keys: {unknown}; known: {sorted(known)}")
    converted = {}
    for f in dataclasses.fields(spec_type):
        if f.name in values:
            value = values[f.name]
            converted[f.name] = tuple(value) if isinstance(value, list) else value
    return spec_type(**converted)
