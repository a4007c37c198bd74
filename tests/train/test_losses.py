"""Loss terms against hand computations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from equiforce.data import keys
from equiforce.testing.tolerances import TOL
from equiforce.train.losses import (
    EnergyPerAtomLoss,
    ForcesLoss,
    LossParts,
    StressLoss,
    energy_forces_stress_loss,
)


def _batch_and_pred():
    """Two graphs (2 and 1 atoms); the second has no stress label and weight 3 on forces."""
    batch = {
        keys.PTR: torch.tensor([0, 2, 3]),
        keys.BATCH: torch.tensor([0, 0, 1]),
        keys.ENERGY: torch.tensor([1.0, -2.0], dtype=torch.float64),
        keys.FORCES: torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]], dtype=torch.float64),
        keys.STRESS: torch.zeros(2, 3, 3, dtype=torch.float64),
        keys.ENERGY_WEIGHT: torch.tensor([1.0, 2.0], dtype=torch.float64),
        keys.FORCES_WEIGHT: torch.tensor([1.0, 3.0], dtype=torch.float64),
        keys.STRESS_WEIGHT: torch.tensor([0.5, 1.0], dtype=torch.float64),
        keys.HAS_ENERGY: torch.tensor([True, True]),
        keys.HAS_FORCES: torch.tensor([True, True]),
        keys.HAS_STRESS: torch.tensor([True, False]),
    }
    stress = torch.zeros(2, 3, 3, dtype=torch.float64)
    stress[0, 0, 0] = 0.2
    stress[1, 1, 1] = 5.0  # unlabelled: must not count
    pred = {
        keys.ENERGY: torch.tensor([2.0, -2.5], dtype=torch.float64),
        keys.FORCES: torch.tensor([[1.5, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], dtype=torch.float64),
        keys.STRESS: stress,
    }
    return batch, pred


def test_energy_per_atom_mse_matches_hand_computation():
    batch, pred = _batch_and_pred()
    # graph 0: ((2-1)/2)^2 * 1 = 0.25; graph 1: ((-2.5+2)/1)^2 * 2 = 0.5
    expected = (0.25 + 0.5) / 2
    assert float(EnergyPerAtomLoss()(batch, pred)) == pytest.approx(expected, abs=TOL.fp64.atol)


def test_forces_mse_is_per_component_and_weighted():
    batch, pred = _batch_and_pred()
    # errors: atom 0 x: 0.5^2 * 1; atom 2 z: 1^2 * 3; nine components in all
    expected = (0.25 + 3.0) / 9
    assert float(ForcesLoss()(batch, pred)) == pytest.approx(expected, abs=TOL.fp64.atol)


def test_stress_mse_masks_unlabelled_graphs():
    batch, pred = _batch_and_pred()
    expected = 0.5 * 0.2**2 / 18
    assert float(StressLoss()(batch, pred)) == pytest.approx(expected, abs=TOL.fp64.atol)


def test_weighted_loss_is_weighted_sum_and_combine_agrees():
    batch, pred = _batch_and_pred()
    loss = energy_forces_stress_loss(1.0, 10.0, 100.0)
    expected = 0.375 + 10.0 * 3.25 / 9 + 100.0 * 0.02 / 18
    value = float(loss(batch, pred))
    assert value == pytest.approx(expected, abs=TOL.fp64.atol)
    assert loss.combine(loss.parts(batch, pred)) == pytest.approx(value, abs=TOL.fp64.atol)


def test_accumulated_parts_equal_the_loss_of_the_concatenated_data():
    batch, pred = _batch_and_pred()
    loss = energy_forces_stress_loss(1.0, 1.0, 1.0)
    twice = loss.parts(batch, pred) + loss.parts(batch, pred)
    assert loss.combine(twice) == pytest.approx(float(loss(batch, pred)), abs=TOL.fp64.atol)


def test_zero_weight_terms_are_dropped():
    loss = energy_forces_stress_loss(1.0, 1.0, 0.0)
    assert not loss.needs_stress
    assert set(loss.weights) == {"energy", "forces"}


def test_loss_is_differentiable():
    batch, pred = _batch_and_pred()
    pred[keys.FORCES].requires_grad_(True)
    ForcesLoss()(batch, pred).backward()
    grad = pred[keys.FORCES].grad.numpy()
    expected = np.zeros((3, 3))
    expected[0, 0] = 2 * 0.5 / 9
    expected[2, 2] = 2 * 3 * (-1.0) / 9
    np.testing.assert_allclose(grad, expected, atol=TOL.fp64.atol)


def test_loss_parts_means_handle_empty_counts():
    parts = LossParts({"energy": 0.0}, {"energy": 0})
    assert parts.means() == {"energy": 0.0}


def test_huber_is_half_the_squared_error_inside_delta_and_linear_beyond():
    """Huber's penalty with delta 0.6: the energy errors 0.5 eV/atom (weight 1) and 0.5
    (weight 2) are inside (e^2 / 2), the force error 1.0 (weight 3) beyond
    (delta (|e| - delta / 2)); the schedule of ``training.loss: huber`` uses it, stage two
    too, and a delta <= 0 is refused."""
    from equiforce.train.config import StageTwoConfig, TrainConfig
    from equiforce.train.losses import huber
    from equiforce.train.optim import TrainingSchedule

    batch, pred = _batch_and_pred()
    penalty = huber(0.6)
    energy = (0.5 * 0.25 * 1 + 0.5 * 0.25 * 2) / 2
    assert float(EnergyPerAtomLoss(penalty)(batch, pred)) == pytest.approx(energy, abs=1e-15)
    forces = (0.5 * 0.25 + 3 * 0.6 * (1.0 - 0.3)) / 9
    assert float(ForcesLoss(penalty)(batch, pred)) == pytest.approx(forces, abs=1e-15)
    stage_two = StageTwoConfig(enabled=True, stress_weight=0.0)
    config = TrainConfig(loss="huber", huber_delta=0.6, energy_weight=2.0, stress_weight=0.0)
    config = dataclasses.replace(config, stage_two=stage_two)
    for epoch in (0, 99):  # main stage, stage two
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        loss = TrainingSchedule(config, optimizer).loss(epoch)
        weight = config.stage_two.energy_weight if epoch else 2.0
        expected = weight * energy + config.forces_weight * forces
        assert float(loss(batch, pred)) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="Huber delta must be positive, got 0"):
        huber(0.0)
