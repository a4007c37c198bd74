"""A MACE layer over receiver chunks whose backward recomputes one chunk at a time.

For energy + forces of a large structure (``equiforce.models.mace`` with receiver chunks,
gradients on, not training) the layer is one autograd node, ``recomputed_layer``:

* forward (no autograd graph): chunk by chunk (``equiforce.nn.edge_chunks.ChunkBounds``),
  gather the chunk's local node features, embed its edge vectors (spherical harmonics and
  radial basis), interaction and product block, and write its receivers' rows of the
  output. Kept for the backward pass: the layer's input features and the edge vectors,
  tensors the caller holds anyway; nothing per edge or per chunk.
* backward: chunk by chunk, the same forward with autograd, then the vector-Jacobian
  product of the chunk's rows of the output gradient; node-feature gradients are added
  into one (n_atoms, F) buffer (``index_add_``), edge-vector gradients written into
  their slice of one (n_edges, 3) buffer, parameter gradients summed.

So between forward and backward a layer holds O(n_atoms x F) for its output, and the
backward's working set is one chunk's: no (n_edges x features) tensor of the whole graph
exists at any time, and the edge embeddings are never stored for the whole graph (they
cost ~100 bytes per edge, ~3.5 KB per atom at 35 edges per atom, and their autograd
intermediates several times that).

Which input gradients the backward makes: those the running backward pass will use
(``equiforce.kernels.backward_needs``). A forces call (``autograd.grad(E, positions)``) then
skips the parameter gradients (the radial MLP's weight GEMMs) and the first layer's
node-feature gradient (the species embedding does not depend on positions). Where that
check is not available the backward makes every gradient its inputs require (the same
numbers, more work).

Under ``create_graph`` (a force loss through an eval-mode model) the backward is built
from differentiable operations on the saved inputs, so derivatives of any order are exact:
the chunks' node-feature gradients are then concatenated and added once (one gradient
row per local node of every chunk: a few times the layer's input size).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from equiforce.kernels.backward_needs import needed_inputs
from equiforce.nn.edge_chunks import ChunkBounds, LocalGraph
from equiforce.nn.mace.embedding import EdgeEmbedding
from equiforce.nn.mace.interaction import Interaction
from equiforce.nn.mace.product import Product

__all__ = ["chunk_features", "recomputed_layer"]


def chunk_features(
    edge_embedding: EdgeEmbedding,
    interaction: Interaction,
    product: Product,
    local_feats: torch.Tensor,
    edge_vec: torch.Tensor,
    atom_type: torch.Tensor,
    graph: LocalGraph,
) -> torch.Tensor:
    """New features of one chunk's receivers.

    Args:
        edge_embedding, interaction, product: the layer's blocks.
        local_feats: (n_local, node_in.dim) model dtype, features of the chunk's local
            nodes (``graph.nodes``).
        edge_vec: (n_chunk_edges, 3) float64 Å, centre -> neighbour vectors of the chunk's
            edges (the negative of mace-torch's direction; cast to the model dtype here).
        atom_type: (n_atoms,) int64 species of every atom.
        graph: the chunk.

    Returns:
        (n_receivers, skip_out.dim) model dtype.
    """
    edge_types = None
    if edge_embedding.needs_types:
        ends = graph.nodes[graph.senders], graph.nodes[graph.receivers]
        edge_types = (atom_type[ends[0]], atom_type[ends[1]])
    edge_attrs, edge_radial = edge_embedding(-edge_vec.to(local_feats.dtype), edge_types)
    r0, r1 = graph.atoms
    own_type = atom_type[r0:r1]
    own = local_feats[graph.first_row : graph.first_row + r1 - r0]
    message, sc = interaction.messages(
        interaction.linear_up(local_feats),
        own,
        own_type,
        edge_attrs,
        edge_radial,
        graph.senders,
        graph.receivers,
        graph.first_row,
        up_type=atom_type[graph.nodes],
    )
    return product(message, own_type, sc)


def recomputed_layer(
    edge_embedding: EdgeEmbedding,
    interaction: Interaction,
    product: Product,
    node_feats: torch.Tensor,
    edge_vec: torch.Tensor,
    atom_type: torch.Tensor,
    bounds: ChunkBounds,
) -> torch.Tensor:
    """One MACE layer (interaction + product) over receiver chunks (module docstring).

    Args:
        edge_embedding, interaction, product: the layer's blocks.
        node_feats: (n_atoms, node_in.dim) model dtype, the layer's input features.
        edge_vec: (n_edges, 3) float64 Å, centre -> neighbour, sorted by receiver
            (``bounds.edge_order`` applied).
        atom_type: (n_atoms,) int64.
        bounds: the chunks; they cover receivers ``0 .. bounds.atom_bounds[-1] - 1``.

    Returns:
        (bounds.atom_bounds[-1], skip_out.dim) model dtype, equal to the one-pass layer's
        rows of those receivers.
    """
    blocks = (edge_embedding, interaction, product)
    params = [p for block in blocks for p in block.parameters()]
    return _RecomputedLayer.apply(blocks, bounds, atom_type, node_feats, edge_vec, *params)


class _RecomputedLayer(torch.autograd.Function):
    """Inputs: blocks, bounds, atom_type, node_feats, edge_vec, *parameters."""

    @staticmethod
    def forward(
        ctx: Any,
        blocks: tuple[nn.Module, nn.Module, nn.Module],
        bounds: ChunkBounds,
        atom_type: torch.Tensor,
        node_feats: torch.Tensor,
        edge_vec: torch.Tensor,
        *params: torch.Tensor,
    ) -> torch.Tensor:
        out = None
        for c in range(len(bounds)):
            graph = bounds.local(c)
            e0, e1 = graph.edges
            local = node_feats.index_select(0, graph.nodes)
            rows = chunk_features(*blocks, local, edge_vec[e0:e1], atom_type, graph)
            if out is None:
                out = rows.new_empty(bounds.atom_bounds[-1], rows.shape[1])
            out[graph.atoms[0] : graph.atoms[1]] = rows
        ctx.blocks, ctx.bounds, ctx.params = blocks, bounds, params
        ctx.save_for_backward(atom_type, node_feats, edge_vec)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        atom_type, node_feats, edge_vec = ctx.saved_tensors
        # inputs: blocks, bounds, then tensors (atom_type, node_feats, edge_vec, params)
        used = needed_inputs(ctx, (False, False) + (True,) * len(ctx.next_functions))[2:]
        want_feats, want_vec = used[1], used[2]
        params = [p for p, want in zip(ctx.params, used[3:], strict=True) if want]
        if not (want_feats or want_vec or params):
            return (None,) * len(ctx.needs_input_grad)
        create_graph = torch.is_grad_enabled()
        accumulate = _Gradients(node_feats, edge_vec, want_feats, want_vec, params, create_graph)
        for c in range(len(ctx.bounds)):
            graph = ctx.bounds.local(c)
            e0, e1 = graph.edges
            with torch.enable_grad():
                if create_graph:  # differentiable in the saved inputs
                    local = node_feats.index_select(0, graph.nodes)
                    vec = edge_vec[e0:e1]
                else:
                    local = node_feats.detach().index_select(0, graph.nodes)
                    local.requires_grad_(want_feats)
                    vec = edge_vec.detach()[e0:e1].requires_grad_(want_vec)
                rows = chunk_features(*ctx.blocks, local, vec, atom_type, graph)
                wrt = [local] * want_feats + [vec] * want_vec + params
                grads = torch.autograd.grad(
                    rows,
                    wrt,
                    grad_out[graph.atoms[0] : graph.atoms[1]],
                    create_graph=create_graph,
                    allow_unused=True,
                )
            accumulate.add(graph, list(grads))
        feats_grad, vec_grad, param_grads = accumulate.result()
        by_param = dict(zip(map(id, params), param_grads, strict=True))
        return (
            None,
            None,
            None,
            feats_grad,
            vec_grad,
            *(by_param.get(id(p)) for p in ctx.params),
        )


class _Gradients:
    """Sums of the chunks' gradients: in place, or differentiably under ``create_graph``."""

    def __init__(
        self,
        node_feats: torch.Tensor,
        edge_vec: torch.Tensor,
        want_feats: bool,
        want_vec: bool,
        params: list[torch.Tensor],
        create_graph: bool,
    ):
        self.create_graph = create_graph
        self.want_feats, self.want_vec = want_feats, want_vec
        self.shape_feats, self.shape_vec = node_feats, edge_vec
        self.params = [torch.zeros_like(p) for p in params]
        if create_graph:
            self.nodes: list[torch.Tensor] = []
            self.feats: list[torch.Tensor] = []
            self.vecs: list[torch.Tensor] = []
        else:
            self.feats_sum = torch.zeros_like(node_feats) if want_feats else None
            self.vec_sum = torch.zeros_like(edge_vec) if want_vec else None

    def add(self, graph: LocalGraph, grads: list[torch.Tensor | None]) -> None:
        """One chunk's gradients, in ``wrt`` order (features, vectors, parameters)."""
        e0, e1 = graph.edges
        if self.want_feats:
            grad = _zero_if_none(grads.pop(0), (len(graph.nodes),), self.shape_feats)
            if self.create_graph:
                self.nodes.append(graph.nodes)
                self.feats.append(grad)
            else:
                self.feats_sum.index_add_(0, graph.nodes, grad)
        if self.want_vec:
            grad = _zero_if_none(grads.pop(0), (e1 - e0,), self.shape_vec)
            if self.create_graph:
                self.vecs.append(grad)
            else:
                self.vec_sum[e0:e1] = grad
        for i, grad in enumerate(grads):
            if grad is None:
                continue
            if self.create_graph:
                self.params[i] = self.params[i] + grad
            else:
                self.params[i].add_(grad)

    def result(self) -> tuple[torch.Tensor | None, torch.Tensor | None, list[torch.Tensor]]:
        """Node-feature gradient, edge-vector gradient, parameter gradients."""
        if not self.create_graph:
            return self.feats_sum, self.vec_sum, self.params
        feats = None
        if self.want_feats:
            feats = torch.zeros_like(self.shape_feats).index_add(
                0, torch.cat(self.nodes), torch.cat(self.feats)
            )
        vec = torch.cat(self.vecs) if self.want_vec else None
        return feats, vec, self.params


def _zero_if_none(grad: torch.Tensor | None, rows: tuple[int], like: torch.Tensor) -> torch.Tensor:
    """``grad``, or zeros of ``rows`` rows shaped like ``like``'s rows."""
    return like.new_zeros(rows + tuple(like.shape[1:])) if grad is None else grad
