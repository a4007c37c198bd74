"""Save and load models as self-describing files (family + spec + weights + metadata)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from equiforce import __version__
from equiforce.files import atomic_torch_save
from equiforce.models.check import check_model
from equiforce.models.potential import Potential
from equiforce.models.registry import build_model

MODEL_FORMAT = "equiforce-model"
MODEL_FORMAT_VERSION = 1


def model_payload(model: Potential) -> dict[str, Any]:
    """Everything needed to rebuild ``model``: family, spec, state dict and metadata."""
    return {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "equiforce_version": __version__,
        "family": model.family,
        "spec": model.spec_dict(),
        "type_names": model.type_names,
        "r_max": model.r_max,
        "dtype": str(model.dtype).replace("torch.", ""),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def save_model(model: Potential, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically."""
    return atomic_torch_save(model_payload(model), path)


def model_from_payload(
    payload: dict[str, Any], source: str = "<payload>", backend: str = "auto"
) -> Potential:
    """Rebuild a ``Potential`` from ``model_payload`` output, checking the metadata.

    ``backend``: kernel backend of the rebuilt model (any backend reads any saved weights).
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
    return model


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", backend: str = "auto"
) -> Potential:
    """Load a model written by ``save_model`` or a training checkpoint.

    ``backend``: kernel backend to run it with (``equiforce.kernels``); the file does not
    depend on the backend it was trained with.

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
    model = model_from_payload(payload, str(path), backend)
    return check_model(model.to(map_location))
