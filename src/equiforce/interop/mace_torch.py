"""Convert mace-torch 0.3.x ``MACE`` / ``ScaleShiftMACE`` models into equiforce ``Potential``s.

Supported: models built with mace-torch's default options (Bessel basis, polynomial
envelope, ``RealAgnostic[Residual]InteractionBlock``, SiLU gates, e3nn backend, no extra
embeddings; the ZBL ``pair_repulsion`` with its default constants; the ``Agnesi`` distance
transform; ``use_agnostic_product``: one symmetric contraction for every element, copied to
each; ``use_last_readout_only``: the earlier layers' readouts zero;
``RealAgnosticResidualNonLinearInteractionBlock``, the MH foundation models' block, with
``apply_cutoff=False``; ``RealAgnosticDensity[Residual]InteractionBlock`` (MACE-MPA-0's and
MACE-OMAT-0's: ``MACESpec.density_normalization``), every default block a density one or
none; ``apply_cutoff=False`` with the default blocks; ``edge_irreps`` and
``use_edge_irreps_first``; ``embedding_specs`` of the total charge and spin per structure,
with ``use_embedding_readout``: MACE-OMOL's), float32 or float64; a
multi-head model converts one head at a time (``head=``).
Everything is read from the module itself; energies and forces agree to ~1e-12 in float64.

Most weights copy 1:1. Three places differ by a basis change, folded into the weights:

* e3nn estimates the normalised-SiLU (and the non-linear block's sigmoid-gate) constant by
  Monte Carlo, equiforce integrates it; the ratio is folded into the layer after each
  activation.
* Clebsch–Gordan signs: the effective coefficient of every convolution path is measured on
  the mace module and compared with ours; a sign flip goes into the radial MLP's output.
* The symmetric contraction uses a non-redundant basis here; mace's weights are mapped onto
  it by solving the linear system between the two bases on symmetric monomials.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch

from equiforce.data import keys
from equiforce.models.mace import MACE, MACESpec
from equiforce.models.potential import Potential
from equiforce.models.registry import build_model
from equiforce.nn.mace.electronic_state import state_spec_problems
from equiforce.nn.mace.mlp import normalized_silu_scale
from equiforce.nn.mace.readout import LinearReadout
from equiforce.nn.zbl import FORMS as ZBL_FORMS
from equiforce.o3.irreps import Irrep, Irreps, hidden_irreps
from equiforce.o3.symmetric import monomial_coefficients
from equiforce.o3.wigner import wigner_3j

_LATER_BLOCK = "RealAgnosticResidualInteractionBlock"
NONLINEAR_BLOCK = "RealAgnosticResidualNonLinearInteractionBlock"
_PLAIN_BLOCK = "RealAgnosticInteractionBlock"
# the blocks of MACESpec.density_normalization (MACE-MPA-0's): residual and plain
_DENSITY_BLOCKS = {
    _LATER_BLOCK: "RealAgnosticDensityResidualInteractionBlock",
    _PLAIN_BLOCK: "RealAgnosticDensityInteractionBlock",
}
_FIRST_BLOCKS = (_PLAIN_BLOCK, _LATER_BLOCK, NONLINEAR_BLOCK, *_DENSITY_BLOCKS.values())
_RESIDUAL_BLOCKS = (_LATER_BLOCK, NONLINEAR_BLOCK, _DENSITY_BLOCKS[_LATER_BLOCK])


def from_mace_torch(model: torch.nn.Module, head: str | None = None) -> Potential:
    """Convert a mace-torch ``MACE``/``ScaleShiftMACE`` into an equiforce ``Potential``.

    Args:
        model: the mace-torch module (not TorchScript-compiled), float32 or float64.
        head: for a multi-head model (mace's multi-head fine-tuning makes ``["pt_head",
            "Default"]``), the head to convert: its readouts, E0s, scale and shift; the
            layers are shared. None: the model's only head.

    Returns:
        A ``Potential`` of family ``"mace"`` in the source dtype, in eval mode.

    Raises:
        ImportError: mace-torch is not installed.
        ValueError: the model uses an option equiforce does not implement (named), or
            ``head`` is not one of its heads (they are listed).
    """
    import mace.modules  # noqa: F401  (lazy: mace-torch is optional)

    _check_supported(model)
    index = head_index(model, head)
    spec = spec_from_mace_torch(model, head)
    potential = build_model("mace", spec)
    state = _converted_state(model, potential.energy_model, spec.torch_dtype, index)
    dtype = spec.torch_dtype
    potential.energy_model.load_state_dict({k: v.to(dtype) for k, v in state.items()})
    return potential.eval()


def mace_inputs(
    batch: dict[str, torch.Tensor], n_types: int, dtype: torch.dtype, head: int = 0
) -> dict[str, torch.Tensor]:
    """mace-torch's input dict for our batch of the same graphs: its edges run sender (our
    neighbour) -> receiver (our centre), so the edge index is flipped and the shifts negated;
    positions and cell in ``dtype``; ``head`` the head index of every graph; the total charge
    and spin multiplicity where the batch has them."""
    centre = batch[keys.EDGE_INDEX][0]
    cell = batch[keys.CELL][batch[keys.BATCH][centre]]
    n_graphs = int(batch[keys.PTR].shape[0]) - 1
    state = {name: batch[name].to(dtype) for name in keys.GRAPH_STATE_KEYS if name in batch}
    return {
        **state,
        "positions": batch[keys.POSITIONS].to(dtype),
        "node_attrs": torch.nn.functional.one_hot(batch[keys.ATOM_TYPE], n_types).to(dtype),
        "edge_index": batch[keys.EDGE_INDEX].flip(0),
        "shifts": -torch.einsum("ei,eij->ej", batch[keys.EDGE_SHIFT], cell).to(dtype),
        "unit_shifts": -batch[keys.EDGE_SHIFT].to(dtype),
        "cell": batch[keys.CELL].reshape(-1, 3).to(dtype),
        "batch": batch[keys.BATCH],
        "ptr": batch[keys.PTR],
        "head": torch.full((n_graphs,), head, dtype=torch.long, device=centre.device),
    }


def _heads(model: torch.nn.Module) -> list[str]:
    """The model's head names (mace's single-head models: ``["Default"]``)."""
    return list(getattr(model, "heads", None) or ["Default"])


def head_index(model: torch.nn.Module, head: str | None) -> int:
    """The index of ``head`` among the model's heads (None: the only one)."""
    heads = _heads(model)
    if head is None and len(heads) == 1:
        return 0
    if head not in heads:
        raise ValueError(
            f"this model has the heads {', '.join(heads)}: choose one with head=..."
            if head is None
            else f"head {head!r} is not one of the model's heads ({', '.join(heads)})"
        )
    return heads.index(head)


def spec_from_mace_torch(model: torch.nn.Module, head: str | None = None) -> MACESpec:
    """The ``MACESpec`` describing a (supported) mace-torch model, or one of its heads."""
    from ase.data import chemical_symbols

    index = head_index(model, head)
    n_heads = len(_heads(model))
    embedding = model.radial_embedding
    n_layers = len(model.interactions)
    channels = model.node_embedding.linear.irreps_out.count((0, 1))
    max_L = model.products[0].linear.irreps_out.lmax if n_layers > 1 else 0  # noqa: N806
    fcnet = model.interactions[0].conv_tp_weights
    readout_hidden = model.readouts[-1].hidden_irreps.dim // n_heads if n_layers > 1 else 16
    energies = model.atomic_energies_fn.atomic_energies.detach().double()
    energies = energies.reshape(n_heads, -1)[index]
    edge_irreps = getattr(model, "edge_irreps", None)
    scale, shift = 1.0, 0.0
    if hasattr(model, "scale_shift"):
        scale = float(model.scale_shift.scale.detach().flatten()[index])
        shift = float(model.scale_shift.shift.detach().flatten()[index])
    return MACESpec(
        type_names=tuple(chemical_symbols[int(z)] for z in model.atomic_numbers),
        r_max=float(model.r_max),
        num_channels=channels,
        max_L=int(max_L),
        max_ell=int(model.spherical_harmonics.irreps_out.lmax),
        correlation=_correlation(model),
        num_interactions=n_layers,
        num_radial_basis=int(embedding.bessel_fn.bessel_weights.numel()),
        num_polynomial_cutoff=int(embedding.cutoff_fn.p),
        radial_mlp=tuple(int(h) for h in fcnet.hs[1:-1]),
        readout_mlp_hidden=int(readout_hidden),
        avg_num_neighbors=float(model.interactions[0].avg_num_neighbors),
        atomic_energies=tuple(energies.tolist()),
        scale=scale,
        shift=shift,
        dtype=str(next(model.parameters()).dtype).replace("torch.", ""),
        # the non-linear block is residual too (its skip): the field's default for "all"
        first_interaction_residual=type(model.interactions[0]).__name__ in _RESIDUAL_BLOCKS,
        nonlinear_interactions=_nonlinear_choice(model),
        edge_irreps=None if edge_irreps is None else str(Irreps(edge_irreps)),
        edge_irreps_first=edge_irreps is not None
        and bool(getattr(model, "use_edge_irreps_first", False)),
        apply_cutoff=bool(getattr(model.radial_embedding, "apply_cutoff", True)),
        embedding_specs=_embedding_specs(model) if hasattr(model, "joint_embedding") else None,
        embedding_readout=hasattr(model, "embedding_readout"),
        density_normalization=any(
            type(block).__name__ in _DENSITY_BLOCKS.values() for block in model.interactions
        ),
        pair_repulsion=hasattr(model, "pair_repulsion"),
        distance_transform="agnesi" if hasattr(embedding, "distance_transform") else None,
        agnesi=_agnesi(embedding),
    )


def _correlation(model: torch.nn.Module) -> int | tuple[int, ...]:
    """``MACESpec.correlation``: the products' common order, or one per layer."""
    orders = tuple(
        int(product.symmetric_contractions.contractions[0].correlation)
        for product in model.products
    )
    return orders[0] if len(set(orders)) == 1 else orders


def _nonlinear_choice(model: torch.nn.Module) -> str:
    """``MACESpec.nonlinear_interactions`` of a (supported) mace-torch model."""
    blocks = [type(block).__name__ for block in model.interactions]
    if blocks[0] == NONLINEAR_BLOCK:
        return "all"
    return "later" if NONLINEAR_BLOCK in blocks else "none"


def _check_supported(model: torch.nn.Module) -> None:
    problems = _unsupported_options(model)
    if problems:
        raise ValueError(f"cannot convert this {type(model).__name__}: " + "; ".join(problems))


def _unsupported_options(model: torch.nn.Module) -> list[str]:
    name = type(model).__name__
    if name not in ("MACE", "ScaleShiftMACE"):
        return [f"only MACE and ScaleShiftMACE are supported, got {name}"]
    problems = []
    if getattr(model, "use_so3", False):
        problems.append("option use_so3 is not supported")
    if hasattr(model, "joint_embedding"):
        problems += state_spec_problems(_embedding_specs(model))
    problems += _transform_problems(model.radial_embedding)
    if hasattr(model, "pair_repulsion"):
        problems += _zbl_problems(model.pair_repulsion_fn, int(model.radial_embedding.cutoff_fn.p))
    if type(model.radial_embedding.bessel_fn).__name__ != "BesselBasis":
        problems.append("only the Bessel radial basis (radial_type='bessel') is supported")
    blocks = [type(block).__name__ for block in model.interactions]
    later = set(blocks[1:])
    density = {name for name in blocks if name in _DENSITY_BLOCKS.values()}
    default = {name for name in blocks if name != NONLINEAR_BLOCK}
    if (
        blocks[0] not in _FIRST_BLOCKS
        or len(later) > 1
        or not later <= {_LATER_BLOCK, NONLINEAR_BLOCK, _DENSITY_BLOCKS[_LATER_BLOCK]}
        or (blocks[0] == NONLINEAR_BLOCK and later not in (set(), {NONLINEAR_BLOCK}))
        or (density and density != default)  # every default block a density one, or none
    ):
        problems.append(f"interaction blocks {blocks} are not supported")
    if NONLINEAR_BLOCK in blocks and getattr(model.radial_embedding, "apply_cutoff", True):
        problems.append(
            f"{NONLINEAR_BLOCK} with apply_cutoff=True (discontinuous at r_max) is not supported"
        )
    problems += _irreps_problems(model)
    return problems


def _transform_problems(radial_embedding: torch.nn.Module) -> list[str]:
    """What of a distance transform equiforce cannot run: any but ``AgnesiTransform``, or one
    whose covalent radii differ from ``ase.data.covalent_radii`` (edited)."""
    transform = getattr(radial_embedding, "distance_transform", None)
    if transform is None:
        return []
    name = type(transform).__name__
    if name != "AgnesiTransform":
        return [f"option distance_transform ({name}) is not supported (Agnesi is)"]
    from ase.data import covalent_radii

    radii = transform.covalent_radii.detach().double()
    if not torch.allclose(radii, torch.as_tensor(covalent_radii, dtype=torch.float64)):
        return ["the Agnesi transform's covalent_radii differ from ase.data.covalent_radii"]
    return []


def _agnesi(radial_embedding: torch.nn.Module) -> tuple[float, float, float]:
    """The (q, p, a) of a model's Agnesi transform (mace-torch's defaults without one)."""
    transform = getattr(radial_embedding, "distance_transform", None)
    if transform is None:
        return MACESpec.agnesi
    return tuple(float(getattr(transform, name)) for name in ("q", "p", "a"))


def _zbl_problems(zbl: torch.nn.Module, p: int) -> list[str]:
    """What of mace's ``ZBLBasis`` differs from ``equiforce.nn.zbl``'s ``"mace"`` form (its
    defaults; mace's screening length is ``a_prefactor * 0.529``)."""
    from ase.data import covalent_radii

    form = ZBL_FORMS["mace"]
    expected = {
        "c": torch.tensor(form.coefficients),
        "a_exp": torch.tensor(form.exponent),
        "a_prefactor": torch.tensor(form.screening / 0.529),
        "covalent_radii": torch.tensor(covalent_radii),
        "p": torch.tensor(p),
    }
    return [
        f"pair_repulsion's {name} differs from mace's default (trained or edited)"
        for name, value in expected.items()
        if not torch.allclose(getattr(zbl, name).detach().double(), value.double(), rtol=1e-6)
    ]


def _irreps_problems(model: torch.nn.Module) -> list[str]:
    problems = []
    sh = model.spherical_harmonics
    if not (sh.normalize and sh.normalization == "component"):
        problems.append("spherical harmonics must be normalised with 'component' norm")
    channels = model.node_embedding.linear.irreps_out.count((0, 1))
    # the last layer's scalars (mace's default) or all its hidden irreps
    # (``keep_last_layer_irreps``, whose scalars alone reach the readout: ``_scalar_weights``)
    for index, product in enumerate(model.products):
        out = Irreps(product.linear.irreps_out)
        if out != hidden_irreps(channels, out.lmax):
            problems.append(f"layer {index}: hidden irreps {out} are not supported")
    return problems


def _scalars(irreps: Irreps) -> Irreps:
    """The 0e blocks of ``irreps``."""
    return Irreps([(mul, ir) for mul, ir in Irreps(irreps) if ir.l == 0 and ir.p == 1])


def _scalar_weights(module: torch.nn.Module, where: str) -> torch.Tensor:
    """The weights of an e3nn ``Linear`` or ``FullyConnectedTensorProduct`` onto its 0e
    outputs only, float64: a last layer built with ``keep_last_layer_irreps`` (its other
    outputs reach no readout). The 0e outputs' path normalisation counts 0e paths only, so
    the weights are those of the same module built with scalar outputs.

    Raises:
        ValueError: a module with shared or unweighted paths.
    """
    outputs = Irreps(module.irreps_out)
    weight, blocks, offset = _weight(module).flatten(), [], 0
    for instruction in module.instructions:
        if not getattr(instruction, "has_weight", True):
            raise ValueError(f"{where}: a path without weights")
        size = math.prod(instruction.path_shape)
        if outputs[instruction.i_out].ir == Irrep(0, 1):
            blocks.append(weight[offset : offset + size])
        offset += size
    if offset != weight.numel():
        raise ValueError(f"{where}: {weight.numel()} weights for paths of {offset}")
    return torch.cat(blocks)


def _converted_state(
    source: torch.nn.Module, target: MACE, dtype: torch.dtype, head: int = 0
) -> dict[str, torch.Tensor]:
    """State dict of ``target`` carrying the weights of ``source`` (of ``dtype``; its head
    ``head``), float64."""
    state = {"embedding.weight": _weight(source.node_embedding.linear)}
    n_heads = len(_heads(source))
    if hasattr(source, "joint_embedding"):
        state.update(_electronic_state(source, target, head, n_heads))
    readouts = list(source.readouts)
    if getattr(source, "use_last_readout_only", False):  # only the last layer reads out
        readouts = [None] * (len(source.interactions) - len(readouts)) + readouts
    layers = zip(source.interactions, source.products, readouts, strict=True)
    for index, (interaction, product, readout) in enumerate(layers):
        state.update(_interaction_state(interaction, target.interactions[index], index, dtype))
        state.update(_product_state(product, target.products[index], index))
        state.update(_readout_state(readout, target.readouts[index], index, head, n_heads))
    missing = set(target.state_dict()) ^ set(state)
    if missing:
        raise ValueError(f"conversion left these weights unmatched: {sorted(missing)}")
    return state


def _embedding_specs(model: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """mace-torch's ``embedding_specs`` with the settings ``MACESpec.embedding_specs`` keeps
    (its data ``key`` is the data's business: ``KeySpec``)."""
    return {
        name: {setting: value for setting, value in spec.items() if setting != "key"}
        for name, spec in model.embedding_specs.items()
    }


def _electronic_state(source, target: MACE, head: int, n_heads: int) -> dict[str, torch.Tensor]:
    """The joint embedding's weights (same layouts; its ``project`` is Linear + SiLU) and,
    with ``use_embedding_readout``, head ``head``'s readout of it."""
    joint = source.joint_embedding
    state = {
        f"electronic_state.embedders.{name}.{key}": value.detach().to(torch.float64)
        for name, module in joint.embedders.items()
        for key, value in module.state_dict().items()
    }
    state["electronic_state.project.weight"] = _weight(joint.project[0])
    if hasattr(source, "embedding_readout"):
        weight = _weight(source.embedding_readout.linear).reshape(-1, n_heads)[:, head]
        where = "embedding_readout.linear"
        _check_head_linear(
            source.embedding_readout.linear, target.state_readout.linear, weight, where
        )
        state["state_readout.linear.weight"] = weight
    return state


def _weight(module: torch.nn.Module) -> torch.Tensor:
    return module.weight.detach().to(torch.float64)


def _check_linear(source: torch.nn.Module, target: torch.nn.Module, where: str) -> None:
    desc = target.descriptor
    if Irreps(source.irreps_in) != desc.irreps_in or Irreps(source.irreps_out) != desc.irreps_out:
        raise ValueError(
            f"{where}: irreps {source.irreps_in} -> {source.irreps_out} do not match "
            f"{desc.irreps_in} -> {desc.irreps_out}"
        )
    if source.weight.numel() != desc.weight_numel:
        raise ValueError(f"{where}: {source.weight.numel()} weights, expected {desc.weight_numel}")


def _interaction_state(source, target, index: int, dtype: torch.dtype) -> dict:
    if type(source).__name__ == NONLINEAR_BLOCK:
        return _nonlinear_state(source, target, index, dtype)
    prefix = f"interactions.{index}."
    _check_linear(source.linear_up, target.linear_up, prefix + "linear_up")
    _check_linear(source.linear, target.linear, prefix + "linear")
    state = {
        prefix + "linear_up.weight": _weight(source.linear_up),
        prefix + "linear.weight": _weight(source.linear),
        prefix + "skip.weight": _skip_weights(source.skip_tp, target.skip, prefix + "skip_tp"),
    }
    weights = _radial_weights(source.conv_tp_weights, prefix)
    signs = _path_signs(source.conv_tp, target.conv_tp, dtype, prefix)
    weights[-1] = weights[-1] * signs
    for k, weight in enumerate(weights):
        state[f"{prefix}radial_mlp.weights.{k}"] = weight
    if hasattr(source, "density_fn"):  # a density block: its one-layer net, as it is
        (state[prefix + "density_mlp.weights.0"],) = _radial_weights(source.density_fn, prefix)
    return state


def _skip_weights(skip: torch.nn.Module, target: torch.nn.Module, where: str) -> torch.Tensor:
    """Our ``skip`` weights from mace's ``skip_tp`` (a tensor product with the species, or
    the non-linear block's ``Linear``; its 0e outputs' alone when it keeps the last layer's
    irreps and ours does not)."""
    desc = target.descriptor
    inputs = skip.irreps_in1 if hasattr(skip, "irreps_in1") else skip.irreps_in
    outputs = Irreps(skip.irreps_out)
    kept = outputs != desc.irreps_out and _scalars(outputs) == desc.irreps_out
    if Irreps(inputs) != desc.irreps_in or not (outputs == desc.irreps_out or kept):
        raise ValueError(f"{where}: irreps do not match")
    weights = _scalar_weights(skip, where) if kept else _weight(skip)
    if weights.numel() != desc.weight_numel:
        raise ValueError(f"{where}: {weights.numel()} weights, expected {desc.weight_numel}")
    return weights


def _nonlinear_state(source, target, index: int, dtype: torch.dtype) -> dict:
    """The weights of a ``RealAgnosticResidualNonLinearInteractionBlock`` for
    ``equiforce.nn.mace.nonlinear.NonLinearInteraction``: the linear maps 1:1, the species
    embeddings as rows, the LayerNorm MLPs layer by layer (the radial one's outputs with the
    path signs), the gate's Monte-Carlo constants folded into ``linear_2``."""
    prefix = f"interactions.{index}."
    state = {}
    names = ("linear_up", "linear_res", "linear_1", "linear_2")
    for name in names:
        _check_linear(getattr(source, name), getattr(target, name), prefix + name)
        state[f"{prefix}{name}.weight"] = _weight(getattr(source, name))
    state[prefix + "skip.weight"] = _skip_weights(source.skip_tp, target.skip, prefix + "skip_tp")
    for name in ("source_embedding", "target_embedding"):
        rows = _weight(getattr(source, name)).reshape(target.source_embedding.shape)
        state[prefix + name] = rows
    factors = _gate_factors(source.equivariant_nonlin, target, prefix)
    state[prefix + "linear_2.weight"] = state[prefix + "linear_2.weight"] * factors
    signs = _path_signs(source.conv_tp, target.conv_tp, dtype, prefix)
    state.update(_layer_norm_mlp_state(source.conv_tp_weights, prefix + "radial_mlp.", signs))
    state.update(_layer_norm_mlp_state(source.density_fn, prefix + "density_mlp."))
    for name in ("alpha", "beta"):
        state[prefix + name] = getattr(source, name).detach().to(torch.float64).reshape(())
    return state


def _gate_factors(gate: torch.nn.Module, target: torch.nn.Module, where: str) -> torch.Tensor:
    """(linear_2.weight_numel,) factors taking mace-torch's ``linear_2`` weights to ours: its
    gate's normalisation constants (e3nn's Monte-Carlo ``normalize2mom``) over ours, per path
    by the kind of its input (SiLU scalars or gated irreps)."""
    sigmoids = (torch.sigmoid, torch.nn.functional.sigmoid)
    if gate._act_scalar is not torch.nn.functional.silu or gate._act_gate not in sigmoids:
        raise ValueError(f"{where}equivariant_nonlin: only SiLU scalars and sigmoid gates")
    ratios = {
        True: gate._scalar_cst / target.gate.scalar_scale,
        False: gate._gate_cst / target.gate.gate_scale,
    }
    descriptor = target.linear_2.descriptor
    factors = torch.ones(descriptor.weight_numel, dtype=torch.float64)
    for path in descriptor.paths:
        block = slice(path.weight_offset, path.weight_offset + path.mul_in * path.mul_out)
        factors[block] = ratios[descriptor.irreps_in[path.i_in].ir.l == 0]
    return factors


def _layer_norm_mlp_modules(mlp: torch.nn.Module, prefix: str) -> list[tuple[torch.nn.Module, str]]:
    """mace-torch's ``RadialMLP`` (``net``: Linear, LayerNorm, SiLU, ..., Linear): its
    Linear and LayerNorm modules with the ``LayerNormMLP`` key prefix of each."""
    modules, linear, norm = [], 0, 0
    for module in mlp.net:
        if isinstance(module, torch.nn.Linear):
            modules.append((module, f"{prefix}layers.{linear}."))
            linear += 1
        elif isinstance(module, torch.nn.LayerNorm):
            if module.eps != 1e-5 or not module.elementwise_affine:
                raise ValueError(f"{prefix}: a LayerNorm other than the default (eps 1e-5)")
            modules.append((module, f"{prefix}norms.{norm}."))
            norm += 1
        elif not isinstance(module, torch.nn.SiLU):
            raise ValueError(f"{prefix}: {type(module).__name__} in the radial MLP")
    return modules


def _layer_norm_mlp_state(
    mlp: torch.nn.Module, prefix: str, signs: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """mace-torch's ``RadialMLP`` as ``LayerNormMLP`` weights; ``signs`` (outputs,) multiply
    the last layer's outputs."""
    state = {}
    modules = _layer_norm_mlp_modules(mlp, prefix)
    for module, key in modules:
        weight, bias = _weight(module), module.bias.detach().to(torch.float64)
        if module is modules[-1][0] and signs is not None:
            weight, bias = weight * signs[:, None], bias * signs
        state[key + "weight"], state[key + "bias"] = weight, bias
    return state


def _activation_ratio(act: Any) -> float:
    """Mace's normalised-SiLU constant over ours (1 when e3nn treats it as identity)."""
    constant = 1.0 if getattr(act, "_is_id", False) else float(act.cst)
    if getattr(act, "f", None) is not torch.nn.functional.silu:
        raise ValueError(f"only SiLU activations are supported, got {act}")
    return constant / normalized_silu_scale()


def _radial_weights(fcnet: torch.nn.Module, where: str) -> list[torch.Tensor]:
    layers = [getattr(fcnet, f"layer{k}") for k in range(len(fcnet.hs) - 1)]
    weights = [_weight(layer) for layer in layers]
    for k, layer in enumerate(layers[:-1]):
        if layer.var_in != 1 or layer.var_out != 1:
            raise ValueError(f"{where}conv_tp_weights: non-unit variances are not supported")
        weights[k + 1] = weights[k + 1] * _activation_ratio(layer.act)
    return weights


# mace-torch (through e3nn) computes its Clebsch-Gordan and coupling tensors in the default
# dtype at build time, so a model built in float32 and cast with .double() carries
# float32-rounded coefficients (deviations ~1e-8 from ours). A coupling that really differed
# from ours would deviate at O(1), so the structural checks guard at float32 level; the
# converted weights are exact whenever mace's coefficients are.
_COEFFICIENT_TOLERANCE = 1e-5


def _path_signs(source_tp, target_tp, dtype: torch.dtype, where: str) -> torch.Tensor:
    """(weight_numel,) sign per radial output, mapping mace's couplings onto ours."""
    desc = target_tp.descriptor
    theirs = [(i.i_in1, i.i_in2, i.i_out, i.connection_mode) for i in source_tp.instructions]
    ours = [(p.i_in1, p.i_in2, p.i_out, "uvu") for p in desc.paths]
    if theirs != ours or Irreps(source_tp.irreps_out) != desc.irreps_out:
        raise ValueError(f"{where}conv_tp: tensor-product paths differ from MACE's default")
    signs = torch.ones(desc.weight_numel, dtype=torch.float64)
    tolerance = _COEFFICIENT_TOLERANCE
    for index, path in enumerate(desc.paths):
        measured = _probe_path(source_tp, desc, path, dtype)
        # from the descriptor, not the executor: every kernel backend shares the descriptor
        coupling = wigner_3j(path.l1, path.l2, path.l_out).to(torch.float64) * path.scale
        ratio = float((measured * coupling).sum() / (coupling * coupling).sum())
        sign = 1.0 if ratio > 0 else -1.0
        if (measured - sign * coupling).abs().max() > tolerance:
            raise ValueError(f"{where}conv_tp path {index}: normalisation differs (x{ratio})")
        signs[path.weight_offset : path.weight_offset + path.mul] = sign
    return signs


def _probe_path(source_tp, desc, path, dtype: torch.dtype) -> torch.Tensor:
    """Effective coupling ``(d1, d2, d_out)`` of one path of mace's TP, channel 0."""
    in1, in2, out = desc.slices()
    d1, d2, d3 = 2 * path.l1 + 1, 2 * path.l2 + 1, 2 * path.l_out + 1
    samples = d1 * d2
    x1 = torch.zeros(samples, desc.irreps_in1.dim, dtype=dtype)
    x2 = torch.zeros(samples, desc.irreps_in2.dim, dtype=dtype)
    weights = torch.zeros(samples, desc.weight_numel, dtype=dtype)
    for m1, m2 in itertools.product(range(d1), range(d2)):
        x1[m1 * d2 + m2, in1[path.i_in1].start + m1] = 1.0
        x2[m1 * d2 + m2, in2[path.i_in2].start + m2] = 1.0
    weights[:, path.weight_offset] = 1.0
    with torch.no_grad():
        result = source_tp(x1, x2, weights)
    start = out[path.i_out].start
    return result[:, start : start + d3].to(torch.float64).reshape(d1, d2, d3)


def _product_state(source, target, index: int) -> dict[str, torch.Tensor]:
    prefix = f"products.{index}."
    contractions = source.symmetric_contractions.contractions
    ours = target.linear.descriptor.irreps_out
    if Irreps(source.linear.irreps_out) != ours and _scalars(source.linear.irreps_out) == ours:
        # keep_last_layer_irreps: the contraction's and the linear's 0e outputs alone
        weight = _scalar_weights(source.linear, prefix + "linear")
        if Irreps(source.linear.irreps_in) != Irreps(source.linear.irreps_out):
            raise ValueError(f"{prefix}linear: irreps do not match")
        state = {prefix + "linear.weight": weight}
        contractions = contractions[:1]  # one per output irrep, in irreps order: 0e first
    else:
        _check_linear(source.linear, target.linear, prefix + "linear")
        state = {prefix + "linear.weight": _weight(source.linear)}
    if len(contractions) != len(target.contraction.descriptor.irreps_out):
        raise ValueError(f"{prefix}: symmetric contraction outputs differ")
    for o, contraction in enumerate(contractions):
        weights = _contraction_weights(contraction, target.contraction.descriptor, o, prefix)
        name = f"contraction.weights.{o}"
        n_types = target.state_dict()[name].shape[0]
        if weights.shape[0] == 1 and n_types > 1:  # use_agnostic_product: one for all elements
            weights = weights.expand(n_types, -1, -1).clone()
        state[prefix + name] = weights
    return state


def _contraction_weights(contraction, descriptor, o: int, where: str) -> torch.Tensor:
    """Our ``(n_types, n_weights, C)`` weights reproducing one mace ``Contraction``."""
    blocks = []
    mappings = contraction_mappings(contraction, descriptor, o, where)
    for nu, mapping in enumerate(mappings, start=1):
        w = contraction.weights_max if nu == len(mappings) else contraction.weights[-nu]
        blocks.append(torch.einsum("ok,ekc->eoc", mapping, w.detach().to(torch.float64)))
    return torch.cat(blocks, dim=1)


def contraction_mappings(contraction, descriptor, o: int, where: str) -> list[torch.Tensor]:
    """Per degree nu = 1..correlation, the ``(n_ours, n_mace)`` map of mace's weights to ours.

    Our weights of degree nu are ``mapping @ mace's`` (per type and channel); the maps are
    checked to reproduce mace's coupling basis exactly.
    """
    ir_dim = descriptor.irreps_out[o].ir.dim
    mappings = []
    for nu in range(1, descriptor.correlation + 1):
        u = contraction.U_tensors(nu).detach().to(torch.float64)
        u = u.unsqueeze(0) if ir_dim == 1 else u
        theirs = monomial_coefficients(u, nu).flatten(0, 1)
        ours = descriptor.basis(o, nu).flatten(0, 1)
        where_nu = f"{where}contraction {o}, degree {nu}"
        mappings.append(_solve(ours, theirs, _COEFFICIENT_TOLERANCE, where_nu))
    return mappings


def _solve(ours: torch.Tensor, theirs: torch.Tensor, tolerance: float, where: str):
    """``X`` with ``ours @ X == theirs`` (both span the same space), checked."""
    if ours.shape[1] == 0:
        mapping = ours.new_zeros(0, theirs.shape[1])
    else:
        mapping = torch.linalg.lstsq(ours, theirs).solution
    if theirs.numel() == 0:
        return mapping
    residual = float((ours @ mapping - theirs).abs().max())
    if residual > tolerance * max(1.0, float(theirs.abs().max())):
        raise ValueError(f"{where}: mace's coupling basis is outside ours (residual {residual})")
    return mapping


def _readout_state(source, target, index: int, head: int, n_heads: int) -> dict[str, torch.Tensor]:
    """The readout weights of head ``head`` of ``n_heads`` (``source`` None: zeros, a layer
    without a readout). mace's readouts give one output
    per head (e3nn weights ``(mul_in, n_heads)``, the scalar inputs' rows only); its
    non-linear readout's hidden layer has ``n_heads`` blocks of ``hidden`` units, head h's
    output reading block h only (``mask_head``). Normalised by their fan-in (e3nn), the
    second layer's weights are rescaled from ``n_heads * hidden`` inputs to ``hidden``."""
    prefix = f"readouts.{index}."
    if source is None:  # use_last_readout_only: this layer gives no energy
        return {
            prefix + name: torch.zeros_like(value, dtype=torch.float64)
            for name, value in target.state_dict().items()
        }
    if isinstance(target, LinearReadout):
        weight = _weight(source.linear).reshape(-1, n_heads)[:, head]
        _check_head_linear(source.linear, target.linear, weight, prefix + "linear")
        return {prefix + "linear.weight": weight}
    hidden = target.linear_2.descriptor.irreps_in.dim
    block = slice(head * hidden, (head + 1) * hidden)
    first = _weight(source.linear_1).reshape(-1, n_heads * hidden)[:, block].flatten()
    second = _weight(source.linear_2).reshape(n_heads * hidden, n_heads)[block, head]
    _check_head_linear(source.linear_1, target.linear_1, first, prefix + "linear_1")
    _check_head_linear(source.linear_2, target.linear_2, second, prefix + "linear_2", n_heads)
    (act,) = source.non_linearity.acts
    return {
        prefix + "linear_1.weight": first,
        prefix + "linear_2.weight": second * _activation_ratio(act) / math.sqrt(n_heads),
    }


def _check_head_linear(
    source, target, weight: torch.Tensor, where: str, input_blocks: int = 1
) -> None:
    """``_check_linear`` for one head's ``weight`` of a readout layer: the inputs' irreps
    equal (of the hidden layer, ``input_blocks`` heads' blocks: one block), one output."""
    desc = target.descriptor
    inputs = _scalars(source.irreps_in)  # a readout reads the scalars (all its paths)
    if input_blocks > 1:
        inputs = Irreps(f"{inputs.dim // input_blocks}x0e")
    if inputs != _scalars(desc.irreps_in) or weight.numel() != desc.weight_numel:
        raise ValueError(
            f"{where}: irreps {source.irreps_in} -> {source.irreps_out} do not match "
            f"{desc.irreps_in} -> {desc.irreps_out} per head"
        )
