"""Convert nequip-allegro 0.8 ``AllegroModel`` modules into equiforce ``Potential``s.

Supported: models built by ``allegro.model.AllegroModel`` / ``FullAllegroModel`` with the
two-body Bessel scalar embedding (``TwoBodyBesselScalarEmbed``, fixed Bessel roots), one
nonlinearity for every MLP, bias-free MLPs without parametrisations, per-irrep channel
weights, spherical-harmonic tensor basis; global or per-type cutoffs, average neighbour
counts, energy scales and shifts; no pair potential but nequip's ZBL (metal units, the
model's envelope order: ``ModelSpec.pair_repulsion_form="lammps"``); float32 or float64.
Everything is read from the module; energies and forces agree to ~1e-12 in float64.

Weights copy 1:1 with two foldings: each MLP layer's constant ``alpha`` (which depends on
nequip's ``forward_normalize``) is folded into its weight relative to ours, and the sign
of each Clebsch–Gordan path (e3nn's ``wigner_3j`` vs equiforce's canonical sign) goes into
that path's tensor-product weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from equiforce.data import keys
from equiforce.interop.default_dtype import default_dtype
from equiforce.models.allegro import AllegroSpec
from equiforce.models.potential import Potential
from equiforce.models.registry import build_model
from equiforce.nn.allegro.mlp import AllegroMLP
from equiforce.nn.zbl import FORMS as ZBL_FORMS
from equiforce.o3.allegro_tp import tensor_track_irreps

__all__ = [
    "from_nequip_allegro",
    "nequip_global_state",
    "nequip_inputs",
    "spec_from_nequip_allegro",
]

_ACTIVATIONS = {nn.SiLU: "silu", nn.Mish: "mish", nn.GELU: "gelu", nn.Identity: None}
_COUPLING_MATCH = 100  # |ours - theirs| of a path's coefficients, in eps of nequip's dtype


def from_nequip_allegro(model: nn.Module, species: Sequence[str] | None = None) -> Potential:
    """Convert a nequip-allegro ``AllegroModel`` into an equiforce ``Potential``.

    Args:
        model: the nequip ``GraphModel`` (or its ``SequentialGraphNetwork``), not compiled.
        species: the chemical symbol of each of the model's types, in its type order (the
            inverse of nequip's ``chemical_species_to_atom_type_map``); None: the type names
            are the symbols. They are the converted model's type names.

    Returns:
        A ``Potential`` of family ``"allegro"`` in the source dtype, in eval mode.

    Raises:
        ImportError: nequip-allegro is not installed.
        ValueError: the model uses an option equiforce does not implement (named).
    """
    import allegro.nn  # noqa: F401  (lazy: nequip-allegro is optional)

    layers = _layers(model)
    spec = spec_from_nequip_allegro(model, species)
    potential = build_model("allegro", spec)
    ours = potential.energy_model
    state = {}
    state.update(_embedding_state(layers, ours.embedding))
    state.update(_layer_state(layers["allegro"], ours.layers))
    state.update(_mlp_state(layers["edge_readout"].mlp_module, ours.readout, "readout"))
    ours.load_state_dict({k: v.detach().to(spec.torch_dtype) for k, v in state.items()})
    return potential.eval()


@contextlib.contextmanager
def nequip_global_state() -> Iterator[None]:
    """Within the block nequip's global state is initialised (its model builders and loaders
    require it); torch's default dtype, which that sets to float64, is restored after it."""
    from nequip.utils.global_state import global_state_initialized, set_global_state

    with default_dtype():
        if not global_state_initialized():
            set_global_state(allow_tf32=False)
        yield


def nequip_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """nequip's ``AtomicDataDict`` for our batch (``keys.MODEL_INPUT_KEYS``) of the same
    graphs (nequip's edges run centre -> neighbour with integer cell shifts, as ours)."""
    from nequip.data import AtomicDataDict

    return {
        AtomicDataDict.POSITIONS_KEY: batch[keys.POSITIONS],
        AtomicDataDict.EDGE_INDEX_KEY: batch[keys.EDGE_INDEX],
        AtomicDataDict.EDGE_CELL_SHIFT_KEY: batch[keys.EDGE_SHIFT],
        AtomicDataDict.CELL_KEY: batch[keys.CELL],
        AtomicDataDict.ATOM_TYPE_KEY: batch[keys.ATOM_TYPE],
        AtomicDataDict.BATCH_KEY: batch[keys.BATCH],
        AtomicDataDict.NUM_NODES_KEY: batch[keys.PTR].diff(),
    }


def spec_from_nequip_allegro(model: nn.Module, species: Sequence[str] | None = None) -> AllegroSpec:
    """The ``AllegroSpec`` describing a (supported) nequip-allegro model (``species``: see
    ``from_nequip_allegro``)."""
    layers = _layers(model)
    embed = layers["radial_chemical_embed"]
    module = layers["allegro"]
    scale_shift = layers["per_type_energy_scale_shift"]
    type_names = tuple(scale_shift.type_names)
    if species is not None:
        if len(species) != len(type_names):
            raise ValueError(
                f"{len(species)} species for the model's {len(type_names)} types "
                f"{', '.join(type_names)}"
            )
        type_names = tuple(species)
    if "pair_potential" in layers:
        _check_zbl_species(layers["pair_potential"], type_names)
    n_types = len(type_names)
    l_max, parity = _irreps_settings(layers)
    hidden = {
        name: _mlp_layers(fn)[1]
        for name, fn in (
            ("two_body", layers["scalar_embed_mlp"].mlp_module),
            ("latent", module.latents[0]),
            ("readout", layers["edge_readout"].mlp_module),
        )
    }
    embed_dim = 2 * embed.type_embed.center_embed.weight.shape[1]
    scales = _per_type(scale_shift, "scales", n_types)
    shifts = _per_type(scale_shift, "shifts", n_types)
    avg = (1.0 / module.avg_num_neighbors_norm.norm_const.double().flatten() ** 2).tolist()
    return AllegroSpec(
        type_names=type_names,
        r_max=float(layers["edge_norm"].r_max),
        pair_r_max=_pair_r_max(layers["edge_norm"]),
        l_max=l_max,
        parity=parity,
        num_layers=int(module.num_layers),
        num_scalar_features=int(module.num_scalar_features),
        num_tensor_features=int(module.num_tensor_features),
        radial_chemical_embed_dim=0 if embed_dim == module.num_scalar_features else embed_dim,
        two_body_mlp_hidden=hidden["two_body"],
        latent_mlp_hidden=hidden["latent"],
        readout_mlp_hidden=hidden["readout"],
        mlp_nonlinearity=_common_nonlinearity(layers),
        tp_path_channel_coupling=bool(module.tps[0].path_channel_coupling),
        num_bessels=int(embed.bessel_encode.num_bessels),
        polynomial_cutoff_p=_cutoff_p(embed.bessel_encode.cutoff),
        avg_num_neighbors=avg[0] if len(avg) == 1 else 1.0,
        per_type_avg_num_neighbors=tuple(avg) if len(avg) > 1 else (),
        atomic_energies=tuple(shifts) if shifts is not None else (),
        scale=scales[0] if scales is not None and len(set(scales)) == 1 else 1.0,
        type_scales=tuple(scales) if scales is not None and len(set(scales)) > 1 else (),
        dtype=str(next(module.parameters()).dtype).replace("torch.", ""),
        seed=0,
        pair_repulsion="pair_potential" in layers,
        pair_repulsion_form="lammps",
    )


def _check_zbl(pair_potential: nn.Module, embed: nn.Module) -> None:
    """nequip's ``ZBL`` pair potential is ``equiforce.nn.zbl``'s ``"lammps"`` form when its
    units are metal and its envelope order is the model's; anything else is refused."""
    if type(pair_potential).__name__ != "ZBL":
        raise ValueError(
            f"pair potential {type(pair_potential).__name__} is not supported (nequip's ZBL is)"
        )
    coulomb = 2.0 * float(pair_potential._qqr2exesquare)
    if abs(coulomb - ZBL_FORMS["lammps"].coulomb) > 1e-9:
        raise ValueError(
            f"ZBL in units other than metal (e^2/4 pi eps0 = {coulomb}) is not supported"
        )
    p, model_p = _cutoff_p(pair_potential.cutoff), _cutoff_p(embed.bessel_encode.cutoff)
    if p != model_p:
        raise ValueError(f"ZBL's polynomial_cutoff_p {p} differs from the model's {model_p}")


def _check_zbl_species(pair_potential: nn.Module, type_names: tuple[str, ...]) -> None:
    """nequip's ZBL holds an atomic number per type; ours takes them from the type names."""
    from ase.data import atomic_numbers

    theirs = [round(float(z)) for z in pair_potential.atomic_numbers.flatten()]
    if theirs != [atomic_numbers.get(name) for name in type_names]:
        raise ValueError(
            f"nequip's ZBL has the atomic numbers {theirs} for the types "
            f"{', '.join(type_names)}: give each type's chemical symbol (species=...)"
        )


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    """The named top-level modules of the energy network, after checking support."""
    network = next(
        (m for m in model.modules() if hasattr(m, "allegro") and hasattr(m, "edge_norm")), None
    )
    if network is None:
        raise ValueError("not a nequip-allegro AllegroModel (no 'allegro'/'edge_norm' layers)")
    layers = dict(network.named_children())
    if "pair_potential" in layers:
        _check_zbl(layers["pair_potential"], layers["radial_chemical_embed"])
    embed = layers["radial_chemical_embed"]
    if not hasattr(embed, "bessel_encode"):
        raise ValueError(f"only TwoBodyBesselScalarEmbed is supported, got {type(embed).__name__}")
    weights = embed.bessel_encode.bessel_weights.detach().double().flatten()
    if not torch.equal(weights, torch.arange(1, len(weights) + 1, dtype=torch.float64)):
        raise ValueError("trained Bessel roots (bessel_trainable) are not supported")
    for weighter in (layers["tensor_embed"]._edge_weighter, layers["allegro"]._env_weighter):
        if not weighter.weight_individual_irreps or weighter.alpha != 1.0:
            raise ValueError("only weight_individual_irreps=True with alpha 1 is supported")
    for module in network.modules():
        if torch.nn.utils.parametrize.is_parametrized(module):
            raise ValueError("parametrised MLP weights are not supported")
    return layers


def _irreps_settings(layers: dict[str, nn.Module]) -> tuple[int, bool]:
    irreps_sh = layers["tensor_embed"].irreps_out[layers["tensor_embed"].tensor_basis_out_field]
    l_max = int(irreps_sh.lmax)
    allowed = set(layers["allegro"].tensor_track_allowed_irreps)
    for parity in (True, False):
        ours_sh, ours_allowed = tensor_track_irreps(l_max, parity)
        if ours_sh == irreps_sh and set(ours_allowed) == allowed:
            return l_max, parity
    raise ValueError(f"unsupported irreps: sh {irreps_sh}, tensor track {allowed}")


def _mlp_layers(fn: nn.Module) -> tuple[list[tuple[torch.Tensor, float]], tuple[int, ...], Any]:
    """(weight, alpha) per layer, hidden widths and nonlinearity of a ScalarMLPFunction."""
    if fn.bias:
        raise ValueError("MLPs with biases are not supported")
    mlp = fn.mlp
    if hasattr(mlp, "weights"):  # nequip's DeepLinearMLP: one alpha for the whole product
        weights = list(mlp.weights)
        pairs = [(w, 1.0) for w in weights[:-1]] + [(weights[-1], float(mlp.alpha))]
        return pairs, tuple(w.shape[1] for w in weights[:-1]), None
    pairs = [(m.weight, float(m.alpha)) for m in mlp if hasattr(m, "weight")]
    activations = {_activation_name(m) for m in mlp if not hasattr(m, "weight")}
    if len(activations) > 1:
        raise ValueError(f"mixed nonlinearities in one MLP: {activations}")
    nonlinearity = activations.pop() if activations else None
    return pairs, tuple(w.shape[1] for w, _ in pairs[:-1]), nonlinearity


def _activation_name(module: nn.Module) -> str | None:
    for kind, name in _ACTIVATIONS.items():
        if type(module) is kind:
            return name
    raise ValueError(f"unsupported nonlinearity {type(module).__name__}")


def _common_nonlinearity(layers: dict[str, nn.Module]) -> str | None:
    fns = [layers["scalar_embed_mlp"].mlp_module, layers["edge_readout"].mlp_module]
    fns += list(layers["allegro"].latents)
    found = {_mlp_layers(fn)[2] for fn in fns if fn.num_layers > 1}
    if len(found) > 1:
        raise ValueError(f"equiforce uses one nonlinearity for every MLP, found {found}")
    return found.pop() if found else "silu"


def _mlp_state(fn: nn.Module, ours: AllegroMLP, prefix: str) -> dict[str, torch.Tensor]:
    """Our ``weights.{k}`` with nequip's alpha folded in relative to ours."""
    pairs, _, _ = _mlp_layers(fn)
    if len(pairs) != len(ours.alphas):
        raise ValueError(f"{prefix}: {len(pairs)} layers, expected {len(ours.alphas)}")
    return {
        f"{prefix}.weights.{k}": w.double() * (alpha / ours_alpha)
        for k, ((w, alpha), ours_alpha) in enumerate(zip(pairs, ours.alphas, strict=True))
    }


def _embedding_state(layers: dict[str, nn.Module], ours: nn.Module) -> dict[str, torch.Tensor]:
    type_embed = layers["radial_chemical_embed"].type_embed
    state = {
        "embedding.centre_embed": type_embed.center_embed.weight.double(),
        "embedding.neighbour_embed": type_embed.neighbor_embed.weight.double(),
    }
    pieces = (
        (type_embed.basis_linear, ours.basis_linear, "embedding.basis_linear"),
        (layers["scalar_embed_mlp"].mlp_module, ours.scalar_mlp, "embedding.scalar_mlp"),
        (layers["tensor_embed"].env_embed_linear, ours.tensor_linear, "embedding.tensor_linear"),
    )
    for fn, mlp, prefix in pieces:
        state.update(_mlp_state(fn, mlp, prefix))
    return state


def _layer_state(module: nn.Module, ours: nn.Module) -> dict[str, torch.Tensor]:
    state = _mlp_state(
        module.first_layer_env_embed_projection, ours.first_projection, "layers.first_projection"
    )
    for k, (latent, ours_latent) in enumerate(zip(module.latents, ours.latents, strict=True)):
        state.update(_mlp_state(latent, ours_latent, f"layers.latents.{k}"))
    for k, (tp, ours_tp) in enumerate(zip(module.tps, ours.tps, strict=True)):
        state[f"layers.tps.{k}.weight"] = _tp_weight(tp, ours_tp)
    return state


def _tp_weight(tp: nn.Module, ours: nn.Module) -> torch.Tensor:
    """Weights of a nequip ``Contracter`` in our layout, with per-path sign fixes."""
    weight = tp.weights.detach().double().reshape(ours.descriptor.weight_shape)
    return weight * tp_path_signs(tp, ours)


def tp_path_signs(tp: nn.Module, ours: nn.Module) -> torch.Tensor:
    """(n_paths,) float64 sign of each path's coupling, nequip's relative to ours.

    Raises:
        ValueError: the irreps differ, or a path's coefficients differ beyond a sign.
    """
    desc = ours.descriptor
    if (tuple(tp.irreps_in1), tuple(tp.irreps_out)) != (
        tuple(desc.irreps_in1),
        tuple(desc.irreps_out),
    ):
        raise ValueError(f"tensor-product irreps differ: {tp} vs {desc}")
    theirs = _dense_w3j(tp)
    tolerance = _COUPLING_MATCH * torch.finfo(theirs.dtype).eps
    theirs = theirs.double()
    mine = desc.coupling().reshape(theirs.shape)
    signs = []
    for p in range(len(desc.paths)):
        sign = 1.0 if float((theirs[p] * mine[p]).sum()) >= 0 else -1.0
        if float((theirs[p] - sign * mine[p]).abs().max()) > tolerance:
            raise ValueError(f"path {desc.paths[p]} couplings differ beyond a sign")
        signs.append(sign)
    return torch.tensor(signs, dtype=torch.float64)


def _dense_w3j(tp: nn.Module) -> torch.Tensor:
    """(n_paths, dim1, dim2, dim_out) coefficients of a nequip ``Contracter``."""
    w3j = tp.w3j
    if tp.num_paths == 1:
        w3j = w3j.unsqueeze(0)
    if not tp.w3j_is_ij_diagonal:
        return w3j
    n_paths, dim, dim_out = w3j.shape
    dense = w3j.new_zeros(n_paths, dim, dim, dim_out)
    index = torch.arange(dim)
    dense[:, index, index, :] = w3j
    return dense


def _pair_r_max(edge_norm: nn.Module) -> tuple[float, ...]:
    if not edge_norm._per_edge_type:
        return ()
    return tuple(edge_norm._rmax_recip.double().reciprocal().tolist())


def _cutoff_p(cutoff: nn.Module) -> int:
    p = float(cutoff.p)
    if p != int(p):
        raise ValueError(f"polynomial cutoff p must be an integer, got {p}")
    return int(p)


def _per_type(scale_shift: nn.Module, name: str, n_types: int) -> list[float] | None:
    if not getattr(scale_shift, f"has_{name}"):
        return None
    values = getattr(scale_shift, name).detach().double().flatten().tolist()
    return values * n_types if len(values) == 1 else values
