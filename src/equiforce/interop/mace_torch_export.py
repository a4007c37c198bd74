"""Export equiforce MACE ``Potential``s to mace-torch 0.3.x ``ScaleShiftMACE`` modules.

The inverse of ``from_mace_torch``: a mace-torch model with the same hyperparameters is built
(in the model's dtype, under mace's default-dtype convention) and every weight is set so that
``from_mace_torch(to_mace_torch(p))`` reproduces ``p``'s weights and energies/forces agree to
~1e-12 in float64. The three basis changes of the import are undone: the normalised-SiLU
ratio is divided out, the Clebsch–Gordan path signs are re-applied to the radial MLP's last
layer, and our non-redundant symmetric-contraction weights are mapped onto mace's redundant
basis by the pseudo-inverse of the import's map (exact, as that map has full row rank).
"""

from __future__ import annotations

import torch

from equiforce.interop.default_dtype import default_dtype
from equiforce.interop.mace_torch import (
    _DENSITY_BLOCKS,
    _LATER_BLOCK,
    _PLAIN_BLOCK,
    NONLINEAR_BLOCK,
    _activation_ratio,
    _gate_factors,
    _layer_norm_mlp_modules,
    _path_signs,
    contraction_mappings,
)
from equiforce.models.mace import MACESpec
from equiforce.models.potential import Potential

__all__ = ["to_mace_torch"]


def to_mace_torch(potential: Potential) -> torch.nn.Module:
    """A mace-torch ``ScaleShiftMACE`` computing the same energies as ``potential``.

    Args:
        potential: an equiforce model of family ``"mace"`` (any dtype; the export keeps it).

    Returns:
        The mace-torch module, in eval mode, on the CPU, in ``potential``'s dtype.

    Raises:
        ImportError: mace-torch is not installed.
        ValueError: ``potential`` is not a MACE model, or its pair repulsion is not
            mace-torch's form.
    """
    import mace.modules  # noqa: F401  (lazy: mace-torch is optional; first, before e3nn)

    if potential.family != "mace":
        raise ValueError(f"to_mace_torch exports MACE models, got family {potential.family!r}")
    spec: MACESpec = potential.spec
    if spec.pair_repulsion and spec.pair_repulsion_form != "mace":
        raise ValueError(
            f"pair_repulsion_form {spec.pair_repulsion_form!r}: mace-torch's pair_repulsion is "
            "the 'mace' form only"
        )
    dtype = spec.torch_dtype
    model = _build(spec, dtype)
    state = {
        k: v.detach().cpu().to(torch.float64)
        for k, v in potential.energy_model.state_dict().items()
    }
    ours = potential.energy_model
    with torch.no_grad():
        _copy(model.node_embedding.linear.weight, state["embedding.weight"])
        if spec.embedding_specs is not None:
            _set_electronic_state(model, state)
        layers = zip(model.interactions, model.products, model.readouts, strict=True)
        for index, (interaction, product, readout) in enumerate(layers):
            _set_interaction(interaction, ours.interactions[index], state, index, dtype)
            _set_product(product, ours.products[index], state, index)
            _set_readout(readout, state, index)
    return model.eval()


def _build(spec: MACESpec, dtype: torch.dtype) -> torch.nn.Module:
    """Random mace-torch ``ScaleShiftMACE`` with ``spec``'s hyperparameters, in ``dtype``."""
    import numpy as np
    from ase.data import atomic_numbers
    from e3nn import o3
    from mace import modules

    def default_block(name: str) -> type:
        return blocks[_DENSITY_BLOCKS[name] if spec.density_normalization else name]

    blocks = modules.interaction_classes
    later = default_block(_LATER_BLOCK)
    if spec.nonlinear_interactions != "none":
        later = blocks[NONLINEAR_BLOCK]
    first = default_block(_LATER_BLOCK if spec.first_interaction_residual else _PLAIN_BLOCK)
    if spec.nonlinear_interactions == "all":
        first = blocks[NONLINEAR_BLOCK]
    hidden = "+".join(f"{spec.num_channels}x{deg}{'eo'[deg % 2]}" for deg in range(spec.max_L + 1))
    energies = spec.atomic_energies or (0.0,) * len(spec.type_names)
    # mace computes its coupling buffers in the default dtype at construction
    with default_dtype(dtype), torch.random.fork_rng():
        model = modules.ScaleShiftMACE(
            r_max=spec.r_max,
            num_bessel=spec.num_radial_basis,
            num_polynomial_cutoff=spec.num_polynomial_cutoff,
            max_ell=spec.max_ell,
            interaction_cls=later,
            interaction_cls_first=first,
            num_interactions=spec.num_interactions,
            num_elements=len(spec.type_names),
            hidden_irreps=o3.Irreps(hidden),
            MLP_irreps=o3.Irreps(f"{spec.readout_mlp_hidden}x0e"),
            atomic_energies=np.array(energies, dtype=np.float64),
            avg_num_neighbors=spec.avg_num_neighbors,
            atomic_numbers=[atomic_numbers[s] for s in spec.type_names],
            correlation=list(spec.correlation)
            if isinstance(spec.correlation, tuple)
            else spec.correlation,
            gate=torch.nn.functional.silu,
            radial_MLP=list(spec.radial_mlp),
            atomic_inter_scale=spec.scale,
            atomic_inter_shift=spec.shift,
            pair_repulsion=spec.pair_repulsion,
            apply_cutoff=spec.apply_cutoff,
            edge_irreps=None if spec.edge_irreps is None else o3.Irreps(spec.edge_irreps),
            use_edge_irreps_first=spec.edge_irreps_first,
            distance_transform="Agnesi" if spec.distance_transform == "agnesi" else "None",
            embedding_specs=_mace_embedding_specs(spec),
            use_embedding_readout=spec.embedding_readout,
        )
        if spec.distance_transform == "agnesi":  # mace builds it with its defaults
            transform = model.radial_embedding.distance_transform
            for name, value in zip(("q", "p", "a"), spec.agnesi, strict=True):
                getattr(transform, name).fill_(value)
    return model.to(dtype)


def _mace_embedding_specs(spec: MACESpec) -> dict | None:
    """mace-torch's ``embedding_specs`` of ``spec``'s (``per`` and ``in_dim`` filled in, as
    its data pipeline and embedder read them)."""
    if spec.embedding_specs is None:
        return None
    return {
        name: {"per": "graph", "in_dim": 1, **settings}
        for name, settings in spec.embedding_specs.items()
    }


def _set_electronic_state(model: torch.nn.Module, state: dict) -> None:
    """The joint embedding (same layouts; mace's ``project`` is Linear + SiLU) and its
    readout."""
    prefix = "electronic_state.embedders."
    for name, module in model.joint_embedding.embedders.items():
        for key, value in module.state_dict(keep_vars=True).items():
            _copy(value, state[f"{prefix}{name}.{key}"])
    _copy(model.joint_embedding.project[0].weight, state["electronic_state.project.weight"])
    if "state_readout.linear.weight" in state:
        _copy(model.embedding_readout.linear.weight, state["state_readout.linear.weight"])


def _copy(target: torch.Tensor, value: torch.Tensor) -> None:
    if target.numel() != value.numel():
        raise ValueError(
            f"weight sizes differ: mace {tuple(target.shape)}, ours {tuple(value.shape)}"
        )
    target.copy_(value.reshape(target.shape))


def _set_interaction(source, ours, state: dict, index: int, dtype: torch.dtype) -> None:
    prefix = f"interactions.{index}."
    if type(source).__name__ == NONLINEAR_BLOCK:
        _set_nonlinear_interaction(source, ours, state, prefix, dtype)
        return
    _copy(source.linear_up.weight, state[prefix + "linear_up.weight"])
    _copy(source.linear.weight, state[prefix + "linear.weight"])
    _copy(source.skip_tp.weight, state[prefix + "skip.weight"])
    fcnet = source.conv_tp_weights
    layers = [getattr(fcnet, f"layer{k}") for k in range(len(fcnet.hs) - 1)]
    weights = [state[f"{prefix}radial_mlp.weights.{k}"] for k in range(len(layers))]
    for k, layer in enumerate(layers[:-1]):
        weights[k + 1] = weights[k + 1] / _activation_ratio(layer.act)
    weights[-1] = weights[-1] * _path_signs(source.conv_tp, ours.conv_tp, dtype, prefix)
    for layer, weight in zip(layers, weights, strict=True):
        _copy(layer.weight, weight)
    if hasattr(source, "density_fn"):  # a density block: its one-layer net, as it is
        _copy(source.density_fn.layer0.weight, state[prefix + "density_mlp.weights.0"])


def _set_nonlinear_interaction(source, ours, state: dict, prefix: str, dtype) -> None:
    """``_nonlinear_state`` undone: the linear maps, embeddings, norms and the density MLP
    1:1, the gate's constants divided out of ``linear_2``, the path signs (their own
    inverse) back on the radial MLP's last layer."""
    for name in ("linear_up", "linear_res", "linear_1"):
        _copy(getattr(source, name).weight, state[f"{prefix}{name}.weight"])
    _copy(source.skip_tp.weight, state[prefix + "skip.weight"])
    factors = _gate_factors(source.equivariant_nonlin, ours, prefix)
    _copy(source.linear_2.weight, state[prefix + "linear_2.weight"] / factors)
    for name in ("source_embedding", "target_embedding"):
        _copy(getattr(source, name).weight, state[prefix + name])
    for name in ("alpha", "beta"):
        _copy(getattr(source, name), state[prefix + name])
    signs = _path_signs(source.conv_tp, ours.conv_tp, dtype, prefix)
    for mlp, name, mlp_signs in (
        (source.conv_tp_weights, "radial_mlp.", signs),
        (source.density_fn, "density_mlp.", None),
    ):
        modules = _layer_norm_mlp_modules(mlp, prefix + name)
        for module, key in modules:
            weight, bias = state[key + "weight"], state[key + "bias"]
            if module is modules[-1][0] and mlp_signs is not None:
                weight, bias = weight * mlp_signs[:, None], bias * mlp_signs
            _copy(module.weight, weight)
            _copy(module.bias, bias)


def _set_product(source, ours, state: dict, index: int) -> None:
    prefix = f"products.{index}."
    _copy(source.linear.weight, state[prefix + "linear.weight"])
    descriptor = ours.contraction.descriptor
    for o, contraction in enumerate(source.symmetric_contractions.contractions):
        weights = state[f"{prefix}contraction.weights.{o}"]
        mappings = contraction_mappings(contraction, descriptor, o, prefix)
        start = 0
        for nu, mapping in enumerate(mappings, start=1):
            block = weights[:, start : start + mapping.shape[0]]
            start += mapping.shape[0]
            theirs = torch.einsum("ko,eoc->ekc", torch.linalg.pinv(mapping), block)
            target = contraction.weights_max if nu == len(mappings) else contraction.weights[-nu]
            _copy(target, theirs)
        if start != weights.shape[1]:
            raise ValueError(f"{prefix}contraction {o}: {weights.shape[1]} weights, mapped {start}")


def _set_readout(source, state: dict, index: int) -> None:
    prefix = f"readouts.{index}."
    if prefix + "linear.weight" in state:
        _copy(source.linear.weight, state[prefix + "linear.weight"])
        return
    (act,) = source.non_linearity.acts
    _copy(source.linear_1.weight, state[prefix + "linear_1.weight"])
    _copy(source.linear_2.weight, state[prefix + "linear_2.weight"] / _activation_ratio(act))
