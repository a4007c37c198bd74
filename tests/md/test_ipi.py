"""i-PI with an equiforce model (``equiforce.md.ipi``, ``equiforce ipi``): a real i-PI runs
path-integral MD of a molecule and classical NPT-free MD of a periodic cell through the
driver; its potential energies are the model's, its virial pressure the model's stress."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from ase import units
from ase.io import write

from equiforce.cli import ipi as ipi_cli
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.ipi import run_ipi_driver
from equiforce.testing.structures import make_fcc_cu, make_molecule

I_PI = Path(sys.executable).parent / "i-pi"
pytestmark = pytest.mark.skipif(not I_PI.exists(), reason="i-PI is not installed (equiforce[sim])")

INPUT = """<simulation verbosity='low' safe_stride='1000'>
  <output prefix='sim'>
    <properties stride='1' filename='out'>
      [ step, potential{{electronvolt}}, pressure_md{{gigapascal}}, kinetic_md{{electronvolt}} ]
    </properties>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>31415</seed></prng>
  <ffsocket name='equiforce' mode='unix'><address>{address}</address></ffsocket>
  <system>
    <initialize nbeads='{beads}'>
      <file mode='xyz' units='angstrom'> init.xyz </file>
      <velocities mode='thermal' units='kelvin'> 300 </velocities>
    </initialize>
    <forces><force forcefield='equiforce'/></forces>
    <ensemble><temperature units='kelvin'> 300 </temperature></ensemble>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'> 0.25 </timestep>
        <thermostat mode='pile_l'><tau units='femtosecond'> 100 </tau></thermostat>
      </dynamics>
    </motion>
  </system>
</simulation>
"""


def write_ipi_xyz(path: Path, atoms) -> None:
    """``atoms`` in i-PI's xyz: the cell (a 30 Å box for a molecule) and the units in the
    comment line, where i-PI reads them."""
    cell = atoms.cell.cellpar() if atoms.pbc.all() else [30.0, 30.0, 30.0, 90.0, 90.0, 90.0]
    comment = "# CELL(abcABC): " + " ".join(f"{value:.10f}" for value in cell)
    comment += " cell{angstrom} positions{angstrom}"
    lines = [str(len(atoms)), comment]
    lines += [
        f"{s} {x:.12f} {y:.12f} {z:.12f}"
        for s, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def serve(folder: Path, input_text: str, atoms, calculator) -> int:
    """i-PI with ``input_text`` in ``folder`` (``atoms`` its start), served by the driver
    until it ends; returns the driver's evaluations."""
    folder.mkdir(parents=True, exist_ok=True)
    write_ipi_xyz(folder / "init.xyz", atoms)
    (folder / "input.xml").write_text(input_text)
    server = subprocess.Popen(
        [str(I_PI), "input.xml"], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    address = input_text.split("<address>")[1].split("</address>")[0]
    try:
        evaluations = run_ipi_driver(atoms, calculator, unix=address, wait_s=60)
        output, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    assert server.returncode == 0, output.decode()[-2000:]
    return evaluations


def run_ipi(folder: Path, atoms, calculator, beads: int, steps: int) -> tuple[np.ndarray, int]:
    """i-PI on ``atoms`` (``beads`` beads, ``steps`` NVT steps) served by the driver; returns
    its properties table (step, potential eV, pressure GPa, kinetic energy eV) and the
    driver's evaluations."""
    address = f"equiforce-{uuid.uuid4().hex[:12]}"
    text = INPUT.format(steps=steps, address=address, beads=beads)
    evaluations = serve(folder, text, atoms, calculator)
    return np.loadtxt(folder / "sim.out", ndmin=2), evaluations


def test_path_integral_md_of_a_molecule_is_served_the_models_energies(model_file, tmp_path):
    """Ethanol, 4 beads, 3 steps: i-PI asks for 4 x 4 structures; at step 0 every bead sits
    on the structure, so i-PI's potential is the model's energy (1e-6 eV: the unit round
    trip); the later steps run. The command serves a second run."""
    atoms = make_molecule("CH3CH2OH", seed=5)
    calculator = EquiforceCalculator(model_file)
    table, evaluations = run_ipi(tmp_path / "pimd", atoms, calculator, beads=4, steps=3)
    assert evaluations == 16 and table.shape == (4, 4)
    molecule = atoms.copy()
    molecule.calc = calculator
    assert table[0, 1] == pytest.approx(molecule.get_potential_energy(), abs=1e-6)
    assert np.isfinite(table).all() and (table[1:, 1] != table[0, 1]).all()

    write(tmp_path / "ethanol.xyz", atoms)
    parser = argparse.ArgumentParser()
    ipi_cli.add_arguments(parser)
    address = f"equiforce-{uuid.uuid4().hex[:12]}"
    folder = tmp_path / "cli"
    folder.mkdir()
    (folder / "init.xyz").write_text((tmp_path / "pimd" / "init.xyz").read_text())
    (folder / "input.xml").write_text(INPUT.format(steps=1, address=address, beads=2))
    server = subprocess.Popen([str(I_PI), "input.xml"], cwd=folder, stdout=subprocess.DEVNULL)
    try:
        argv = [model_file, str(tmp_path / "ethanol.xyz"), "--unix", address]
        assert ipi_cli.run(parser.parse_args(argv)) == 0
        assert server.wait(timeout=60) == 0
    finally:
        if server.poll() is None:
            server.kill()


def test_periodic_cell_gets_the_models_stress_as_its_virial(model_file, tmp_path):
    """A 32-atom Cu/Au cell, 1 bead: i-PI's potential at step 0 is the model's energy and
    its pressure is the model's, -tr(stress)/3 (3.76 GPa), plus the kinetic 2K/3V of i-PI's
    velocities (1e-3 GPa, printed digits; a virial of the wrong sign or none is off by 3.8-7.5
    GPa); no i-PI at an address is named after the wait."""
    atoms = make_fcc_cu(repeat=2, seed=3)
    calculator = EquiforceCalculator(model_file)
    table, evaluations = run_ipi(tmp_path / "md", atoms, calculator, beads=1, steps=1)
    assert evaluations == 2
    cell = atoms.copy()
    cell.calc = calculator
    assert table[0, 1] == pytest.approx(cell.get_potential_energy(), abs=1e-6)
    static = -cell.get_stress()[:3].mean() / units.GPa
    kinetic = 2 * table[0, 3] / (3 * cell.get_volume()) / units.GPa
    assert table[0, 2] == pytest.approx(static + kinetic, abs=1e-3)
    with pytest.raises(ConnectionError, match="no i-PI at UNIX socket /tmp/ipi_nobody"):
        run_ipi_driver(atoms, calculator, unix=f"nobody-{os.getpid()}", wait_s=0.5)


REMD_INPUT = """<simulation verbosity='low' safe_stride='1000'>
  <output prefix='sim'>
    <properties stride='1' filename='out'> [ step, temperature{{kelvin}} ] </properties>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>31415</seed></prng>
  <ffsocket name='equiforce' mode='unix'><address>{address}</address></ffsocket>
  <system_template>
    <labels> [ PREFIX, TEMP ] </labels>
    <instance> [ cold, 300 ] </instance>
    <instance> [ hot, 900 ] </instance>
    <template>
    <system prefix='PREFIX'>
      <initialize nbeads='1'>
        <file mode='xyz' units='angstrom'> init.xyz </file>
        <velocities mode='thermal' units='kelvin'> TEMP </velocities>
      </initialize>
      <forces><force forcefield='equiforce'/></forces>
      <ensemble><temperature units='kelvin'> TEMP </temperature></ensemble>
      <motion mode='dynamics'>
        <dynamics mode='nvt'>
          <timestep units='femtosecond'> 1.0 </timestep>
          <thermostat mode='langevin'><tau units='femtosecond'> 50 </tau></thermostat>
        </dynamics>
      </motion>
    </system>
    </template>
  </system_template>
  <smotion mode='remd'><remd><stride> 2 </stride></remd></smotion>
</simulation>
"""


def test_replica_exchange_through_ipi(model_file, tmp_path):
    """i-PI's replica exchange (two replicas of a 32-atom cell at 300 and 900 K, exchanges
    tried every 2 steps, 12 steps) served by one driver: 2 x 13 structures evaluated, both
    replicas' properties written, and exchanges accepted (i-PI's swap record)."""
    atoms = make_fcc_cu(repeat=2, seed=3)
    address = f"equiforce-{uuid.uuid4().hex[:12]}"
    text = REMD_INPUT.format(steps=12, address=address)
    evaluations = serve(tmp_path, text, atoms, EquiforceCalculator(model_file))
    assert evaluations == 26
    for name in ("cold", "hot"):
        assert len(np.loadtxt(tmp_path / f"{name}_sim.out", ndmin=2)) == 13
    swaps = np.loadtxt(tmp_path / "sim.remd_idx", ndmin=2)
    assert len(swaps) >= 2  # the start and at least one accepted exchange
