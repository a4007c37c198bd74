"""``torch.compile`` for potentials, correct for forces, stress and force training.

``torch.compile`` on ``Potential.forward`` itself does not work for force training: Dynamo
breaks the graph at ``torch.autograd.grad`` and AOTAutograd's compiled backward cannot be
differentiated again (no double backward). ``compile_potential`` therefore does what
nequip's ``CompileGraphModel`` and mace-torch's compile path do:

1. ``make_fx`` (symbolic shapes) traces one *whole* call, energy → forces (and stress) by
   autograd included, into a flat FX graph of aten ops whose inputs are the batch tensors,
   the parameters and the buffers. The force computation is now ordinary forward ops.
   Only the atom axis (``pos``, ``atom_type``, ``batch``) and the edge axis
   (``edge_index``, ``edge_shift``) are symbolic, each its own symbol; parameter, buffer
   and per-graph shapes are fixed. (With every input size symbolic and "duck" sizing, an
   atom count equal to some layer width at trace time became one symbol with it: the
   graph then failed, or was specialised to that atom count.)
2. ``torch.compile`` compiles that graph (``dynamic=True``). Parameters are graph inputs, so
   AOTAutograd differentiates the whole graph, forces included: the parameter gradients of
   a force loss are a first derivative of the compiled graph, exactly what it supports.

Specialisation: a trace fixes the number of graphs in the batch (stress and per-graph
buffers are built from it), the requested outputs and the input keys, so one trace is kept
per such signature (lazily, on first use); atom and edge counts stay symbolic. Batches with
fewer than 2 atoms or 2 edges run eager (symbolic shapes assume sizes >= 2).
``silu_backward`` is decomposed into ``sigmoid`` ops during tracing (it has no derivative
of its own, which the double backward needs). A one-input ``cat`` in the trace becomes an
explicit contiguous ``clone`` (eager's result): Inductor (torch 2.13) lowers it to its input,
strides kept, and a ``view`` traced on eager's contiguous output then fails to compile. An
accumulating ``index_put`` into a single row (a one-graph batch's energy or virial) becomes
``target + values.sum(0)``: Inductor's vectorised CPU scatter asserts on its constant index.

Outputs: the same dict as ``Potential.forward``. With ``create_graph`` false (inference) the
compiled call runs under ``torch.no_grad()``: energies, forces and stress carry no graph.
Compile after any kernel-backend or precision transform: the trace records the modules as
they are when first called. Parameters may change freely (they are inputs), e.g. in training.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch._decomp import core_aten_decompositions
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import (
    DimDynamic,
    ShapeEnv,
    StatelessSymbolicContext,
)

from equiforce.data import keys
from equiforce.models.check import check_model
from equiforce.models.contract import POTENTIAL_METADATA
from equiforce.models.potential import Potential, select_inputs
from equiforce.nn.edge_pairs import PAIR_FIRST, PAIR_OF_EDGE

__all__ = ["CompiledPotential", "compile_potential", "trace_potential"]

# the one symbolic axis of each batch input that has one: atoms, edges or bonds (edge pairs)
_SYMBOLIC_AXIS = {
    keys.POSITIONS: 0,
    keys.ATOM_TYPE: 0,
    keys.BATCH: 0,
    keys.EDGE_INDEX: 1,
    keys.EDGE_SHIFT: 0,
    PAIR_FIRST: 0,
    PAIR_OF_EDGE: 0,
}


def _silu_backward(grad_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``d silu(x) / dx * grad`` from differentiable primitives."""
    sigmoid = torch.sigmoid(x)
    return grad_output * sigmoid * (1.0 + x * (1.0 - sigmoid))


def _decompositions() -> dict:
    table = dict(core_aten_decompositions())
    table[torch.ops.aten.silu_backward.default] = _silu_backward
    return table


class CompiledPotential(nn.Module):
    """A ``Potential`` whose calls run a compiled trace (see the module docstring).

    Holds the wrapped potential as ``potential`` (its parameters are this module's
    parameters, so optimisers, EMA and ``state_dict()["potential.*"]`` see the same tensors)
    and satisfies ``PotentialInterface`` by delegating its metadata (``family``, ``spec``,
    ``type_names``, ``r_max``, ...) to it.

    Args:
        potential: the eager potential (not modified).
        backend: ``torch.compile`` backend ("inductor" generates C++/Triton code; "aot_eager"
            runs the traced graph without code generation, for checks).
        options: extra ``torch.compile`` keyword arguments (e.g. ``mode``).
    """

    def __init__(self, potential: Potential, backend: str = "inductor", **options: Any):
        super().__init__()
        self.potential = potential
        self.backend = backend
        self.options = options
        self._compiled: dict[tuple, tuple[Callable, list[str]]] = {}

    def __getattr__(self, name: str) -> Any:
        """The ``PotentialInterface`` metadata (``POTENTIAL_METADATA``) of the wrapped potential."""
        if name in POTENTIAL_METADATA:
            return getattr(self.potential, name)
        return super().__getattr__(name)

    def forward(
        self,
        data: dict[str, torch.Tensor],
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Same contract as ``Potential.forward``; compiled for batches of >= 2 atoms/edges."""
        create_graph = self.training if create_graph is None else create_graph
        options = {
            "compute_forces": compute_forces,
            "compute_stress": compute_stress,
            "create_graph": create_graph,
        }
        inputs = select_inputs(self.potential.energy_model, data)
        self.potential.energy_model.check_graph_inputs(inputs)  # the trace holds no checks
        if inputs[keys.POSITIONS].shape[0] < 2 or inputs[keys.EDGE_INDEX].shape[1] < 2:
            return self.potential(inputs, **options)
        names = sorted(inputs)
        signature = (
            tuple(names),
            int(inputs[keys.PTR].shape[0]) - 1,
            compute_forces,
            compute_stress,
            inputs[keys.POSITIONS].device.type,
        )
        state = [*self.potential.parameters(), *self.potential.buffers()]
        args = [inputs[name] for name in names] + state
        if signature not in self._compiled:
            self._compiled[signature] = self._trace(names, args, compute_forces, compute_stress)
        compiled, out_keys = self._compiled[signature]
        if create_graph:
            outputs = compiled(*args)
        else:
            with torch.no_grad():
                outputs = compiled(*args)
        return dict(zip(out_keys, outputs, strict=True))

    def _trace(
        self, names: list[str], args: list[torch.Tensor], forces: bool, stress: bool
    ) -> tuple[Callable, list[str]]:
        """Trace one whole call (derivatives included) and compile the graph."""
        graph, out_keys = trace_potential(self.potential, names, args, forces, stress)
        compiled = torch.compile(graph, backend=self.backend, dynamic=True, **self.options)
        return compiled, out_keys


def trace_potential(
    potential: Potential,
    names: list[str],
    args: list[torch.Tensor],
    forces: bool,
    stress: bool,
    edge_gradients: bool = False,
) -> tuple[torch.fx.GraphModule, list[str]]:
    """Trace one whole call of ``potential``, derivatives included (step 1 of the docstring).

    Args:
        potential: the eager potential.
        names: the batch keys of the leading ``args``, sorted (``MODEL_INPUT_KEYS`` present).
        args: the batch tensors in ``names`` order, then ``potential``'s parameters and
            buffers in ``named_parameters()`` / ``named_buffers()`` order.
        forces: compute forces.
        stress: compute stress and virial.
        edge_gradients: output ``edge_gradient``, ``dE/dr_ij`` per edge.

    Returns:
        The graph (its inputs ``args``, the atom and edge axes symbolic; ``create_graph``
        semantics) and the output keys, in the order of the graph's outputs.
    """
    state_names = [n for n, _ in potential.named_parameters()]
    state_names += [n for n, _ in potential.named_buffers()]
    out_keys: list[str] = []

    def flat_call(*flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        data = dict(zip(names, flat[: len(names)], strict=True))
        state = dict(zip(state_names, flat[len(names) :], strict=True))
        out = torch.func.functional_call(
            potential,
            state,
            (data,),
            {
                "compute_forces": forces,
                "compute_stress": stress,
                "create_graph": True,
                "compute_edge_gradients": edge_gradients,
                "check_inputs": False,  # data-dependent: the callers check the real batch
            },
        )
        out_keys[:] = sorted(out)
        return tuple(out[k] for k in out_keys)

    graph = make_fx(
        flat_call,
        decomposition_table=_decompositions(),
        tracing_mode="symbolic",
        _allow_non_fake_inputs=True,
    )(*_fake_inputs(names, args))
    _contiguous_single_cats(graph)
    _sum_into_single_rows(graph)
    return graph, list(out_keys)


def _fake_inputs(names: list[str], args: list[torch.Tensor]) -> list[torch.Tensor]:
    """Fake copies of the trace inputs: the atom/edge axis symbolic, every other size fixed.

    ``names`` label the leading batch tensors; the remaining ``args`` (parameters, buffers)
    are all fixed-shape. No duck sizing: equal sizes at trace time stay separate symbols.
    """
    mode = FakeTensorMode(
        allow_non_fake_inputs=True, shape_env=ShapeEnv(duck_shape=False), static_shapes=False
    )
    fakes = []
    for index, tensor in enumerate(args):
        axis = _SYMBOLIC_AXIS.get(names[index]) if index < len(names) else None
        sizes = [
            DimDynamic.DYNAMIC if dim == axis else DimDynamic.STATIC for dim in range(tensor.dim())
        ]
        context = StatelessSymbolicContext(dynamic_sizes=sizes)
        fakes.append(mode.from_tensor(tensor, symbolic_context=context))
    return fakes


def _contiguous_single_cats(graph: torch.fx.GraphModule) -> None:
    """Replace each one-input ``aten.cat`` by a contiguous ``clone`` (see module docstring)."""
    for node in graph.graph.nodes:
        if node.target is torch.ops.aten.cat.default and len(node.args[0]) == 1:
            node.target = torch.ops.aten.clone.default
            node.args = (node.args[0][0],)
            node.kwargs = {"memory_format": torch.contiguous_format}
    graph.recompile()


def _sum_into_single_rows(graph: torch.fx.GraphModule) -> None:
    """Replace each accumulating ``index_put`` into one row by a sum (see module docstring)."""
    aten = torch.ops.aten
    for node in list(graph.graph.nodes):
        if node.target is not aten.index_put.default or len(node.args) < 4 or not node.args[3]:
            continue
        target, indices, values = node.args[:3]
        shape = target.meta["val"].shape
        if len(indices) != 1 or shape[0] != 1 or values.meta["val"].dim() != len(shape):
            continue
        with graph.graph.inserting_before(node):
            total = graph.graph.call_function(aten.sum.dim_IntList, (values, [0], True))
            node.replace_all_uses_with(graph.graph.call_function(aten.add.Tensor, (target, total)))
        graph.graph.erase_node(node)
    graph.recompile()


def compile_potential(
    potential: Potential, backend: str = "inductor", **options: Any
) -> CompiledPotential:
    """Wrap ``potential`` so that its calls (energy, forces, stress, force training) compile.

    Args:
        potential: an eager ``Potential`` (any family).
        backend: ``torch.compile`` backend, "inductor" by default.
        **options: extra ``torch.compile`` keyword arguments.

    Returns:
        A ``CompiledPotential`` sharing the potential's parameters; traces and compiles
        lazily on the first call of each signature (number of graphs, outputs requested).

    Raises:
        ModelContractError: the eager potential breaks the contract (``check_model``, run
            before anything is traced).
    """
    check_model(potential)
    return CompiledPotential(potential, backend, **options)
