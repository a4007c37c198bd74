"""Parity of ``from_mace_torch`` conversions with mace-torch itself (energies and forces)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

mace_modules = pytest.importorskip("mace.modules")

from e3nn import o3  # noqa: E402  (mace must be imported before e3nn)

from equiforce.data import keys  # noqa: E402
from equiforce.data.batch import collate  # noqa: E402
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph  # noqa: E402
from equiforce.interop import from_mace_torch  # noqa: E402
from equiforce.interop.default_dtype import default_dtype  # noqa: E402
from equiforce.interop.mace_torch import mace_inputs  # noqa: E402
from equiforce.testing.structures import (  # noqa: E402
    make_periodic_hco,
    peer_parity_structures,
    squeezed,
)
from equiforce.testing.tolerances import TOL  # noqa: E402

TYPE_NAMES = ("H", "C", "O")
R_MAX = 4.0


def _mace_model(
    max_L: int = 1,  # noqa: N803
    first_residual: bool = False,
    dtype: torch.dtype = torch.float64,
    **overrides,
):
    """A random small ScaleShiftMACE (a plain MACE if the scale-shift options are None).

    Built under mace's default-dtype convention; every weight gets extra noise so no
    structure of the initialisation hides a conversion error.
    """
    first = (
        "RealAgnosticResidualInteractionBlock" if first_residual else "RealAgnosticInteractionBlock"
    )
    hidden = "16x0e + 16x1o" + (" + 16x2e" if max_L == 2 else "")
    options = {
        "r_max": R_MAX,
        "num_bessel": 6,
        "num_polynomial_cutoff": 5,
        "max_ell": 3,
        "interaction_cls": mace_modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        "interaction_cls_first": mace_modules.interaction_classes[first],
        "num_interactions": 2,
        "num_elements": len(TYPE_NAMES),
        "hidden_irreps": o3.Irreps(hidden),
        "MLP_irreps": o3.Irreps("16x0e"),
        "atomic_energies": np.array([-13.6, -1029.8, -2041.9]),
        "avg_num_neighbors": 6.5,
        "atomic_numbers": [1, 6, 8],
        "correlation": 3,
        "gate": torch.nn.functional.silu,
        "radial_MLP": [32, 32, 32],
        "atomic_inter_scale": 1.7,
        "atomic_inter_shift": -0.3,
    }
    options.update(overrides)
    options = {name: value for name, value in options.items() if value is not None}
    cls = mace_modules.ScaleShiftMACE if "atomic_inter_scale" in options else mace_modules.MACE
    with default_dtype(dtype), torch.random.fork_rng():
        torch.manual_seed(7 + max_L)
        model = cls(**options)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def default_model():
    """The float64, max_L = 1 model with mace's default blocks (shared by several tests)."""
    return _mace_model()


def _batch(atoms_list: list[Atoms]) -> dict[str, torch.Tensor]:
    graphs = [
        configuration_to_graph(atoms_to_configuration(a), TYPE_NAMES, R_MAX) for a in atoms_list
    ]
    return collate(graphs)


def _compare(model, dtype: torch.dtype, tolerance) -> None:
    potential = from_mace_torch(model)
    batch = _batch(peer_parity_structures())
    reference = model(mace_inputs(batch, len(TYPE_NAMES), dtype), compute_force=True)
    ours = potential(batch, compute_forces=True)
    torch.testing.assert_close(
        ours[keys.ENERGY], reference["energy"].to(torch.float64), **tolerance.__dict__
    )
    torch.testing.assert_close(
        ours[keys.FORCES], reference["forces"].to(torch.float64), **tolerance.__dict__
    )


def test_float64_conversion_matches_energies_and_forces(default_model):
    _compare(default_model, torch.float64, TOL.peer_parity)


def test_float64_conversion_with_l2_features_matches():
    _compare(_mace_model(max_L=2), torch.float64, TOL.peer_parity)


def test_residual_first_interaction_matches():
    _compare(_mace_model(first_residual=True), torch.float64, TOL.peer_parity)


def test_plain_mace_with_one_interaction_matches():
    plain = {"atomic_inter_scale": None, "atomic_inter_shift": None, "num_interactions": 1}
    model = _mace_model(max_L=0, **plain)
    _compare(model, torch.float64, TOL.peer_parity)
    assert from_mace_torch(model).spec.scale == 1.0


def test_float32_conversion_matches():
    _compare(_mace_model(dtype=torch.float32), torch.float32, TOL.fp32)


def test_float32_built_model_cast_to_float64_converts():
    # mace-torch's coupling tensors keep float32 rounding after .double(); conversion must
    # still succeed, agreeing to the precision mace's own coefficients carry
    model = _mace_model(dtype=torch.float32).double()
    _compare(model, torch.float64, TOL.fp32)


def test_stress_of_periodic_cells_matches(default_model):
    potential = from_mace_torch(default_model)
    batch = _batch([make_periodic_hco(3), make_periodic_hco(5)])
    inputs = mace_inputs(batch, len(TYPE_NAMES), torch.float64)
    reference = default_model(inputs, compute_force=True, compute_stress=True)
    ours = potential(batch, compute_forces=True, compute_stress=True)
    torch.testing.assert_close(ours[keys.STRESS], reference["stress"], **TOL.peer_parity.__dict__)


def test_spec_is_read_from_the_module(default_model):
    spec = from_mace_torch(default_model).spec
    assert spec.type_names == TYPE_NAMES and spec.r_max == R_MAX and spec.num_radial_basis == 6
    assert (spec.num_channels, spec.max_L, spec.max_ell, spec.correlation) == (16, 1, 3, 3)
    assert spec.radial_mlp == (32, 32, 32) and spec.avg_num_neighbors == 6.5
    assert spec.atomic_energies == (-13.6, -1029.8, -2041.9)
    assert (spec.scale, spec.shift) == (1.7, -0.3) and not spec.first_interaction_residual


def test_pair_repulsion_converts_and_edited_constants_are_named():
    """A mace-built model with the ZBL ``pair_repulsion`` (plain and scale-shift) equals
    mace-torch on squeezed structures (close contacts, where ZBL acts); one whose ZBL
    constants differ from mace's defaults is refused, naming the constant."""
    for plain in ({}, {"atomic_inter_scale": None, "atomic_inter_shift": None}):
        model = _mace_model(pair_repulsion=True, **plain)
        potential = from_mace_torch(model)
        assert potential.spec.pair_repulsion
        batch = _batch(
            [squeezed(a) for a in peer_parity_structures()] + [squeezed(make_periodic_hco(3))]
        )
        # mace's ZBL multiplies k Z_i Z_j in the default dtype; its calculator sets it
        with default_dtype(torch.float64):
            reference = model(
                mace_inputs(batch, len(TYPE_NAMES), torch.float64), compute_force=True
            )
        ours = potential(batch, compute_forces=True)
        without = from_mace_torch(_mace_model(**plain))(batch, compute_forces=False)
        assert (ours[keys.ENERGY] - without[keys.ENERGY]).abs().min() > 0.3  # eV: ZBL acts
        torch.testing.assert_close(ours[keys.ENERGY], reference["energy"], **TOL.fp64.__dict__)
        torch.testing.assert_close(ours[keys.FORCES], reference["forces"], **TOL.fp64.__dict__)
    with torch.no_grad():
        model.pair_repulsion_fn.a_exp.fill_(0.25)
    with pytest.raises(ValueError, match="pair_repulsion's a_exp differs"):
        from_mace_torch(model)


def test_agnesi_distance_transform_converts():
    """A model with mace's Agnesi distance transform (and the ZBL repulsion, as mace's later
    foundation models have both) equals mace-torch; its (q, p, a) are read from the module."""
    model = _mace_model(distance_transform="Agnesi", pair_repulsion=True)
    with torch.no_grad():  # not mace's defaults: the values must be read, not assumed
        model.radial_embedding.distance_transform.q.fill_(1.1)
    potential = from_mace_torch(model)
    assert potential.spec.distance_transform == "agnesi"
    assert potential.spec.agnesi == pytest.approx((1.1, 4.5791, 1.0805))
    batch = _batch(peer_parity_structures() + [make_periodic_hco(3)])
    with default_dtype(torch.float64):  # mace's ZBL multiplies in the default dtype
        reference = model(mace_inputs(batch, len(TYPE_NAMES), torch.float64), compute_force=True)
    ours = potential(batch, compute_forces=True)
    torch.testing.assert_close(ours[keys.ENERGY], reference["energy"], **TOL.fp64.__dict__)
    torch.testing.assert_close(ours[keys.FORCES], reference["forces"], **TOL.fp64.__dict__)
    plain = from_mace_torch(_mace_model(pair_repulsion=True))(batch, compute_forces=False)
    assert (ours[keys.ENERGY] - plain[keys.ENERGY]).abs().min() > 1e-3  # eV: it acts


@pytest.mark.parametrize("max_L", [1, 0])
def test_each_head_of_a_multi_head_model_converts(max_L):  # noqa: N803
    """mace's multi-head fine-tuning makes heads ["pt_head", "Default"] sharing the layers,
    each with its readout outputs (the non-linear readout's hidden blocks), E0s, scale and
    shift: each head converted alone equals mace-torch evaluated with that head."""
    heads = ["pt_head", "Default"]
    e0 = np.array([[-13.6, -1029.8, -2041.9], [-13.1, -1030.4, -2040.2]])
    model = _mace_model(
        max_L=max_L,
        heads=heads,
        atomic_energies=e0,
        atomic_inter_scale=[1.7, 0.8],
        atomic_inter_shift=[-0.3, 0.25],
    )
    batch = _batch(peer_parity_structures())
    energies = []
    for index, head in enumerate(heads):
        potential = from_mace_torch(model, head=head)
        assert potential.spec.atomic_energies == tuple(e0[index])
        inputs = mace_inputs(batch, len(TYPE_NAMES), torch.float64, head=index)
        reference = model(inputs, compute_force=True)
        ours = potential(batch, compute_forces=True)
        tolerance = TOL.peer_parity.__dict__
        torch.testing.assert_close(ours[keys.ENERGY], reference["energy"], **tolerance)
        torch.testing.assert_close(ours[keys.FORCES], reference["forces"], **tolerance)
        energies.append(ours[keys.ENERGY])
    assert (energies[0] - energies[1]).abs().min() > 0.1  # eV: the heads differ
    with pytest.raises(ValueError, match="has the heads pt_head, Default: choose one"):
        from_mace_torch(model)
    with pytest.raises(ValueError, match="head 'dft' is not one of the model's heads"):
        from_mace_torch(model, head="dft")


@pytest.mark.parametrize(
    "options",
    [
        {"use_agnostic_product": True},
        {"use_last_readout_only": True},
        {"use_agnostic_product": True, "use_last_readout_only": True, "num_interactions": 3},
    ],
)
def test_agnostic_products_and_last_readout_only_convert(options):
    """mace-torch's ``use_agnostic_product`` (one symmetric contraction for all elements:
    copied to each) and ``use_last_readout_only`` (no readout before the last layer: ours
    zero) convert exactly: energies and forces to the peer tolerance."""
    model = _mace_model(**options)
    _compare(model, torch.float64, TOL.peer_parity)


def test_a_correlation_order_per_layer_converts():
    """mace-torch's ``correlation`` list (one order per product basis): ``MACESpec.
    correlation`` per layer, energies and forces to the peer tolerance."""
    model = _mace_model(correlation=[2, 3, 1], num_interactions=3)
    assert from_mace_torch(model).spec.correlation == (2, 3, 1)
    _compare(model, torch.float64, TOL.peer_parity)


def test_unsupported_options_are_named():
    model = _mace_model(distance_transform="Soft", max_ell=1, correlation=1, radial_MLP=[8])
    with pytest.raises(ValueError, match=r"distance_transform \(SoftTransform\)"):
        from_mace_torch(model)


_NONLINEAR = "RealAgnosticResidualNonLinearInteractionBlock"


@pytest.mark.parametrize(
    "first, max_L, layers",
    [(_NONLINEAR, 1, 2), ("RealAgnosticResidualInteractionBlock", 1, 2), (_NONLINEAR, 2, 3)],
    ids=["all-nonlinear", "later-nonlinear", "l2-three-layers"],
)
def test_nonlinear_interactions_convert(first, max_L, layers):  # noqa: N803
    """mace-torch's non-linear residual block (its MH foundation models': species embeddings
    of both ends in LayerNorm radial MLPs, the learnt density normalisation, the gate; with
    ``apply_cutoff=False``) in every layer, in the later ones, with l = 2 features and three
    layers: energies and forces equal mace-torch's to the peer tolerance (measured 1e-11 eV
    and 1e-11 eV/Å; the gate's Monte-Carlo constants left unfolded, or the radial MLP's path
    signs left off its bias, fail it)."""
    nonlinear = mace_modules.interaction_classes[_NONLINEAR]
    model = _mace_model(
        max_L=max_L,
        interaction_cls=nonlinear,
        interaction_cls_first=mace_modules.interaction_classes[first],
        num_interactions=layers,
        apply_cutoff=False,
    )
    spec = from_mace_torch(model).spec
    assert spec.nonlinear_interactions == ("all" if first == _NONLINEAR else "later")
    assert not spec.apply_cutoff
    _compare(model, torch.float64, TOL.peer_parity)


_DENSITY = "RealAgnosticDensityInteractionBlock"
_DENSITY_RESIDUAL = "RealAgnosticDensityResidualInteractionBlock"


@pytest.mark.parametrize(
    "first, options",
    [
        (_DENSITY, {}),
        (_DENSITY_RESIDUAL, {"apply_cutoff": False}),
        (_DENSITY, {"distance_transform": "Agnesi", "pair_repulsion": True}),
    ],
    ids=["plain-first", "residual-first-envelope-after", "mpa0-like-agnesi-zbl"],
)
def test_density_blocks_convert(first, options):
    """mace-torch's density-normalised blocks (``RealAgnosticDensity[Residual]Interaction
    Block``: MACE-MPA-0's and MACE-OMAT-0's, with its Agnesi transform and ZBL): each message
    divided by ``1 + sum_j tanh(d(r_ij)^2)``, d a one-layer net of the radial features, the
    envelope on it where it follows the basis; energies and forces equal mace-torch's to the
    peer tolerance, its d's noise included."""
    model = _mace_model(
        interaction_cls=mace_modules.interaction_classes[_DENSITY_RESIDUAL],
        interaction_cls_first=mace_modules.interaction_classes[first],
        **options,
    )
    spec = from_mace_torch(model).spec
    assert spec.density_normalization
    assert spec.first_interaction_residual == (first == _DENSITY_RESIDUAL)
    _compare(model, torch.float64, TOL.peer_parity)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "max_L": 2,
            "num_interactions": 3,
            "heads": ["pt_head", "Default"],
            "atomic_energies": np.array([[-13.6, -1029.8, -2041.9], [-13.1, -1030.4, -2040.2]]),
            "atomic_inter_scale": [1.7, 0.8],
            "atomic_inter_shift": [-0.3, 0.25],
        },
        {
            "interaction_cls": mace_modules.interaction_classes[_NONLINEAR],
            "interaction_cls_first": mace_modules.interaction_classes[_NONLINEAR],
            "apply_cutoff": False,
        },
    ],
    ids=["default-blocks", "l2-three-layers-two-heads", "nonlinear-blocks"],
)
def test_a_last_layer_that_keeps_its_irreps_converts(options):
    """``keep_last_layer_irreps`` (the last layer's skip, contraction and linear give every
    hidden irrep, not only the scalars): its scalars alone reach the readout, so the 0e
    outputs' weights convert to our scalar last layer, energies and forces to the peer
    tolerance (each head of a two-head model). The 1o blocks of the skip taken instead of
    the 0e ones (the same shape) fail it."""
    heads = options.get("heads", [None])
    model = _mace_model(keep_last_layer_irreps=True, **options)
    assert model.products[-1].linear.irreps_out.lmax == options.get("max_L", 1)
    for head in heads:
        potential = from_mace_torch(model, head=head)
        assert potential.spec.num_interactions == options.get("num_interactions", 2)
        batch = _batch(peer_parity_structures())
        inputs = mace_inputs(batch, len(TYPE_NAMES), torch.float64, heads.index(head))
        reference = model(inputs, compute_force=True)
        ours = potential(batch, compute_forces=True)
        for key, theirs in ((keys.ENERGY, "energy"), (keys.FORCES, "forces")):
            torch.testing.assert_close(ours[key], reference[theirs], **TOL.peer_parity.__dict__)


def test_density_and_plain_default_blocks_mixed_are_refused():
    model = _mace_model(interaction_cls_first=mace_modules.interaction_classes[_DENSITY])
    with pytest.raises(ValueError, match="interaction blocks .* are not supported"):
        from_mace_torch(model)


def test_residual_blocks_with_the_envelope_after_the_mlp_convert():
    """``apply_cutoff=False`` with mace's default blocks: the envelope multiplies the radial
    MLP's output, not its input: converts to the peer tolerance."""
    _compare(_mace_model(apply_cutoff=False), torch.float64, TOL.peer_parity)


def test_a_nonlinear_block_with_the_envelope_first_is_refused():
    """With ``apply_cutoff=True`` the non-linear block is discontinuous at r_max (its MLPs'
    biases and species embeddings): refused by name (``MACESpec`` refuses it too, so no
    such model reaches ``to_mace_torch``)."""
    nonlinear = mace_modules.interaction_classes[_NONLINEAR]
    model = _mace_model(interaction_cls=nonlinear, interaction_cls_first=nonlinear)
    with pytest.raises(ValueError, match="with apply_cutoff=True .* is not supported"):
        from_mace_torch(model)


@pytest.mark.parametrize(
    "first, edge_first",
    [("RealAgnosticResidualInteractionBlock", True), (_NONLINEAR, True), (_NONLINEAR, False)],
    ids=["residual-edge-first", "nonlinear-edge-first", "nonlinear-edge-later"],
)
def test_edge_irreps_convert(first, edge_first):
    """mace-torch's ``edge_irreps`` (the up-projection and convolution on other irreps than the
    node features': here 32 channels up to l = 2 for 16-channel l <= 1 features) and
    ``use_edge_irreps_first`` (the first layer up to its scalars), with the default and the
    non-linear blocks: energies and forces equal mace-torch's (measured 3e-12 eV, 2e-13
    eV/Å)."""
    block = mace_modules.interaction_classes[first]
    options = {"apply_cutoff": False} if first == _NONLINEAR else {}
    model = _mace_model(
        interaction_cls=block,
        interaction_cls_first=block,
        edge_irreps=o3.Irreps("32x0e + 32x1o + 32x2e"),
        use_edge_irreps_first=edge_first,
        **options,
    )
    spec = from_mace_torch(model).spec
    assert spec.edge_irreps == "32x0e+32x1o+32x2e" and spec.edge_irreps_first == edge_first
    _compare(model, torch.float64, TOL.peer_parity)


_STATE_SPECS = {
    "total_charge": {
        "type": "categorical",
        "per": "graph",
        "in_dim": 1,
        "emb_dim": 8,
        "num_classes": 21,
        "offset": 10,
        "key": "charge",
    },
    "total_spin": {"type": "continuous", "per": "graph", "in_dim": 1, "emb_dim": 6},
}


def _charged_and_spinning() -> list[Atoms]:
    """The parity structures, each with another (charge, multiplicity) in ``info``."""
    frames = peer_parity_structures()
    for k, atoms in enumerate(frames):
        atoms.info.update(charge=(-1, 0, 2, 1)[k % 4], spin=(2, 3, 1, 4)[k % 4])
    return frames


@pytest.mark.parametrize("nonlinear", [True, False], ids=["nonlinear-blocks", "default-blocks"])
def test_charge_and_spin_embeddings_convert(nonlinear):
    """mace-torch's ``embedding_specs`` (MACE-OMOL's: the total charge and spin per structure,
    here one categorical and one continuous) with ``use_embedding_readout``, on the non-linear
    and the default blocks: energies and forces of structures of different charges and
    multiplicities (read from ``info``) equal mace-torch's; the state changes the energy;
    ``to_mace_torch`` gives back a mace-torch model with the same numbers."""
    from equiforce.interop.mace_torch_export import to_mace_torch

    blocks = {}
    if nonlinear:
        blocks = {"interaction_cls": mace_modules.interaction_classes[_NONLINEAR]}
        blocks["apply_cutoff"] = False
    model = _mace_model(**blocks, embedding_specs=_STATE_SPECS, use_embedding_readout=True)
    potential = from_mace_torch(model)
    assert potential.spec.embedding_readout
    assert potential.energy_model.graph_inputs == ("total_charge", "total_spin")
    frames = _charged_and_spinning()
    batch = _batch(frames)
    assert batch[keys.TOTAL_CHARGE].tolist() == [a.info["charge"] for a in frames]
    ours = potential(batch, compute_forces=True)
    tolerance = TOL.peer_parity.__dict__
    for mace_model in (model, to_mace_torch(potential)):
        inputs = mace_inputs(batch, len(TYPE_NAMES), torch.float64)
        reference = mace_model(inputs, compute_force=True)
        torch.testing.assert_close(ours[keys.ENERGY], reference["energy"], **tolerance)
        torch.testing.assert_close(ours[keys.FORCES], reference["forces"], **tolerance)
    neutral = potential(_batch(peer_parity_structures()), compute_forces=False)
    assert (neutral[keys.ENERGY] - ours[keys.ENERGY]).abs().min() > 1e-3
