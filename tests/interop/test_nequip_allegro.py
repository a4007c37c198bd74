"""Parity of ``from_nequip_allegro`` conversions with nequip-allegro itself.

Runs in the environment with nequip + nequip-allegro (``.venv-nequip``); skips elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

pytest.importorskip("allegro")

from allegro.model import AllegroModel  # noqa: E402
from nequip.data import AtomicDataDict, compute_neighborlist_, from_ase  # noqa: E402
from nequip.utils.global_state import set_global_state  # noqa: E402

from equiforce.data import keys  # noqa: E402
from equiforce.interop import from_nequip_allegro  # noqa: E402
from equiforce.testing import checks  # noqa: E402
from equiforce.testing.structures import (  # noqa: E402
    peer_parity_structures,
    squeezed,
)
from equiforce.testing.tolerances import TOL  # noqa: E402

TYPE_NAMES = ("H", "C", "O")
R_MAX = 4.0


def _allegro_model(dtype: str = "float64", seed: int = 3, **overrides):
    """A random small nequip-allegro model; every weight gets extra noise."""
    set_global_state(allow_tf32=False)
    options = {
        "seed": seed,
        "model_dtype": dtype,
        "type_names": list(TYPE_NAMES),
        "r_max": R_MAX,
        "l_max": 2,
        "radial_chemical_embed": {
            "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
            "num_bessels": 6,
            "polynomial_cutoff_p": 6,
        },
        "scalar_embed_mlp_hidden_layers_width": 16,
        "num_layers": 2,
        "num_scalar_features": 16,
        "num_tensor_features": 8,
        "allegro_mlp_hidden_layers_width": 16,
        "readout_mlp_hidden_layers_width": 8,
        "avg_num_neighbors": 5.0,
        "per_type_energy_scales": 1.3,
        "per_type_energy_shifts": {"H": -13.6, "C": -1029.8, "O": -2041.9},
    }
    options.update(overrides)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AllegroModel(**options)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model


def _reference(model, atoms: Atoms) -> dict[str, np.ndarray]:
    data = from_ase(atoms)
    types = torch.tensor([TYPE_NAMES.index(s) for s in atoms.get_chemical_symbols()])
    data[AtomicDataDict.ATOM_TYPE_KEY] = types
    data = compute_neighborlist_(data, R_MAX)
    out = model(data)
    return {
        name: out[key].detach().to(torch.float64).numpy()
        for name, key in (
            (keys.ENERGY, AtomicDataDict.TOTAL_ENERGY_KEY),
            (keys.FORCES, AtomicDataDict.FORCE_KEY),
            (keys.STRESS, AtomicDataDict.STRESS_KEY),
        )
        if key in out
    }


def _compare(model, tolerance) -> None:
    potential = from_nequip_allegro(model)
    for atoms in peer_parity_structures():
        reference = _reference(model, atoms)
        periodic = bool(atoms.pbc.all())
        ours = checks.predict(potential, [atoms], stress=periodic)
        assert np.abs(reference[keys.FORCES]).max() > 0.1  # a conversion error would show
        for name in (keys.ENERGY, keys.FORCES) + ((keys.STRESS,) if periodic else ()):
            np.testing.assert_allclose(
                ours[name].reshape(reference[name].shape),
                reference[name],
                atol=tolerance.atol,
                rtol=tolerance.rtol,
                err_msg=f"{name} of {atoms.get_chemical_formula()}",
            )


def test_float64_conversion_matches_energies_forces_and_stress():
    _compare(_allegro_model(), TOL.peer_parity)


def test_l1_without_parity_and_three_layers_matches():
    _compare(_allegro_model(l_max=1, parity=False, num_layers=3), TOL.peer_parity)


def test_per_type_cutoffs_scales_and_neighbour_counts_match():
    model = _allegro_model(
        per_type_energy_scales={"H": 1.0, "C": 2.0, "O": 0.5},
        avg_num_neighbors={"H": 3.0, "C": 6.0, "O": 5.0},
        per_edge_type_cutoff={"H": 3.0, "C": {"H": 3.5, "O": 3.8}},
        tp_path_channel_coupling=False,
    )
    _compare(model, TOL.peer_parity)


def test_float32_conversion_matches():
    _compare(_allegro_model(dtype="float32"), TOL.fp32)


def test_spec_is_read_from_the_module():
    spec = from_nequip_allegro(_allegro_model()).spec
    assert spec.type_names == TYPE_NAMES and spec.r_max == R_MAX and spec.pair_r_max == ()
    assert (spec.l_max, spec.parity, spec.num_layers) == (2, True, 2)
    assert (spec.num_scalar_features, spec.num_tensor_features, spec.num_bessels) == (16, 8, 6)
    assert spec.two_body_mlp_hidden == (16,) and spec.latent_mlp_hidden == (16,)
    assert spec.readout_mlp_hidden == (8,) and spec.mlp_nonlinearity == "silu"
    assert spec.atomic_energies == (-13.6, -1029.8, -2041.9) and spec.scale == 1.3
    assert spec.avg_num_neighbors == pytest.approx(5.0, rel=1e-14)


ZBL = {
    "_target_": "nequip.nn.pair_potential.ZBL",
    "units": "metal",
    "chemical_species": list(TYPE_NAMES),
}


def test_the_zbl_pair_potential_converts_on_close_contacts():
    """nequip's ZBL (``pair_repulsion_form="lammps"``, cut at the per-type cutoffs too) on
    structures squeezed to 0.7x, where it changes every energy by more than 0.3 eV."""
    cutoffs = {"H": 3.0, "C": {"H": 3.5, "O": 3.8}}
    model = _allegro_model(pair_potential=ZBL, per_edge_type_cutoff=cutoffs)
    potential = from_nequip_allegro(model)
    assert potential.spec.pair_repulsion and potential.spec.pair_repulsion_form == "lammps"
    without = from_nequip_allegro(_allegro_model(per_edge_type_cutoff=cutoffs))
    for atoms in (squeezed(a) for a in peer_parity_structures()):
        reference = _reference(model, atoms)
        ours = checks.predict(potential, [atoms])
        gained = float(ours[keys.ENERGY][0] - checks.predict(without, [atoms])[keys.ENERGY][0])
        assert gained > 0.3, gained
        for name in (keys.ENERGY, keys.FORCES):
            np.testing.assert_allclose(
                ours[name].reshape(reference[name].shape), reference[name], rtol=0, atol=1e-9
            )


def test_unsupported_options_are_named():
    model = _allegro_model(
        pair_potential={
            "_target_": "nequip.nn.pair_potential.LennardJones",
            "lj_sigma": 1.0,
            "lj_epsilon": 0.1,
        }
    )
    with pytest.raises(ValueError, match="pair potential LennardJones is not supported"):
        from_nequip_allegro(model)
    model = _allegro_model(pair_potential={**ZBL, "polynomial_cutoff_p": 8.0})
    with pytest.raises(ValueError, match="ZBL's polynomial_cutoff_p 8 differs from the model's 6"):
        from_nequip_allegro(model)
