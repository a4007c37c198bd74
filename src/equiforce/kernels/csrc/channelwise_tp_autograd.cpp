// Autograd kernels of the edge convolution's operators (cwtp_node_out, cwtp_edge_r,
// cwtp_edge_s; kernel_ops.cpp, channelwise_tp.cpp).
//
// The three operators are the partial derivatives of one trilinear form over the edges,
//
//   F = sum_e sum_t S[e, c_t] * sum_u A[g(e), ia_t, u] * R[w(e), p_t, u] * B[o(e), ib_t, u],
//
// node_out = dF/dB, edge_r = dF/dR, edge_s = dF/dS, so the gradient of each with respect to any
// of its three operands is one of them again, with the roles of A and B (gather and scatter
// side) swapped where the gradient lands on A: the edge graph seen from B (`transposed`). The
// backward passes call the operators through the dispatcher, so they are differentiable in
// turn (force training's double backward) and traced as the same opaque calls
// (torch.export, make_fx). Only the gradients the running backward pass uses are made
// (AutogradContext::needs_input_grad asks the current graph task, e.g. a force-training
// step's parameter backward skips the position-only ones). The fake (meta) formulas are
// kernels/edge_ops.py's.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include <utility>

#include "library_operator.h"

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// The EdgeGraph of kernels/edge_ops.py, in the operators' schema order. Index tensors only:
// passed to the autograd Functions as one non-differentiable argument.
struct EdgeGraph {
  Tensor gather, other, perm_o, offsets_o, perm_g, offsets_g, weight_row, perm_w, offsets_w,
      triples, swapped;

  // The same graph seen from B's side (gather from B, scatter onto A).
  EdgeGraph transposed() const {
    return {other,      gather, perm_g,    offsets_g, perm_o, offsets_o,
            weight_row, perm_w, offsets_w, swapped,   triples};
  }

  tensor_list tensors() const {
    return {gather,     other,  perm_o,    offsets_o, perm_g, offsets_g,
            weight_row, perm_w, offsets_w, triples,   swapped};
  }

  // The graph saved after `first` operands.
  static EdgeGraph saved(const tensor_list& t, size_t first) {
    return {t[first],     t[first + 1], t[first + 2], t[first + 3],
            t[first + 4], t[first + 5], t[first + 6], t[first + 7],
            t[first + 8], t[first + 9], t[first + 10]};
  }
};

using T = const Tensor&;
using NodeOutSignature = Tensor(T, T, T, T, T, T, T, T, T, T, T, T, T, T, c10::SymInt,
                                c10::SymInt);
using EdgeRSignature = Tensor(T, T, T, T, T, T, T, T, T, T, T, T, T, T, c10::SymInt);
using EdgeSSignature = Tensor(T, T, T, T, T, T, T, T, T, T, T, T, T, T);

// out[o, ib, u] (n_out, d_out, U)
Tensor node_out(T a, T s, T r, const EdgeGraph& g, c10::SymInt n_out, c10::SymInt d_out) {
  static auto op =
      equiforce_ops::library_operator<NodeOutSignature>(EQF_OPERATOR("cwtp_node_out"));
  return op.call(a, s, r, g.gather, g.other, g.perm_o, g.offsets_o, g.perm_g, g.offsets_g,
                 g.weight_row, g.perm_w, g.offsets_w, g.triples, g.swapped, std::move(n_out),
                 std::move(d_out));
}

// out[w, p, u] (n_r, n_paths, U)
Tensor edge_r(T a, T s, T b, const EdgeGraph& g, c10::SymInt n_paths) {
  static auto op = equiforce_ops::library_operator<EdgeRSignature>(EQF_OPERATOR("cwtp_edge_r"));
  return op.call(a, s, b, g.gather, g.other, g.perm_o, g.offsets_o, g.perm_g, g.offsets_g,
                 g.weight_row, g.perm_w, g.offsets_w, g.triples, g.swapped, std::move(n_paths));
}

// out[e, t] (n_edges, T)
Tensor edge_s(T a, T r, T b, const EdgeGraph& g) {
  static auto op = equiforce_ops::library_operator<EdgeSSignature>(EQF_OPERATOR("cwtp_edge_s"));
  return op.call(a, r, b, g.gather, g.other, g.perm_o, g.offsets_o, g.perm_g, g.offsets_g,
                 g.weight_row, g.perm_w, g.offsets_w, g.triples, g.swapped);
}

void save(AutogradContext* ctx, T x, T y, T z, const EdgeGraph& graph) {
  tensor_list saved{x, y, z};
  for (const Tensor& t : graph.tensors()) saved.push_back(t);
  ctx->save_for_backward(saved);
}

// dF/dB; its operands' gradients: node_out (onto A), edge_s, edge_r.
struct NodeOut : public torch::autograd::Function<NodeOut> {
  static Tensor forward(AutogradContext* ctx, T a, T s, T r, const EdgeGraph& graph,
                        c10::SymInt n_out, c10::SymInt d_out) {
    save(ctx, a, s, r, graph);
    at::AutoDispatchBelowADInplaceOrView guard;
    return node_out(a, s, r, graph, std::move(n_out), std::move(d_out));
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const tensor_list saved = ctx->get_saved_variables();
    const Tensor &a = saved[0], &s = saved[1], &r = saved[2], &grad = grads[0];
    const EdgeGraph graph = EdgeGraph::saved(saved, 3);
    Tensor grad_a, grad_s, grad_r;
    if (ctx->needs_input_grad(0)) {
      grad_a = node_out(grad, s, r, graph.transposed(), a.sym_size(0), a.sym_size(1));
    }
    if (ctx->needs_input_grad(1)) grad_s = edge_s(a, r, grad, graph);
    if (ctx->needs_input_grad(2)) grad_r = edge_r(a, s, grad, graph, r.sym_size(1));
    return {grad_a, grad_s, grad_r, Tensor(), Tensor(), Tensor()};
  }
};

// dF/dR; its operands' gradients: node_out (onto A), edge_s, node_out (onto B).
struct EdgeR : public torch::autograd::Function<EdgeR> {
  static Tensor forward(AutogradContext* ctx, T a, T s, T b, const EdgeGraph& graph,
                        c10::SymInt n_paths) {
    save(ctx, a, s, b, graph);
    at::AutoDispatchBelowADInplaceOrView guard;
    return edge_r(a, s, b, graph, std::move(n_paths));
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const tensor_list saved = ctx->get_saved_variables();
    const Tensor &a = saved[0], &s = saved[1], &b = saved[2], &grad = grads[0];
    const EdgeGraph graph = EdgeGraph::saved(saved, 3);
    Tensor grad_a, grad_s, grad_b;
    if (ctx->needs_input_grad(0)) {
      grad_a = node_out(b, s, grad, graph.transposed(), a.sym_size(0), a.sym_size(1));
    }
    if (ctx->needs_input_grad(1)) grad_s = edge_s(a, grad, b, graph);
    if (ctx->needs_input_grad(2)) {
      grad_b = node_out(a, s, grad, graph, b.sym_size(0), b.sym_size(1));
    }
    return {grad_a, grad_s, grad_b, Tensor(), Tensor()};
  }
};

// dF/dS; its operands' gradients: node_out (onto A), edge_r, node_out (onto B).
struct EdgeS : public torch::autograd::Function<EdgeS> {
  static Tensor forward(AutogradContext* ctx, T a, T r, T b, const EdgeGraph& graph) {
    save(ctx, a, r, b, graph);
    at::AutoDispatchBelowADInplaceOrView guard;
    return edge_s(a, r, b, graph);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const tensor_list saved = ctx->get_saved_variables();
    const Tensor &a = saved[0], &r = saved[1], &b = saved[2], &grad = grads[0];
    const EdgeGraph graph = EdgeGraph::saved(saved, 3);
    Tensor grad_a, grad_r, grad_b;
    if (ctx->needs_input_grad(0)) {
      grad_a = node_out(b, grad, r, graph.transposed(), a.sym_size(0), a.sym_size(1));
    }
    if (ctx->needs_input_grad(1)) grad_r = edge_r(a, grad, b, graph, r.sym_size(1));
    if (ctx->needs_input_grad(2)) {
      grad_b = node_out(a, grad, r, graph, b.sym_size(0), b.sym_size(1));
    }
    return {grad_a, grad_r, grad_b, Tensor()};
  }
};

}  // namespace

Tensor cwtp_node_out_autograd(T a, T s, T r, T gather, T other, T perm_o, T offsets_o, T perm_g,
                              T offsets_g, T weight_row, T perm_w, T offsets_w, T triples,
                              T swapped, c10::SymInt n_out, c10::SymInt d_out) {
  const EdgeGraph graph{gather,     other,  perm_o,    offsets_o, perm_g, offsets_g,
                        weight_row, perm_w, offsets_w, triples,   swapped};
  return NodeOut::apply(a, s, r, graph, std::move(n_out), std::move(d_out));
}

Tensor cwtp_edge_r_autograd(T a, T s, T b, T gather, T other, T perm_o, T offsets_o, T perm_g,
                            T offsets_g, T weight_row, T perm_w, T offsets_w, T triples,
                            T swapped, c10::SymInt n_paths) {
  const EdgeGraph graph{gather,     other,  perm_o,    offsets_o, perm_g, offsets_g,
                        weight_row, perm_w, offsets_w, triples,   swapped};
  return EdgeR::apply(a, s, b, graph, std::move(n_paths));
}

Tensor cwtp_edge_s_autograd(T a, T r, T b, T gather, T other, T perm_o, T offsets_o, T perm_g,
                            T offsets_g, T weight_row, T perm_w, T offsets_w, T triples,
                            T swapped) {
  const EdgeGraph graph{gather,     other,  perm_o,    offsets_o, perm_g, offsets_g,
                        weight_row, perm_w, offsets_w, triples,   swapped};
  return EdgeS::apply(a, r, b, graph);
}
