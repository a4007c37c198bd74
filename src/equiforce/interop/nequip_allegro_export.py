"""Export equiforce Allegro ``Potential``s to nequip-allegro 0.8 ``AllegroModel`` modules.

The inverse of ``from_nequip_allegro``: a nequip model with the same hyperparameters is built
and every weight is set so that ``from_nequip_allegro(to_nequip_allegro(p))`` reproduces
``p``'s weights, with energies/forces agreeing to ~1e-12 in float64. The two foldings of the
import are undone (each MLP layer's nequip ``alpha`` relative to ours, the Clebsch–Gordan path
signs of the tensor products).

nequip describes each MLP by one hidden depth and width, so hidden widths that differ
within one MLP cannot be exported. Energies: nequip's per-type shifts are ``E0 + shift`` and
its per-type scales ``scale * type_scales``, which is how the import reads them back.
"""

from __future__ import annotations

import torch
from torch import nn

from equiforce.interop.nequip_allegro import (
    _layers,
    _mlp_layers,
    nequip_global_state,
    tp_path_signs,
)
from equiforce.models.allegro import AllegroSpec
from equiforce.models.potential import Potential

__all__ = ["to_nequip_allegro"]


def to_nequip_allegro(potential: Potential) -> nn.Module:
    """A nequip-allegro ``AllegroModel`` computing the same energies as ``potential``.

    Args:
        potential: an equiforce model of family ``"allegro"`` (its dtype is kept).

    Returns:
        The nequip ``GraphModel``, in eval mode, on the CPU.

    Raises:
        ImportError: nequip-allegro is not installed.
        ValueError: not an Allegro model, or an option nequip cannot express (named).
    """
    import allegro.model  # noqa: F401  (lazy: nequip-allegro is optional)

    if potential.family != "allegro":
        raise ValueError(f"to_nequip_allegro exports Allegro models, got {potential.family!r}")
    if potential.spec.pair_repulsion and potential.spec.pair_repulsion_form != "lammps":
        raise ValueError(
            f"pair_repulsion_form {potential.spec.pair_repulsion_form!r}: nequip's ZBL is the "
            "'lammps' form only"
        )
    model = _build(potential.spec)
    state = {k: v.detach().cpu().double() for k, v in potential.energy_model.state_dict().items()}
    ours = potential.energy_model
    layers = _layers(model)
    type_embed = layers["radial_chemical_embed"].type_embed
    module = layers["allegro"]
    with torch.no_grad():
        type_embed.center_embed.weight.copy_(state["embedding.centre_embed"])
        type_embed.neighbor_embed.weight.copy_(state["embedding.neighbour_embed"])
        mlps = [
            (type_embed.basis_linear, ours.embedding.basis_linear, "embedding.basis_linear"),
            (
                layers["scalar_embed_mlp"].mlp_module,
                ours.embedding.scalar_mlp,
                "embedding.scalar_mlp",
            ),
            (
                layers["tensor_embed"].env_embed_linear,
                ours.embedding.tensor_linear,
                "embedding.tensor_linear",
            ),
            (
                module.first_layer_env_embed_projection,
                ours.layers.first_projection,
                "layers.first_projection",
            ),
            (layers["edge_readout"].mlp_module, ours.readout, "readout"),
        ]
        mlps += [
            (latent, ours.layers.latents[k], f"layers.latents.{k}")
            for k, latent in enumerate(module.latents)
        ]
        for fn, ours_mlp, prefix in mlps:
            _set_mlp(fn, ours_mlp, state, prefix)
        for k, (tp, ours_tp) in enumerate(zip(module.tps, ours.layers.tps, strict=True)):
            weight = state[f"layers.tps.{k}.weight"].reshape(ours_tp.descriptor.weight_shape)
            tp.weights.copy_((weight * tp_path_signs(tp, ours_tp)).reshape(tp.weights.shape))
    return model.eval()


def _hidden(widths: tuple[int, ...], name: str) -> dict[str, int]:
    """The ``hidden_layers_depth``/``width`` nequip takes for our hidden widths."""
    if len(set(widths)) > 1:
        raise ValueError(f"nequip needs equal hidden widths per MLP; {name} has {widths}")
    return {"depth": len(widths), "width": widths[0] if widths else 1}


def _build(spec: AllegroSpec) -> nn.Module:
    """Random nequip-allegro model with ``spec``'s hyperparameters (global state restored)."""
    from allegro.model import AllegroModel

    names = list(spec.type_names)
    mlps = {
        "scalar_embed_mlp": _hidden(spec.two_body_mlp_hidden, "two_body_mlp_hidden"),
        "allegro_mlp": _hidden(spec.latent_mlp_hidden, "latent_mlp_hidden"),
        "readout_mlp": _hidden(spec.readout_mlp_hidden, "readout_mlp_hidden"),
    }
    options = {
        f"{mlp}_hidden_layers_{key}": value for mlp, d in mlps.items() for key, value in d.items()
    }
    options.update({f"{mlp}_nonlinearity": spec.mlp_nonlinearity for mlp in mlps})
    if spec.pair_r_max:
        matrix = spec.pair_r_max_matrix().tolist()
        options["per_edge_type_cutoff"] = {
            a: {b: matrix[i][j] for j, b in enumerate(names)} for i, a in enumerate(names)
        }
    avg = spec.per_type_avg_num_neighbors
    scales: float | dict[str, float] = spec.scale
    if spec.type_scales:
        scales = {name: spec.scale * s for name, s in zip(names, spec.type_scales, strict=True)}
    shifts = None
    if spec.atomic_energies or spec.shift != 0.0:
        energies = spec.atomic_energies or (0.0,) * len(names)
        shifts = {name: e + spec.shift for name, e in zip(names, energies, strict=True)}
    with nequip_global_state(), torch.random.fork_rng():
        return AllegroModel(
            seed=spec.seed,
            model_dtype=spec.dtype,
            type_names=names,
            r_max=spec.r_max,
            l_max=spec.l_max,
            parity=spec.parity,
            radial_chemical_embed={
                "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
                "num_bessels": spec.num_bessels,
                "polynomial_cutoff_p": spec.polynomial_cutoff_p,
            },
            radial_chemical_embed_dim=spec.radial_chemical_embed_dim or None,
            num_layers=spec.num_layers,
            num_scalar_features=spec.num_scalar_features,
            num_tensor_features=spec.num_tensor_features,
            tp_path_channel_coupling=spec.tp_path_channel_coupling,
            avg_num_neighbors=dict(zip(names, avg, strict=True)) if avg else spec.avg_num_neighbors,
            per_type_energy_scales=scales,
            per_type_energy_shifts=shifts,
            pair_potential=_zbl(spec) if spec.pair_repulsion else None,
            **options,
        )


def _zbl(spec: AllegroSpec) -> dict:
    """nequip's ``ZBL`` pair potential for the spec's ``"lammps"``-form repulsion."""
    return {
        "_target_": "nequip.nn.pair_potential.ZBL",
        "units": "metal",
        "chemical_species": list(spec.type_names),
        "polynomial_cutoff_p": float(spec.polynomial_cutoff_p),
    }


def _set_mlp(fn: nn.Module, ours: nn.Module, state: dict, prefix: str) -> None:
    """Set a nequip ``ScalarMLPFunction``'s weights from ours (alpha ratio undone)."""
    pairs, _, _ = _mlp_layers(fn)
    if len(pairs) != len(ours.alphas):
        raise ValueError(f"{prefix}: nequip has {len(pairs)} layers, ours {len(ours.alphas)}")
    for k, ((weight, alpha), ours_alpha) in enumerate(zip(pairs, ours.alphas, strict=True)):
        value = state[f"{prefix}.weights.{k}"] * (ours_alpha / alpha)
        if value.shape != weight.shape:
            raise ValueError(
                f"{prefix}.weights.{k}: shape {tuple(value.shape)} vs {tuple(weight.shape)}"
            )
        weight.copy_(value)
