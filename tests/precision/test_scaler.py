"""Dynamic loss scaling: growth, back-off, skip counting and state round trip."""

from __future__ import annotations

import math

import pytest
import torch

from equiforce.precision import DynamicLossScaler


def _parameter_with_grad(value: float) -> torch.nn.Parameter:
    parameter = torch.nn.Parameter(torch.zeros(3))
    parameter.grad = torch.full((3,), value)
    return parameter


def test_unscale_divides_the_gradients_and_reports_finiteness():
    scaler = DynamicLossScaler(init_scale=8.0)
    parameter = _parameter_with_grad(4.0)
    assert scaler.unscale_([parameter])
    assert torch.equal(parameter.grad, torch.full((3,), 0.5))
    assert not scaler.unscale_([_parameter_with_grad(math.inf)])
    assert not scaler.unscale_([_parameter_with_grad(math.nan)])


def test_scale_backs_off_on_overflow_and_grows_after_good_steps():
    scaler = DynamicLossScaler(init_scale=16.0, growth_interval=2, max_consecutive_skips=2)
    scaler.update(False)
    assert scaler.scale == 8.0 and scaler.skipped_total == 1 and not scaler.diverged
    scaler.update(True)
    assert scaler.scale == 8.0
    scaler.update(True)
    assert scaler.scale == 16.0 and scaler.consecutive_skips == 0
    scaler.update(False)
    scaler.update(False)
    assert scaler.diverged and scaler.skipped_total == 3


def test_state_dict_round_trip_restores_scale_and_counters():
    scaler = DynamicLossScaler(init_scale=32.0, growth_interval=3)
    for finite in (True, False, True):
        scaler.update(finite)
    restored = DynamicLossScaler()
    restored.load_state_dict(scaler.state_dict())
    assert restored.state_dict() == scaler.state_dict()


def test_scaled_loss_multiplies_by_the_scale():
    scaler = DynamicLossScaler(init_scale=4.0)
    assert float(scaler.scale_loss(torch.tensor(2.5))) == 10.0


@pytest.mark.parametrize(
    "kwargs", [{"init_scale": 0.0}, {"backoff_factor": 1.0}, {"growth_interval": 0}]
)
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        DynamicLossScaler(**kwargs)
