"""``to_nequip_allegro``: equiforce -> nequip-allegro -> equiforce is exact; nequip agrees.

Runs in the environment with nequip + nequip-allegro (``.venv-nequip``,
``make test-interop-nequip``).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("allegro")

from equiforce.data import keys  # noqa: E402
from equiforce.data.batch import collate  # noqa: E402
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph  # noqa: E402
from equiforce.interop import from_nequip_allegro, to_nequip_allegro  # noqa: E402
from equiforce.testing.models import tiny_allegro, tiny_mace  # noqa: E402
from equiforce.testing.structures import (  # noqa: E402
    make_periodic_hco,
    peer_parity_structures,
    squeezed,
)
from equiforce.testing.tolerances import TOL  # noqa: E402
from equiforce.workflows.bench.peers import nequip_call  # noqa: E402

TYPE_NAMES = ("H", "C", "O")
PER_TYPE = {
    "type_scales": (1.0, 2.0, 0.5),
    "per_type_avg_num_neighbors": (3.0, 6.0, 5.0),
    "pair_r_max": (3.0, 3.5, 3.8, 3.5, 4.0, 3.0, 3.8, 3.0, 4.0),
    "tp_path_channel_coupling": False,
}


def _model(dtype: torch.dtype = torch.float64, **overrides):
    """A tiny random Allegro whose weights all carry extra noise."""
    options = {
        "type_names": TYPE_NAMES,
        "atomic_energies": (-1.5, -2.5, -3.5),
        "avg_num_neighbors": 6.0,
        "scale": 1.3,
        **overrides,
    }
    model = tiny_allegro(dtype, **options)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(0.3 * noise)
    return model


def _assert_round_trip(model) -> None:
    back = from_nequip_allegro(to_nequip_allegro(model))
    for name, value in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], value, **TOL.fp64.__dict__, msg=name)
    for field in ("l_max", "parity", "num_layers", "num_tensor_features", "atomic_energies"):
        assert getattr(back.spec, field) == getattr(model.spec, field), field
    assert back.spec.pair_r_max == pytest.approx(model.spec.pair_r_max)


def _assert_nequip_agrees(model, tolerance, squeeze: bool = False) -> None:
    structures = peer_parity_structures() + [make_periodic_hco(4)]
    if squeeze:  # close contacts, where a ZBL repulsion acts
        structures = [squeezed(a) for a in structures]
    graphs = [
        configuration_to_graph(atoms_to_configuration(a), TYPE_NAMES, 4.0) for a in structures
    ]
    batch = collate(graphs)
    energy, forces = nequip_call(model, batch, "inference")()
    ours = model(batch, compute_forces=True)
    assert ours[keys.FORCES].abs().max() > 0.1  # a wrong weight would show
    torch.testing.assert_close(energy.double(), ours[keys.ENERGY], **tolerance.__dict__)
    torch.testing.assert_close(forces.double(), ours[keys.FORCES], **tolerance.__dict__)


@pytest.mark.parametrize(
    "overrides",
    [{"l_max": 2}, {"parity": False, "num_layers": 3, "mlp_nonlinearity": "mish"}, PER_TYPE],
)
def test_round_trip_is_exact_and_nequip_agrees_in_float64(overrides):
    model = _model(**overrides)
    _assert_round_trip(model)
    _assert_nequip_agrees(model, TOL.fp64)


def test_the_lammps_form_zbl_exports_as_nequips_zbl():
    """``pair_repulsion_form="lammps"`` is nequip's ZBL pair potential: round trip exact,
    nequip equal on squeezed structures (per-type cutoffs too); the "mace" form is refused."""
    model = _model(pair_repulsion=True, pair_repulsion_form="lammps", **PER_TYPE)
    _assert_round_trip(model)
    assert from_nequip_allegro(to_nequip_allegro(model)).spec.pair_repulsion
    _assert_nequip_agrees(model, TOL.fp64, squeeze=True)
    with pytest.raises(ValueError, match="nequip's ZBL is the 'lammps' form only"):
        to_nequip_allegro(_model(pair_repulsion=True))


def test_float32_export_agrees():
    _assert_nequip_agrees(_model(torch.float32, l_max=2), TOL.fp32)


def test_a_policy_cast_model_exports_in_its_parameters_dtype():
    """bf16-mixed on a float64 spec leaves float32 parameters: nequip's copy is float32 and
    agrees with the model in plain float32."""
    from equiforce.precision import MODES, apply_policy, from_name

    cast = apply_policy(_model(torch.float64, l_max=2), from_name("bf16-mixed"))
    exported = to_nequip_allegro(cast)
    assert {p.dtype for p in exported.parameters()} == {torch.float32}
    _assert_nequip_agrees(apply_policy(cast, MODES["float32"]), TOL.fp32)


def test_export_leaves_global_state_alone():
    state, dtype = torch.random.get_rng_state(), torch.get_default_dtype()
    to_nequip_allegro(_model())
    assert torch.equal(torch.random.get_rng_state(), state) and torch.get_default_dtype() == dtype


def test_unequal_hidden_widths_and_other_families_are_refused():
    with pytest.raises(ValueError, match="equal hidden widths.*latent_mlp_hidden"):
        to_nequip_allegro(_model(latent_mlp_hidden=(16, 8)))
    with pytest.raises(ValueError, match="exports Allegro models"):
        to_nequip_allegro(tiny_mace())
