"""Teachers: bad specs fail early and clearly; labels and HVPs of both teacher kinds agree."""

from __future__ import annotations

import numpy as np
import pytest

from equiforce.md.calculator import EquiforceCalculator
from equiforce.models.io import save_model
from equiforce.testing.models import tiny_mace
from equiforce.testing.structures import make_fcc_cu, make_molecule
from equiforce.testing.tolerances import TOL
from equiforce.workflows.distill.config import TeacherConfig
from equiforce.workflows.distill.hessian import probe_vectors
from equiforce.workflows.distill.teacher import (
    CalculatorTeacher,
    ModelTeacher,
    TeacherError,
    load_teacher,
)


@pytest.mark.parametrize(
    ("calculator", "kwargs", "message"),
    [
        ("no_such_module_xyz:Calc", {}, "cannot import 'no_such_module_xyz'"),
        ("ase.calculators.emt:NoSuchCalc", {}, "has no 'NoSuchCalc'"),
        ("ase.atoms:Atoms", {}, "not an ASE calculator class"),
        ("ase.calculators.mixing:SumCalculator", {"bogus": 1}, "keyword arguments"),
        ("tests.workflows.distill.calculators:BrokenCalculator", {}, "SCF did not converge"),
        ("tests.workflows.distill.calculators:NaNCalculator", {}, "non-finite labels"),
    ],
)
def test_bad_calculator_specs_fail_with_a_clear_message(calculator, kwargs, message):
    """Bad calculator specs fail with a clear message."""
    config = TeacherConfig(calculator=calculator, kwargs=kwargs)
    with pytest.raises(TeacherError, match=message):
        load_teacher(config, make_fcc_cu(repeat=1))


def test_calculator_failing_on_the_probe_structure_is_reported():
    """Calculator failing on the probe structure is reported."""
    # EMT has no parameters for uranium: the probe structure fails before any labelling.
    atoms = make_fcc_cu(repeat=1)
    atoms.numbers[0] = 92
    with pytest.raises(TeacherError, match="failed on a probe structure"):
        load_teacher(TeacherConfig(calculator="ase.calculators.emt:EMT"), atoms)


def test_missing_model_file_is_reported(tmp_path):
    """Missing model file is reported."""
    with pytest.raises(TeacherError, match="does not exist"):
        load_teacher(TeacherConfig(model=str(tmp_path / "nope.pt")), make_fcc_cu(repeat=1))


def test_fingerprints_follow_the_weights_and_the_spec(tmp_path):
    """Fingerprints follow the weights and the spec."""
    path = save_model(tiny_mace(), tmp_path / "a.pt")
    other = save_model(tiny_mace(seed=12), tmp_path / "b.pt")
    probe = make_fcc_cu(repeat=1)
    first = load_teacher(TeacherConfig(model=str(path)), probe).fingerprint
    assert first == load_teacher(TeacherConfig(model=str(path)), probe).fingerprint
    assert first != load_teacher(TeacherConfig(model=str(other)), probe).fingerprint
    emt = load_teacher(TeacherConfig(calculator="ase.calculators.emt:EMT"), probe)
    emt_kw = load_teacher(
        TeacherConfig(calculator="ase.calculators.emt:EMT", kwargs={"asap_cutoff": True}), probe
    )
    assert emt.fingerprint != emt_kw.fingerprint
    # A file named by a keyword argument (a model file) enters by content, not by name.
    weights = tmp_path / "weights.bin"
    spec = TeacherConfig(calculator="ase.calculators.emt:EMT", kwargs={"files": [str(weights)]})
    weights.write_bytes(b"1")
    before = load_teacher(spec, probe).fingerprint
    weights.write_bytes(b"2")
    assert load_teacher(spec, probe).fingerprint != before


def test_model_teacher_matches_its_calculator_labels_and_hvps():
    """Model teacher matches its calculator labels and hvps."""
    model = tiny_mace()
    teacher = ModelTeacher(model, "m", "tiny")
    as_calculator = CalculatorTeacher(EquiforceCalculator(model), "c", "tiny calc")
    structures = [make_molecule("CH3CH2OH", seed=1), make_fcc_cu(repeat=1, seed=2)]
    batched = teacher.label(structures, features=True)
    single = as_calculator.label(structures)
    for a, b in zip(batched, single, strict=True):
        np.testing.assert_allclose(a.energy, b.energy, atol=TOL.fp64.atol, rtol=TOL.fp64.rtol)
        np.testing.assert_allclose(a.forces, b.forces, atol=TOL.fp64.atol)
        assert a.features is not None and a.features.shape[0] == len(a.forces)
    assert batched[0].stress is None and batched[1].stress.shape == (3, 3)
    np.testing.assert_allclose(batched[1].stress, single[1].stress, atol=TOL.fp64.atol)
    atoms = structures[0]
    vectors = probe_vectors("k", len(atoms), 2, seed=0)
    exact = teacher.hvp(atoms, vectors, step=0.0)
    finite = as_calculator.hvp(atoms, vectors, step=1e-4)
    np.testing.assert_allclose(finite, exact, atol=TOL.finite_difference.atol * 100)
