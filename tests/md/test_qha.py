"""Quasi-harmonic thermal expansion (``equiforce.md.qha``, ``equiforce qha``): the fit of an
Einstein crystal's free energy gives its exact equilibrium volume and expansion; EMT-like
copper expands with temperature and with its zero-point motion; the command writes them."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.io import write
from scipy.optimize import brentq

from equiforce.cli import qha as qha_cli
from equiforce.md.qha import equilibrium_volumes

V0, B0, GAMMA, NU0, MODES = 12.0, 0.8, 2.0, 6e12, 3  # Å^3, eV/Å^3, Grüneisen, Hz, per cell


def einstein(volume: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """An Einstein crystal's vibrational free energy and energy (eV) at ``volume``: 3 modes of
    frequency NU0 (V / V0)^-GAMMA."""
    quantum = units._hplanck * NU0 * (volume / V0) ** -GAMMA / units._e
    if temperature == 0:
        return MODES * quantum / 2, MODES * quantum / 2
    x = quantum / (units.kB * temperature)
    free = MODES * (quantum / 2 + units.kB * temperature * np.log(-np.expm1(-x)))
    return free, MODES * quantum * (0.5 + 1 / np.expm1(x))


def exact_volume(temperature: float) -> float:
    """Where dF/dV = 0: B0 (V / V0 - 1) = GAMMA E_vib(V, T) / V."""

    def slope(volume: float) -> float:
        return B0 * (volume / V0 - 1) - GAMMA * einstein(np.array(volume), temperature)[1] / volume

    return brentq(slope, 0.9 * V0, 1.1 * V0, xtol=1e-14)


def test_the_fit_finds_an_einstein_crystals_exact_equilibrium():
    """Static energy B0 V0 / 2 (V / V0 - 1)^2 plus an Einstein crystal's free energy with
    Grüneisen parameter 2, sampled at 13 volumes from -4 % to +8 %: V(T) equals the exact
    minimum within 1e-4 (relative: the equation of state is Birch and Murnaghan's, the static
    energy a parabola) from 0 to 1200 K, alpha = d ln V / dT its derivative within 2 %
    (away from the grid's ends), B(T) the curvature of F (1 %); V(0) lies above V0 (zero
    point); temperatures whose minimum leaves the sampled volumes are NaN and named."""
    volumes = V0 * np.linspace(0.96, 1.08, 13)
    temperatures = np.arange(0.0, 1201.0, 20.0)
    static = B0 * V0 / 2 * (volumes / V0 - 1) ** 2
    vibrational = np.stack([einstein(volumes, t)[0] for t in temperatures], axis=1)
    result = equilibrium_volumes(volumes, static, vibrational, temperatures)
    exact = np.array([exact_volume(t) for t in temperatures])
    np.testing.assert_allclose(result.volume, exact, rtol=1e-4)
    assert result.volume[0] > V0 and np.all(np.diff(result.volume) > 0)
    inner = slice(2, -2)
    derivative = np.gradient(np.log(exact), temperatures)
    np.testing.assert_allclose(result.expansion[inner], derivative[inner], rtol=2e-2, atol=1e-8)
    step = 1e-4 * V0
    for index in (0, 30):
        temperature = temperatures[index]
        volume = result.volume[index]
        free = [
            B0 * V0 / 2 * (v / V0 - 1) ** 2 + einstein(np.array(v), temperature)[0]
            for v in (volume - step, volume, volume + step)
        ]
        curvature = (free[0] - 2 * free[1] + free[2]) / step**2
        assert result.bulk_modulus[index] == pytest.approx(volume * curvature / units.GPa, rel=1e-2)
    narrow = equilibrium_volumes(volumes[:5], static[:5], vibrational[:5], temperatures)
    assert np.isnan(narrow.volume[-1]) and narrow.outside[-1] == 1200.0
    with pytest.raises(ValueError, match="the equation of state needs 5"):
        equilibrium_volumes(volumes[:4], static[:4], vibrational[:4], temperatures)


def test_cli_expands_copper_and_writes_the_table(emt_cu_model, tmp_path, capsys):
    """``equiforce qha --relax`` on fcc Cu (the EMT-fitted MACE, 3 x 3 x 3, 6^3 mesh): the
    volume grows with temperature from above the static one (zero point), the linear expansion
    coefficient at 300 K is of a metal's order (0.3-5 x 10^-5 / K), the bulk modulus
    softens; JSON, figure and table written; bad options refused."""
    parser = argparse.ArgumentParser()
    qha_cli.add_arguments(parser)
    write(tmp_path / "cu.xyz", bulk("Cu", "fcc", a=3.55))
    out = tmp_path / "qha"
    argv = [emt_cu_model, str(tmp_path / "cu.xyz"), "--out", str(out)]
    options = ["--relax", "--mesh", "6", "6", "6", "--temperatures", "0", "600", "50"]
    assert qha_cli.run(parser.parse_args([*argv, *options])) == 0
    summary = json.loads((out / qha_cli.SUMMARY_NAME).read_text())
    volume = np.asarray(summary["volume_A3"])
    assert volume[0] > summary["static_volume_A3"] and np.all(np.diff(volume) > 0)
    at_300 = summary["temperature_K"].index(300.0)
    assert 3e-6 < summary["linear_expansion_per_K"][at_300] < 5e-5
    assert summary["bulk_modulus_GPa"][-1] < summary["bulk_modulus_GPa"][0]
    assert (out / qha_cli.FIGURE_NAME).stat().st_size > 0
    printed = capsys.readouterr().out
    assert "alpha_V (1/K)" in printed and "relaxed in" in printed
    with pytest.raises(ValueError, match="give at least 5 volumes"):
        qha_cli.run(parser.parse_args([*argv, "--volumes", "3"]))
    with pytest.raises(ValueError, match="--temperatures 0 600 0"):
        qha_cli.run(parser.parse_args([*argv, "--temperatures", "0", "600", "0"]))
