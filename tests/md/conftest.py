"""Fixtures for the calculator and MD tests: a tiny random MACE and its model file."""

from __future__ import annotations

import pytest
import torch

from equiforce.models import Potential, save_model
from equiforce.testing.models import tiny_mace


@pytest.fixture(scope="module")
def model64() -> Potential:
    """Tiny float64 MACE."""
    return tiny_mace(torch.float64)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, model64) -> str:
    """``model64`` saved with ``save_model``."""
    path = tmp_path_factory.mktemp("model") / "tiny_mace.pt"
    save_model(model64, path)
    return str(path)


@pytest.fixture(scope="session")
def emt_cu_model(tmp_path_factory) -> str:
    """A tiny MACE trained on EMT Cu (``tests/md/emt_model.py``): a physically sensible model."""
    from .emt_model import train_emt_cu_model

    return str(train_emt_cu_model(tmp_path_factory.mktemp("emt_cu")))
