"""MACE builder: spec validation and round trips, dtypes, outputs, parameters, blocks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from scipy.spatial.transform import Rotation

from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.models import MODELS, build_model
from equiforce.models.io import load_model, save_model
from equiforce.models.mace import MACESpec, build_mace
from equiforce.models.registry import spec_from_dict
from equiforce.nn.mace import Product
from equiforce.nn.mace.layout import NODE_LAYOUT
from equiforce.o3 import Irreps, wigner_D
from equiforce.testing.structures import make_molecule
from equiforce.testing.tolerances import TOL

TYPES = ("H", "C", "O")


def _spec(**changes) -> MACESpec:
    base = MACESpec(
        type_names=TYPES,
        num_channels=8,
        max_ell=2,
        radial_mlp=(16, 16),
        avg_num_neighbors=5.0,
        atomic_energies=(-1.0, -2.0, -3.0),
    )
    return dataclasses.replace(base, **changes)


def _batch() -> dict[str, torch.Tensor]:
    molecules = [make_molecule("CH3CH2OH", seed=0), make_molecule("H2O", seed=1)]
    return collate(
        [configuration_to_graph(atoms_to_configuration(a), TYPES, 5.0) for a in molecules]
    )


def test_mace_is_registered():
    assert MODELS["mace"].spec_type is MACESpec and MODELS["mace"].build is build_mace


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("max_L", [0, 1, 2])
def test_model_runs_with_float64_energies_and_scalar_features(dtype, max_L):  # noqa: N803
    model = build_model("mace", _spec(dtype=dtype, max_L=max_L))
    batch = _batch()
    out = model(batch, extra_outputs=("node_features",))
    assert all(p.dtype == getattr(torch, dtype) for p in model.parameters())
    assert out[keys.NODE_ENERGY].dtype == torch.float64 and out[keys.ENERGY].shape == (2,)
    assert out["node_features"].shape == (batch[keys.POSITIONS].shape[0], 8 * 2)
    assert torch.isfinite(out[keys.FORCES]).all()


def test_float32_model_agrees_with_float64_model():
    batch = _batch()
    e64 = build_model("mace", _spec(dtype="float64"))(batch)[keys.ENERGY]
    e32 = build_model("mace", _spec(dtype="float32"))(batch)[keys.ENERGY]
    torch.testing.assert_close(e32, e64, atol=TOL.fp32.atol, rtol=TOL.fp32.rtol)


def test_node_features_are_rotation_invariant():
    model = build_model("mace", _spec(max_L=2))
    atoms = make_molecule("CH3CH2OH", seed=3)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ Rotation.random(random_state=2).as_matrix().T
    features = [
        model(
            collate([configuration_to_graph(atoms_to_configuration(a), TYPES, 5.0)]),
            extra_outputs=("node_features",),
        )
        for a in (atoms, rotated)
    ]
    torch.testing.assert_close(features[0]["node_features"], features[1]["node_features"])


def test_parameter_count_matches_the_architecture():
    spec = MACESpec(
        type_names=TYPES,
        num_channels=4,
        max_L=0,
        max_ell=1,
        correlation=1,
        num_interactions=1,
        num_radial_basis=3,
        radial_mlp=(5,),
        first_interaction_residual=False,
    )
    # plain first interaction: embedding 3*4; linear_up 4*4;
    # radial 3*5 + 5*(paths 0e*0e, 0e*1o: 2*4);
    # linear (mid 4x0e+4x1o -> 4x0e+4x1o) 2*16; skip per species 3*(16+16);
    # contraction 3 species * 1 weight * 4 channels; product linear 16; readout 4
    expected = 12 + 16 + (15 + 40) + 32 + 96 + 12 + 16 + 4
    model = build_model("mace", spec)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_default_spec_has_a_mace_sized_parameter_count():
    model = build_model("mace", MACESpec(type_names=TYPES))
    count = sum(p.numel() for p in model.parameters())
    assert 100_000 < count < 300_000


def test_spec_round_trips_through_a_plain_dict():
    spec = _spec(max_L=2, seed=4, first_interaction_residual=False)
    values = {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()
    }
    assert spec_from_dict(MACESpec, values) == spec
    model = build_model("mace", values)
    assert model.spec == spec and model.type_names == list(TYPES)


def test_each_layer_may_have_its_own_correlation_order(tmp_path):
    """``correlation`` as one order per layer (mace-torch's list): each product basis of its
    layer's order; a YAML list reads as the tuple, and the model file keeps it."""
    values = {**dataclasses.asdict(_spec()), "correlation": [3, 1]}
    model = build_model("mace", values)
    assert model.spec.correlation == (3, 1)
    orders = [p.contraction.descriptor.correlation for p in model.energy_model.products]
    assert orders == [3, 1]
    loaded = load_model(save_model(model, tmp_path / "model.pt"))
    assert loaded.spec.correlation == (3, 1)
    batch = _batch()
    assert torch.equal(loaded(batch)[keys.ENERGY], model(batch)[keys.ENERGY])


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"max_L": 3}, "max_L"),
        ({"correlation": 0}, "correlation"),
        ({"correlation": (3, 2, 1)}, "correlation has 3 orders for 2 interactions"),
        ({"correlation": (3, 4)}, r"correlation must be an integer in \[1, 3\], got 4"),
        ({"atomic_energies": (1.0,)}, "atomic_energies"),
        ({"dtype": "float16"}, "dtype"),
        ({"type_names": ("H", "H")}, "type_names"),
        ({"r_max": -1.0}, "r_max"),
        ({"radial_mlp": (0,)}, "radial_mlp"),
        ({"scale": float("nan")}, "scale"),
        ({"distance_transform": "soft"}, "distance_transform must be null or 'agnesi'"),
        ({"agnesi": (1.0, 2.0)}, "agnesi must be three finite numbers"),
        ({"nonlinear_interactions": "first"}, "nonlinear_interactions must be one of"),
        ({"nonlinear_interactions": "all"}, "nonlinear_interactions needs apply_cutoff false"),
        ({"edge_irreps": "8xq"}, "edge_irreps '8xq' are not irreps"),
        ({"edge_irreps_first": True}, "edge_irreps_first needs edge_irreps"),
    ],
)
def test_invalid_specs_are_rejected_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        _spec(**changes)


def test_building_is_seeded_and_leaves_global_state_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    default_dtype = torch.get_default_dtype()
    first = build_model("mace", _spec(seed=5)).state_dict()
    assert torch.equal(torch.get_rng_state(), state) and torch.get_default_dtype() == default_dtype
    second = build_model("mace", _spec(seed=5)).state_dict()
    other = build_model("mace", _spec(seed=6)).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(
        first["energy_model.embedding.weight"], other["energy_model.embedding.weight"]
    )


def test_atomic_energies_and_scale_shift_enter_the_energy():
    batch = _batch()
    plain = build_model("mace", _spec(atomic_energies=(), scale=1.0, shift=0.0))(batch)
    scaled = build_model("mace", _spec(scale=2.0, shift=0.5))(batch)
    e0 = torch.tensor([-1.0, -2.0, -3.0], dtype=torch.float64)[batch[keys.ATOM_TYPE]]
    expected = e0 + 2.0 * plain[keys.NODE_ENERGY] + 0.5
    torch.testing.assert_close(scaled[keys.NODE_ENERGY], expected)


@pytest.mark.parametrize("reflect", [False, True])
def test_product_block_is_equivariant(reflect):
    irreps_in, irreps_out = Irreps("4x0e+4x1o+4x2e"), Irreps("4x0e+4x1o")
    product = Product(irreps_in, irreps_out, 3, 2, torch.Generator().manual_seed(0))
    matrix = torch.tensor(Rotation.random(random_state=1).as_matrix()) * (-1 if reflect else 1)
    det = float(torch.linalg.det(matrix))

    def representation(irreps: Irreps) -> torch.Tensor:
        """The rotation on features in MACE's ``ir_mul`` layout: ``D (x) 1`` per block."""
        assert NODE_LAYOUT == "ir_mul"
        blocks = []
        for mul, ir in irreps:
            rotation = wigner_D(ir.l, matrix * det) * (det if ir.p == -1 else 1.0)
            blocks.append(torch.kron(rotation, torch.eye(mul, dtype=rotation.dtype)))
        return torch.block_diag(*blocks)

    x = torch.randn(
        5, irreps_in.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    sc = torch.randn(
        5, irreps_out.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    atom_type = torch.tensor([0, 1, 1, 0, 1])
    out = product(x, atom_type, sc)
    rotated = product(x @ representation(irreps_in).T, atom_type, sc @ representation(irreps_out).T)
    torch.testing.assert_close(rotated, out @ representation(irreps_out).T, atol=1e-11, rtol=0)


@pytest.mark.parametrize("which", ["all", "later"])
def test_nonlinear_interactions_are_continuous_at_the_cutoff(which):
    """The non-linear block's MLPs see the ends' species, non-zero at r_max; with the
    envelope on their outputs (``apply_cutoff`` false) an H atom crossing the cutoff of
    ethanol's O changes the energy continuously: by 1e-9 eV at most over 2e-9 Å (the other
    neighbours' forces give ~1e-11; leaving the density uncut jumps by ~1e-4 eV)."""
    from equiforce.md.calculator import EquiforceCalculator
    from equiforce.testing.models import tiny_mace

    model = tiny_mace(nonlinear_interactions=which, apply_cutoff=False)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("_embedding") or name.endswith("beta"):
                parameter.normal_(generator=torch.Generator().manual_seed(1))
    molecule = make_molecule("CH3CH2OH", seed=1)
    oxygen = molecule.positions[molecule.get_chemical_symbols().index("O")]
    direction = oxygen - molecule.get_center_of_mass()
    direction /= (direction**2).sum() ** 0.5
    energies = []
    for delta in (-1e-9, 1e-9):
        atoms = molecule.copy()
        atoms.append("H")
        atoms.positions[-1] = oxygen + direction * (model.r_max + delta)
        atoms.calc = EquiforceCalculator(model)
        energies.append(atoms.get_potential_energy())
    assert abs(energies[0] - energies[1]) < 1e-9


def test_nonlinear_edge_mlps_equal_the_mlps_of_the_concatenated_ends():
    """``NonLinearInteraction.edge_mlps`` forms the MLPs' first layers from a table per species
    pair and folds the envelope into the last layer: equal (float64, 1e-12) to mace-torch's
    reading, each ``LayerNormMLP`` on ``[basis, source embedding, target embedding]`` with
    its outputs times the envelope, for every ordered pair of five species."""
    from equiforce.nn.mace.embedding import split_envelope
    from equiforce.testing.models import tiny_mace

    model = tiny_mace(nonlinear_interactions="all", apply_cutoff=False)
    interaction = model.energy_model.interactions[0]
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in interaction.parameters():
            parameter.normal_(generator=generator)
    n_types = interaction.source_embedding.shape[0]
    sender_type = torch.arange(n_types).repeat_interleave(n_types)
    receiver_type = torch.arange(n_types).repeat(n_types)
    n_radial = interaction.radial_mlp.sizes[0] - 2 * interaction.source_embedding.shape[1] + 1
    edge_radial = torch.rand(len(sender_type), n_radial, generator=generator, dtype=torch.float64)
    weights, density = interaction.edge_mlps(edge_radial, sender_type, receiver_type)

    basis, envelope = split_envelope(edge_radial, apply_cutoff=False)
    scale = n_types**-0.5
    ends = torch.cat(
        [
            basis,
            interaction.source_embedding[sender_type] * scale,
            interaction.target_embedding[receiver_type] * scale,
        ],
        dim=1,
    )
    torch.testing.assert_close(weights, interaction.radial_mlp(ends) * envelope, atol=1e-12, rtol=0)
    expected_density = torch.tanh(interaction.density_mlp(ends) ** 2) * envelope
    torch.testing.assert_close(density, expected_density, atol=1e-12, rtol=0)


@pytest.mark.parametrize("sizes", [(6, 16, 16, 5), (6, 5)], ids=["deep", "one-layer"])
def test_radial_mlp_row_scale_is_its_output_times_the_factors(sizes):
    """The envelope after the radial MLP (``apply_cutoff`` false) enters before its last
    matmul: equal to scaling the output, also for a net of one layer."""
    from equiforce.nn.mace.mlp import RadialMLP

    generator = torch.Generator().manual_seed(0)
    mlp = RadialMLP(sizes, generator)
    x = torch.randn(30, sizes[0], generator=generator, dtype=torch.float64)
    factors = torch.rand(30, 1, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(mlp(x, row_scale=factors), mlp(x) * factors, atol=1e-13, rtol=0)
