"""Exponential moving average of the weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from equiforce.testing.tolerances import TOL
from equiforce.train.ema import ExponentialMovingAverage


def _linear(value: float) -> nn.Linear:
    layer = nn.Linear(2, 1).to(torch.float64)
    with torch.no_grad():
        layer.weight.fill_(value)
        layer.bias.fill_(value)
    return layer


def test_ema_update_follows_warmup_formula():
    model = _linear(1.0)
    ema = ExponentialMovingAverage(model, decay=0.9)
    expected = 1.0
    for step, value in enumerate([3.0, 5.0, -1.0]):
        with torch.no_grad():
            model.weight.fill_(value)
            model.bias.fill_(value)
        decay = min(0.9, (1 + step) / (10 + step))
        assert ema.current_decay() == pytest.approx(decay)
        ema.update(model)
        expected = decay * expected + (1 - decay) * value
        assert float(ema.shadow["weight"][0, 0]) == pytest.approx(expected, abs=TOL.fp64.atol)
    assert ema.num_updates == 3


def test_average_parameters_swaps_in_and_restores():
    model = _linear(1.0)
    ema = ExponentialMovingAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(7.0)
    with ema.average_parameters(model):
        assert float(model.weight.detach()[0, 0]) == 1.0
    assert float(model.weight.detach()[0, 0]) == 7.0


def test_state_dict_round_trip():
    model = _linear(1.0)
    ema = ExponentialMovingAverage(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update(model)
    other = ExponentialMovingAverage(_linear(0.0), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 1 and other.decay == 0.99
    assert torch.equal(other.shadow["weight"], ema.shadow["weight"])


def test_invalid_decay_is_rejected():
    with pytest.raises(ValueError, match="decay"):
        ExponentialMovingAverage(_linear(1.0), decay=1.0)
