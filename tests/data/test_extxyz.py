"""Reading extxyz: label locations, key names, stress formats, pbc kinds and validation errors."""

from __future__ import annotations

import warnings

import ase.io
import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list

from equiforce.data import (
    CloseAtomsWarning,
    DataError,
    KeySpec,
    atoms_to_configuration,
    configuration_to_graph,
    read_configurations,
    type_indices,
)
from equiforce.testing.structures import (
    emt_labelled,
    make_fcc_cu,
    make_molecule,
    make_slab,
    make_triclinic_cu,
)
from equiforce.testing.tolerances import TOL

CU_HEADER = 'Lattice="3.6 0 0 0 3.6 0 0 0 3.6" pbc="T T T"'


def _two_cu(extra_info: str = "", forces: str = "0 0 0", header: str = CU_HEADER) -> str:
    """A two-atom Cu frame with energy and forces; ``extra_info`` is appended to line 2."""
    return (
        f"2\n{header} Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.0 {extra_info}\n"
        f"Cu 0 0 0 {forces}\nCu 1.8 1.8 0 0 0 0\n"
    )


def test_standard_keys_come_from_the_single_point_calculator(write_frames):
    path = write_frames([emt_labelled(make_fcc_cu(seed=s)) for s in range(3)])
    configs = read_configurations(path, require_energy=True, require_forces=True)
    frames = ase.io.read(path, ":")  # the reference: what ASE itself reads back
    assert len(configs) == 3
    for config, atoms in zip(configs, frames, strict=True):
        np.testing.assert_allclose(config.energy, atoms.get_potential_energy(), **vars(TOL.fp64))
        np.testing.assert_allclose(config.forces, atoms.get_forces(), **vars(TOL.fp64))
        np.testing.assert_allclose(config.stress, atoms.get_stress(voigt=False), **vars(TOL.fp64))
        assert config.pbc.all()
    assert configs[2].source.endswith("frames.xyz, frame 2")


def test_custom_keys_are_read_from_info_and_arrays(write_frames):
    atoms = emt_labelled(make_triclinic_cu())
    plain = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
    plain.info["REF_energy"] = atoms.get_potential_energy()
    plain.arrays["REF_forces"] = atoms.get_forces()
    plain.info["REF_stress"] = atoms.get_stress(voigt=False)
    plain.info["weight"] = 2.5
    keys = KeySpec(
        energy_key="REF_energy",
        forces_key="REF_forces",
        stress_key="REF_stress",
        weight_key="weight",
    )
    path = write_frames([plain])
    (config,) = read_configurations(path, keys, require_forces=True)
    (reference,) = ase.io.read(path, ":")
    assert reference.calc is None  # custom names stay in info/arrays
    assert config.energy == reference.info["REF_energy"]
    np.testing.assert_allclose(config.forces, reference.arrays["REF_forces"], **vars(TOL.fp64))
    np.testing.assert_allclose(
        config.stress, np.reshape(reference.info["REF_stress"], (3, 3)), **vars(TOL.fp64)
    )
    assert config.weight == 2.5 and config.energy_weight == 1.0


def test_total_charge_and_spin_are_read_and_checked(write_text):
    """The frames' net charge and spin multiplicity (``info``, default keys ``charge`` and
    ``spin``, or mace-torch's ``total_charge``/``total_spin`` when named), neutral singlets
    without them; a multiplicity below 1 or a text is named with the file, frame and field."""
    path = write_text(_two_cu("charge=-1 spin=2") + _two_cu() + _two_cu("total_charge=2"))
    configs = read_configurations(path)
    assert [(c.total_charge, c.total_spin) for c in configs] == [(-1, 2), (0, 1), (0, 1)]
    mace_keys = KeySpec(total_charge_key="total_charge", total_spin_key="total_spin")
    assert read_configurations(path, mace_keys)[2].total_charge == 2
    for bad, field in (("spin=0.5", "spin"), ("charge=minus", "charge")):
        path = write_text(_two_cu() + _two_cu(bad))
        with pytest.raises(DataError, match=rf"frame 1: field '{field}' \(total_"):
            read_configurations(path)


@pytest.mark.parametrize(
    "stress_text",
    ['s="1 6 5 6 2 4 5 4 3"', 's="1 2 3 4 5 6"'],
    ids=["nine-row-major", "voigt-six-ase-order"],
)
def test_stress_formats_give_the_same_tensor(write_text, stress_text):
    (config,) = read_configurations(write_text(_two_cu(stress_text)), KeySpec(stress_key="s"))
    expected = np.array([[1.0, 6.0, 5.0], [6.0, 2.0, 4.0], [5.0, 4.0, 3.0]])
    np.testing.assert_array_equal(config.stress, expected)


def test_virials_convert_to_stress(write_text):
    (config,) = read_configurations(write_text(_two_cu('virials="1 0 0 0 2 0 0 0 3"')))
    volume = 3.6**3
    np.testing.assert_allclose(np.diag(config.stress), -np.array([1.0, 2.0, 3.0]) / volume)


def test_consistent_stress_and_virials_are_accepted(write_text):
    virial = "-46.656 0 0 0 0 0 0 0 0"  # = -stress * volume for stress_xx = 1, V = 3.6^3
    text = _two_cu(f's="1 0 0 0 0 0 0 0 0" virials="{virial}"')
    (config,) = read_configurations(write_text(text), KeySpec(stress_key="s"))
    assert config.stress[0, 0] == 1.0


def test_molecule_with_dummy_lattice_has_zero_cell(write_frames):
    molecule = emt_labelled(make_molecule("H2O"))
    molecule.set_cell([50.0, 50.0, 50.0])
    molecule.pbc = False
    (config,) = read_configurations(write_frames([molecule]), require_energy=True)
    assert not config.pbc.any()
    np.testing.assert_array_equal(config.cell, np.zeros((3, 3)))
    assert config.stress is None


def test_slab_keeps_its_cell_and_mixed_pbc(write_frames):
    slab = emt_labelled(make_slab())
    (config,) = read_configurations(write_frames([slab]), require_forces=True)
    assert config.pbc.tolist() == [True, True, False]
    np.testing.assert_allclose(config.cell, slab.cell.array)
    graph = configuration_to_graph(config, ["Cu"], 4.5)
    assert graph["edge_index"].shape[1] == len(ase_neighbor_list("i", slab, 4.5))
    assert not graph["edge_shift"][:, 2].any()


def test_missing_labels_are_none_unless_required(write_frames):
    (config,) = read_configurations(write_frames([make_fcc_cu()]))
    assert config.energy is None and config.forces is None and config.stress is None


def test_index_selects_frames_and_names_them(write_frames):
    path = write_frames([emt_labelled(make_fcc_cu(seed=s)) for s in range(5)])
    configs = read_configurations(path, index="1::2")
    assert [c.source.split(", ")[-1] for c in configs] == ["frame 1", "frame 3"]


# --- bad input: one test per case --------------------------------------------------------


def test_missing_file_raises_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.xyz"):
        read_configurations(tmp_path / "absent.xyz")


def test_unreadable_path_raises_naming_it(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_configurations(tmp_path)  # a directory


def test_garbage_file_raises_naming_frame_0(write_text):
    with pytest.raises(DataError, match="frame 0: cannot parse"):
        read_configurations(write_text("hello\nworld\n"))


def test_truncated_second_frame_raises_naming_frame_1(write_text):
    text = _two_cu() + "3\nProperties=species:S:1:pos:R:3\nCu 0 0 0\nCu 1 1 1\n"
    with pytest.raises(DataError, match="frame 1: cannot parse"):
        read_configurations(write_text(text))


def test_empty_file_raises(write_text):
    with pytest.raises(DataError, match="no frames"):
        read_configurations(write_text(""))


def test_missing_energy_key_raises(write_text):
    path = write_text(_two_cu() + _two_cu().replace("energy=-1.0", ""))
    with pytest.raises(DataError, match=r"frame 1: missing energy key 'energy'"):
        read_configurations(path, require_energy=True)


def test_missing_forces_key_raises(write_text):
    with pytest.raises(DataError, match=r"frame 0: missing forces key 'REF_forces'"):
        read_configurations(
            write_text(_two_cu()), KeySpec(forces_key="REF_forces"), require_forces=True
        )


def test_nan_position_raises(write_text):
    text = _two_cu().replace("Cu 1.8 1.8 0", "Cu nan 1.8 0")
    with pytest.raises(DataError, match=r"frame 0: field 'positions' contains NaN"):
        read_configurations(write_text(text))


def test_nan_energy_raises(write_text):
    text = _two_cu().replace("energy=-1.0", "energy=nan")
    with pytest.raises(DataError, match=r"frame 0: field 'energy' contains NaN"):
        read_configurations(write_text(text))


def test_inf_forces_raise(write_text):
    with pytest.raises(DataError, match=r"frame 0: field 'forces' contains NaN or inf"):
        read_configurations(write_text(_two_cu(forces="0 inf 0")))


def test_nan_stress_raises(write_text):
    with pytest.raises(DataError, match=r"frame 0: field 's' contains NaN"):
        read_configurations(write_text(_two_cu('s="1 2 3 4 5 nan"')), KeySpec(stress_key="s"))


def test_forces_of_wrong_shape_raise(write_text):
    text = (
        f"2\n{CU_HEADER} Properties=species:S:1:pos:R:3:REF_forces:R:2 energy=-1\n"
        "Cu 0 0 0 0 0\nCu 1.8 1.8 0 0 0\n"
    )
    with pytest.raises(DataError, match=r"'REF_forces' must have shape \(2, 3\)"):
        read_configurations(write_text(text), KeySpec(forces_key="REF_forces"))


def test_stress_of_wrong_shape_raises(write_text):
    with pytest.raises(DataError, match=r"frame 0: field 's' must have 3x3, 9 or 6"):
        read_configurations(write_text(_two_cu('s="1 2 3 4"')), KeySpec(stress_key="s"))


def test_stress_key_ase_cannot_parse_raises_naming_the_frame(write_text):
    # ASE itself insists on 9 values for the standard ``stress`` key.
    with pytest.raises(DataError, match=r"frame 0: cannot parse extended XYZ: .*stress"):
        read_configurations(write_text(_two_cu('stress="1 2 3 4 5 6"')))


def test_stress_on_a_molecule_raises(write_text):
    header = 'Lattice="50 0 0 0 50 0 0 0 50" pbc="F F F"'
    text = _two_cu('stress="1 2 3 4 5 6 7 8 9"', header=header)
    with pytest.raises(DataError, match="frame 0: field 'stress' given for a non-periodic"):
        read_configurations(write_text(text))


def test_stress_and_virials_that_disagree_raise(write_text):
    text = _two_cu('stress="1 0 0 0 1 0 0 0 1" virials="1 0 0 0 1 0 0 0 1"')
    with pytest.raises(DataError, match="disagree"):
        read_configurations(write_text(text))


def test_empty_frame_raises(write_text):
    text = _two_cu() + f"0\n{CU_HEADER} energy=0.0\n"
    with pytest.raises(DataError, match=r"frame 1: empty frame \(0 atoms\)"):
        read_configurations(write_text(text))


def test_negative_weight_raises(write_text):
    with pytest.raises(DataError, match="config_weight"):
        read_configurations(write_text(_two_cu("config_weight=-1")))


def test_close_atoms_warn_naming_them(write_text):
    text = _two_cu().replace("Cu 1.8 1.8 0", "Cu 0.05 0 0")
    with pytest.warns(CloseAtomsWarning, match=r"frame 0: .*atoms 0 \(Cu\) and 1 \(Cu\)"):
        (config,) = read_configurations(write_text(text))
    assert config.n_atoms == 2  # kept, not dropped


def test_coincident_atoms_raise(write_text):
    text = _two_cu().replace("Cu 1.8 1.8 0", "Cu 0 0 0")
    with pytest.raises(DataError, match=r"frame 0: .*atoms 0 \(Cu\) and 1 \(Cu\) coincide"):
        read_configurations(write_text(text))


def test_atom_coincident_with_a_periodic_image_raises(write_text):
    text = _two_cu().replace("Cu 1.8 1.8 0", "Cu 3.6 0 0")
    with pytest.raises(DataError, match=r"\(periodic image\) coincide"):
        read_configurations(write_text(text))


def test_degenerate_periodic_cell_raises(write_text):
    header = 'Lattice="3.6 0 0 0 0 0 0 0 3.6" pbc="T T T"'
    with pytest.raises(DataError, match=r"frame 0: field 'cell'.*linearly dependent"):
        read_configurations(write_text(_two_cu(header=header)))


def test_well_separated_atoms_do_not_warn(write_frames):
    path = write_frames([emt_labelled(make_fcc_cu())])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_configurations(path)


def test_unknown_element_at_inference_raises_naming_it():
    config = atoms_to_configuration(make_molecule("CH3CH2OH"), source="md step 7")
    with pytest.raises(ValueError, match=r"md step 7: element O \(atom \d+\) is unknown"):
        type_indices(config.atomic_numbers, ["H", "C"], config.source)
    with pytest.raises(ValueError, match="unknown to the model"):
        configuration_to_graph(config, ["H", "C"], 3.0)


def test_atoms_to_configuration_zeroes_a_molecule_cell():
    molecule = make_molecule()
    molecule.set_cell([20.0, 20.0, 20.0])
    config = atoms_to_configuration(molecule)
    np.testing.assert_array_equal(config.cell, np.zeros((3, 3)))
