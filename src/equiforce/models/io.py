"""Save and load models as self-describing files (family + spec + weights + metadata).

The metadata include the precision policy applied to the model (``precision``: the fields of
``equiforce.precision.PrecisionPolicy``, or None), which ``load_model`` restores; files
written before it was recorded have none and load in their saved dtype, as plain float.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from equiforce import __version__
from equiforce.files import atomic_torch_save
from equiforce.models.check import check_model
from equiforce.models.potential import Potential
from equiforce.models.registry import build_model
from equiforce.precision import PrecisionPolicy, apply_policy, current_policy

MODEL_FORMAT = "equiforce-model"
MODEL_FORMAT_VERSION = 1


def model_payload(model: Potential) -> dict[str, Any]:
    """Everything needed to rebuild ``model``: family, spec, state dict and metadata."""
    policy = current_policy(model)
    return {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "equiforce_version": __version__,
        "family": model.family,
        "spec": model.spec_dict(),
        "type_names": model.type_names,
        "r_max": model.r_max,
        "dtype": str(model.dtype).replace("torch.", ""),
        "precision": None if policy is None else dataclasses.asdict(policy),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def save_model(model: Potential, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically."""
    return atomic_torch_save(model_payload(model), path)


def model_from_payload(
    payload: dict[str, Any],
    source: str = "<payload>",
    backend: str = "auto",
    precision: str | PrecisionPolicy | None = None,
) -> Potential:
    """Rebuild a ``Potential`` from ``model_payload`` output, checking the metadata.

    Args:
        payload: ``model_payload`` output.
        source: where it came from, for error messages.
        backend: kernel backend of the rebuilt model (any backend reads any saved weights).
        precision: a mode name or policy to run the model in; None restores the saved policy
            (none for files written before policies were saved: plain float, saved dtype).
    """
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ValueError(f"{source}: not an equiforce model file (missing format tag)")
    for field in ("family", "spec", "state_dict", "dtype"):
        if field not in payload:
            raise ValueError(f"{source}: broken model file, field {field!r} is missing")
    model = build_model(payload["family"], dict(payload["spec"]), backend)
    dtype = getattr(torch, payload["dtype"])
    model = model.to(dtype)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise ValueError(f"{source}: weights do not match the saved spec: {err}") from err
    if isinstance(precision, str):
        precision = PrecisionPolicy.from_name(precision)
    policy = _saved_policy(payload, source) if precision is None else precision
    return model if policy is None else apply_policy(model, policy)


def _saved_policy(payload: dict[str, Any], source: str) -> PrecisionPolicy | None:
    """The policy recorded in ``payload``, None when it has none."""
    saved = payload.get("precision")
    if saved is None:
        return None
    try:
        return PrecisionPolicy(**saved)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: broken precision policy {saved!r}: {err}") from err


def load_model(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    backend: str = "auto",
    precision: str | PrecisionPolicy | None = None,
) -> Potential:
    """Load a model written by ``save_model`` or a training checkpoint.

    Args:
        path: the file.
        map_location: device to load onto.
        backend: kernel backend to run it with (``equiforce.kernels``); the file does not
            depend on the backend it was trained with.
        precision: a mode name (``equiforce.precision.MODES``) or policy to run it in;
            None restores the policy saved with it (files without one load as plain float
            in their saved dtype).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is truncated, not an equiforce model, or inconsistent.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # truncated or foreign files raise many different errors
        raise ValueError(f"{path}: cannot read model file ({type(err).__name__}: {err})") from err
    if isinstance(payload, dict) and "model" in payload and "format" not in payload:
        payload = payload["model"]  # a training checkpoint stores the model payload inside
    model = model_from_payload(payload, str(path), backend, precision)
    return check_model(model.to(map_location))
