"""Shared physics test suite: every model family subclasses ``ModelTestSuite``.

A subclass provides ``make_model(dtype)``, a small randomly initialised ``Potential`` whose
type names include H, C, O, Cu and Au. The suite checks the model contract (``check_model``;
layer by layer with a halo exchange equals the whole structure), E(3) and permutation
symmetry, forces and stress against finite differences, batching, additivity of separated
parts, model files, and float32 operation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from equiforce.data import keys
from equiforce.models import check_model, load_model, save_model
from equiforce.testing import checks
from equiforce.testing.structures import (
    make_fcc_cu,
    make_molecule,
    make_slab,
    make_triclinic_cu,
)
from equiforce.testing.tolerances import TOL
from tests.models.halo import assert_halo_run_equals_whole


def assert_close(actual, expected, tol, what: str) -> None:
    """``np.testing.assert_allclose`` with a named tolerance."""
    np.testing.assert_allclose(actual, expected, atol=tol.atol, rtol=tol.rtol, err_msg=what)


class ModelTestSuite:
    """Family-independent model tests; subclasses implement ``make_model``."""

    def make_model(self, dtype: torch.dtype):
        """Return a small random ``Potential`` in ``dtype``."""
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def model64(cls):
        return cls().make_model(torch.float64)

    @pytest.fixture(scope="class")
    @classmethod
    def structures(cls):
        return {
            "molecule": make_molecule("CH3CH2OH", seed=1),
            "periodic": make_triclinic_cu(seed=2),
        }

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
    def test_model_satisfies_the_contract(self, model64, dtype):
        model = model64 if dtype == torch.float64 else self.make_model(dtype)
        assert check_model(model) is model

    @pytest.mark.parametrize("kind", ["molecule", "periodic"])
    def test_local_atoms_with_halo_exchange_equal_the_whole_structure(
        self, model64, structures, kind
    ):
        assert_halo_run_equals_whole(model64.energy_model, structures[kind])

    @pytest.mark.parametrize("kind", ["molecule", "periodic"])
    @pytest.mark.parametrize("reflect", [False, True])
    def test_energy_invariant_and_forces_equivariant_under_o3(
        self, model64, structures, kind, reflect
    ):
        atoms = structures[kind]
        matrix = checks.random_orthogonal(seed=3, reflect=reflect)
        moved = checks.transformed(atoms, matrix, translation=np.array([0.3, -1.2, 2.5]))
        ref, out = checks.predict(model64, [atoms]), checks.predict(model64, [moved])
        assert_close(out[keys.ENERGY], ref[keys.ENERGY], TOL.fp64, "energy")
        assert_close(out[keys.FORCES], ref[keys.FORCES] @ matrix.T, TOL.fp64, "forces")

    @pytest.mark.parametrize("kind", ["molecule", "periodic"])
    def test_energy_invariant_and_forces_equivariant_under_translation(
        self, model64, structures, kind
    ):
        atoms = structures[kind]
        moved = checks.transformed(atoms, np.eye(3), translation=np.array([5.1, -3.3, 0.7]))
        ref, out = checks.predict(model64, [atoms]), checks.predict(model64, [moved])
        assert_close(out[keys.ENERGY], ref[keys.ENERGY], TOL.fp64, "energy")
        assert_close(out[keys.FORCES], ref[keys.FORCES], TOL.fp64, "forces")

    @pytest.mark.parametrize("kind", ["molecule", "periodic"])
    def test_energy_invariant_and_forces_equivariant_under_permutation(
        self, model64, structures, kind
    ):
        atoms = structures[kind]
        permutation = np.random.default_rng(4).permutation(len(atoms))
        ref = checks.predict(model64, [atoms])
        out = checks.predict(model64, [checks.permuted(atoms, permutation)])
        assert_close(out[keys.ENERGY], ref[keys.ENERGY], TOL.fp64, "energy")
        assert_close(out[keys.FORCES], ref[keys.FORCES][permutation], TOL.fp64, "forces")

    @pytest.mark.parametrize("kind", ["molecule", "periodic"])
    def test_forces_are_negative_energy_gradient(self, model64, structures, kind):
        atoms = structures[kind]
        analytic = checks.predict(model64, [atoms])[keys.FORCES]
        numeric = checks.finite_difference_forces(model64, atoms)
        assert_close(analytic, numeric, TOL.finite_difference, "forces vs finite differences")

    def test_stress_is_strain_derivative(self, model64, structures):
        atoms = structures["periodic"]
        analytic = checks.predict(model64, [atoms], stress=True)[keys.STRESS][0]
        numeric = checks.finite_difference_stress(model64, atoms)
        assert_close(analytic, numeric, TOL.finite_difference, "stress vs finite differences")
        assert_close(analytic, analytic.T, TOL.fp64, "stress symmetry")

    def test_mixed_pbc_slab_forces_are_negative_energy_gradient(self, model64):
        atoms = make_slab(seed=5)[:6]
        atoms.pbc = [True, True, False]
        analytic = checks.predict(model64, [atoms])[keys.FORCES]
        numeric = checks.finite_difference_forces(model64, atoms)
        assert_close(analytic, numeric, TOL.finite_difference, "slab forces")

    def test_batch_equals_graphs_one_by_one(self, model64, structures):
        group = [structures["molecule"], structures["periodic"], make_molecule("H2O", seed=6)]
        batched = checks.predict(model64, group)
        start = 0
        for index, atoms in enumerate(group):
            single = checks.predict(model64, [atoms])
            stop = start + len(atoms)
            assert_close(batched[keys.ENERGY][index], single[keys.ENERGY][0], TOL.fp64, "E")
            assert_close(batched[keys.FORCES][start:stop], single[keys.FORCES], TOL.fp64, "F")
            start = stop

    def test_far_apart_parts_add_up(self, model64):
        water, ethanol = make_molecule("H2O", seed=7), make_molecule("CH3CH2OH", seed=8)
        pair = water.copy()
        shifted = ethanol.copy()
        shifted.positions += np.array([4.0 * model64.r_max * 3, 0.0, 0.0])
        pair += shifted
        together = checks.predict(model64, [pair])[keys.ENERGY][0]
        apart = sum(checks.predict(model64, [m])[keys.ENERGY][0] for m in (water, ethanol))
        assert_close(together, apart, TOL.fp64, "energy of separated parts")

    def test_save_load_round_trip(self, model64, structures, tmp_path):
        path = save_model(model64, tmp_path / "model.pt")
        loaded = load_model(path)
        assert loaded.family == model64.family and loaded.spec == model64.spec
        for kind in ("molecule", "periodic"):
            ref = checks.predict(model64, [structures[kind]], stress=kind == "periodic")
            out = checks.predict(loaded, [structures[kind]], stress=kind == "periodic")
            for name in ref:
                np.testing.assert_array_equal(out[name], ref[name], err_msg=name)

    def test_float32_model_runs_with_float64_outputs(self, model64, structures):
        model32 = self.make_model(torch.float32)
        assert checks.model_dtype_matches(model32, torch.float32)
        assert checks.model_dtype_matches(model64, torch.float64)
        model32.load_state_dict({k: v.float() for k, v in model64.state_dict().items()})
        atoms = structures["periodic"]
        ref = checks.predict(model64, [atoms], stress=True)
        out = checks.predict(model32, [atoms], stress=True)
        for name in (keys.ENERGY, keys.FORCES, keys.STRESS):
            assert out[name].dtype == np.float64, name
        scale = np.abs(ref[keys.FORCES]).max() + 1.0
        assert_close(out[keys.FORCES] / scale, ref[keys.FORCES] / scale, TOL.fp32, "forces")
        n_atoms = len(atoms)
        assert_close(out[keys.ENERGY] / n_atoms, ref[keys.ENERGY] / n_atoms, TOL.fp32, "E/atom")

    def test_empty_of_edges_structure_is_finite(self, model64):
        atoms = make_fcc_cu(repeat=1, seed=9)[:1]
        atoms.pbc = False
        atoms.set_cell(np.zeros((3, 3)))
        out = checks.predict(model64, [atoms])
        assert np.isfinite(out[keys.ENERGY]).all()
        np.testing.assert_array_equal(out[keys.FORCES], 0.0)

    def test_unknown_element_is_named_in_the_error(self, model64):
        atoms = make_molecule("CH3CH2OH", seed=10)
        atoms.numbers[2] = 26  # Fe, not among the model's species
        with pytest.raises(ValueError, match="element Fe"):
            checks.predict(model64, [atoms])
