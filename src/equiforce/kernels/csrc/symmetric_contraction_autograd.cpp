// Autograd kernels of the symmetric contraction's operators (sc_forward, sc_moment,
// sc_gradient; symmetric_contraction.cpp).
//
// The three operators are the partial derivatives of
//
//   Phi = sum G[n, out[k], c] P[s, k, c] nu_{mono[k]}(n, c),
//
// nu = mu(x) (the monomials) or, given a direction v, mu'(x)[v]: forward = dPhi/dG,
// moment = dPhi/dP, gradient = dPhi/dx. The backward of each is again these operators, called
// through the dispatcher (differentiable in turn, traced as the same opaque calls), so forces
// and force training never leave them. The exception is the x-, P- or G-derivative of a
// gradient that already has a direction (a third derivative: a Hessian term trained through
// the model), written here with differentiable ATen ops over the same monomials. Only the
// gradients the running backward pass uses are made (AutogradContext::needs_input_grad asks
// the current graph task). The fake (meta) formulas are kernels/symmetric_ops.py's.
//
// Tensors: x, v (n, d, C) and G (n, out_dim, C) channel-last; P (n_types, K, C); atom_type (n,),
// pairs (2, n_pairs), cubes (2, n_cubes), terms (2, K) int64 (kernels/symmetric_ops.py).
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include <optional>
#include <utility>

#include "library_operator.h"

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;
using T = const Tensor&;
using OptionalTensor = std::optional<Tensor>;

// Which monomials exist and which species each atom has: one non-differentiable argument of
// the autograd Functions.
struct MonomialTable {
  Tensor atom_type, pairs, cubes, terms;
};

OptionalTensor direction(const Tensor& v) { return v.defined() ? OptionalTensor(v) : std::nullopt; }

// y (n, n_out, C)
Tensor sc_forward(T p, T x, const OptionalTensor& v, const MonomialTable& t, c10::SymInt n_out) {
  static auto op = equiforce_ops::library_operator<Tensor(T, T, const OptionalTensor&, T, T, T,
                                                          T, c10::SymInt)>(
      EQF_OPERATOR("sc_forward"));
  return op.call(p, x, v, t.atom_type, t.pairs, t.cubes, t.terms, std::move(n_out));
}

// gP (n_types, K, C)
Tensor sc_moment(T g, T x, const OptionalTensor& v, const MonomialTable& t,
                 c10::SymInt n_types) {
  static auto op = equiforce_ops::library_operator<Tensor(T, T, const OptionalTensor&, T, T, T,
                                                          T, c10::SymInt)>(
      EQF_OPERATOR("sc_moment"));
  return op.call(g, x, v, t.atom_type, t.pairs, t.cubes, t.terms, std::move(n_types));
}

// gx (n, d, C)
Tensor sc_gradient(T p, T g, T x, const OptionalTensor& v, const MonomialTable& t) {
  static auto op =
      equiforce_ops::library_operator<Tensor(T, T, T, const OptionalTensor&, T, T, T, T)>(
          EQF_OPERATOR("sc_gradient"));
  return op.call(p, g, x, v, t.atom_type, t.pairs, t.cubes, t.terms);
}

// mu(x) (v undefined) or its directional derivative mu'(x)[v], (n, M, C), in ATen ops.
Tensor monomials(T x, T v, const MonomialTable& t) {
  const Tensor a = t.pairs[0], b = t.pairs[1], k = t.cubes[0], q = t.cubes[1];
  const Tensor pair = x.index_select(1, a) * x.index_select(1, b);
  if (!v.defined()) {
    return torch::cat({x, pair, x.index_select(1, k) * pair.index_select(1, q)}, 1);
  }
  const Tensor pair_dot =
      v.index_select(1, a) * x.index_select(1, b) + x.index_select(1, a) * v.index_select(1, b);
  return torch::cat({v, pair_dot,
                     v.index_select(1, k) * pair.index_select(1, q) +
                         x.index_select(1, k) * pair_dot.index_select(1, q)},
                    1);
}

// dPhi/dx (the gradient operator) through autograd, differentiable to any order; x must
// require grad. Per species, its atoms masked (no (n, K, C) gather of P; shapes independent of
// the species counts).
Tensor autograd_gradient(T p, T g, T x, T v, const MonomialTable& t) {
  const Tensor nu = monomials(x, v, t).index_select(1, t.terms[1]);  // (n, K, C)
  const Tensor g_terms = g.index_select(1, t.terms[0]);              // (n, K, C)
  const Tensor own = torch::one_hot(t.atom_type, p.size(0)).to(x.scalar_type());  // (n, S)
  Tensor phi = torch::zeros({}, x.options());
  for (int64_t s = 0; s < p.size(0); ++s) {
    phi = phi + torch::einsum("kc,nkc,nkc->",
                              {p[s], g_terms * own.select(1, s).view({-1, 1, 1}), nu});
  }
  return torch::autograd::grad({phi}, {x}, {}, /*retain_graph=*/std::nullopt,
                               /*create_graph=*/true)[0];
}

// The backward of a gradient with a direction with respect to p, g, x, v (those `need` asks
// for; zeros where the form does not depend on one), in ATen ops.
tensor_list third_derivatives(T grad, T p, T g, T x, T v, const MonomialTable& t,
                              const std::vector<bool>& need) {
  torch::AutoGradMode enable_grad(true);
  // Derivatives with respect to aliases are partial ones: g or v may depend on x upstream (a
  // force loss's g does), and that path is not this function's.
  tensor_list inputs;
  for (const Tensor& operand : {p, g, x, v}) {
    inputs.push_back(operand.requires_grad() ? operand.view_as(operand)
                                             : operand.detach().requires_grad_(true));
  }
  const Tensor out = autograd_gradient(inputs[0], inputs[1], inputs[2], inputs[3], t);
  tensor_list wanted;
  for (size_t i = 0; i < 4; ++i) {
    if (need[i]) wanted.push_back(inputs[i]);
  }
  const tensor_list found = torch::autograd::grad({out}, wanted, {grad}, std::nullopt,
                                                  /*create_graph=*/true, /*allow_unused=*/true);
  tensor_list grads(4);
  for (size_t i = 0, next = 0; i < 4; ++i) {
    if (!need[i]) continue;
    const Tensor& d = found[next++];
    grads[i] = d.defined() ? d : torch::zeros_like(inputs[i]);
  }
  return grads;
}

// Which of the operands (two, then the optional direction) the running backward pass needs:
// needs_input_grad counts the tensors that were passed, so v's flag exists only when it did.
std::vector<bool> needed(AutogradContext* ctx, size_t operands, bool has_direction) {
  std::vector<bool> need;
  for (size_t i = 0; i < operands; ++i) need.push_back(ctx->needs_input_grad(i));
  need.push_back(has_direction && ctx->needs_input_grad(operands));
  return need;
}

MonomialTable saved_table(const tensor_list& saved, size_t first) {
  return {saved[first], saved[first + 1], saved[first + 2], saved[first + 3]};
}

void save(AutogradContext* ctx, tensor_list operands, const OptionalTensor& v,
          const MonomialTable& t) {
  operands.push_back(v ? *v : Tensor());
  for (const Tensor& index : {t.atom_type, t.pairs, t.cubes, t.terms}) operands.push_back(index);
  ctx->save_for_backward(operands);
}

// dPhi/dG; its operands' gradients: moment (P), gradient (x; along v: gradient without one).
struct Forward : public torch::autograd::Function<Forward> {
  static Tensor forward(AutogradContext* ctx, T p, T x, const OptionalTensor& v,
                        const MonomialTable& table, c10::SymInt n_out) {
    save(ctx, {p, x}, v, table);
    at::AutoDispatchBelowADInplaceOrView guard;
    return sc_forward(p, x, v, table, std::move(n_out));
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const tensor_list saved = ctx->get_saved_variables();
    const Tensor &p = saved[0], &x = saved[1], &v = saved[2], &grad = grads[0];
    const MonomialTable table = saved_table(saved, 3);
    const std::vector<bool> need = needed(ctx, 2, v.defined());
    Tensor grad_p, grad_x, grad_v;
    if (need[0]) grad_p = sc_moment(grad, x, direction(v), table, p.sym_size(0));
    if (need[1]) grad_x = sc_gradient(p, grad, x, direction(v), table);
    if (need[2]) grad_v = sc_gradient(p, grad, x, std::nullopt, table);
    return {grad_p, grad_x, grad_v, Tensor(), Tensor()};
  }
};

// dPhi/dP; its operands' gradients: forward (G), gradient (x; along v: gradient without one).
struct Moment : public torch::autograd::Function<Moment> {
  static Tensor forward(AutogradContext* ctx, T g, T x, const OptionalTensor& v,
                        const MonomialTable& table, c10::SymInt n_types) {
    save(ctx, {g, x}, v, table);
    at::AutoDispatchBelowADInplaceOrView guard;
    return sc_moment(g, x, v, table, std::move(n_types));
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const tensor_list saved = ctx->get_saved_variables();
    const Tensor &g = saved[0], &x = saved[1], &v = saved[2], &grad = grads[0];
    const MonomialTable table = saved_table(saved, 3);
    const std::vector<bool> need = needed(ctx, 2, v.defined());
    Tensor grad_g, grad_x, grad_v;
    if (need[0]) grad_g = sc_forward(grad, x, direction(v), table, g.sym_size(1));
    if (need[1]) grad_x = sc_gradient(grad, g, x, direction(v), table);
    if (need[2]) grad_v = sc_gradient(grad, g, x, std::nullopt, table);
    return {grad_g, grad_x, grad_v, Tensor(), Tensor()};
  }
};

// dPhi/dx; without a direction its operands' gradients are moment (P), forward (G) and
// gradient along the incoming gradient (x); with one, the v-gradient is the same Hessian
// applied to the incoming gradient and the others are third derivatives.
struct Gradient : public torch::autograd::Function<Gradient> {
  static Tensor forward(AutogradContext* ctx, T p, T g, T x, const OptionalTensor& v,
                        const MonomialTable& table) {
    save(ctx, {p, g, x}, v, table);
    at::AutoDispatchBelowADInplaceOrView guard;
    return sc_gradient(p, g, x, v, table);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    const tensor_list saved = ctx->get_saved_variables();
    const Tensor &p = saved[0], &g = saved[1], &x = saved[2], &v = saved[3], &grad = grads[0];
    const MonomialTable table = saved_table(saved, 4);
    const std::vector<bool> need = needed(ctx, 3, v.defined());
    if (v.defined()) {
      if (need[0] || need[1] || need[2]) {
        tensor_list out = third_derivatives(grad, p, g, x, v, table, need);
        out.push_back(Tensor());  // the table
        return out;
      }
      Tensor grad_v = need[3] ? sc_gradient(p, g, x, direction(grad), table) : Tensor();
      return {Tensor(), Tensor(), Tensor(), grad_v, Tensor()};
    }
    Tensor grad_p, grad_g, grad_x;
    if (need[0]) grad_p = sc_moment(g, x, direction(grad), table, p.sym_size(0));
    if (need[1]) grad_g = sc_forward(p, x, direction(grad), table, g.sym_size(1));
    // a linear polynomial (no pairs) has an x-independent gradient
    if (need[2] && table.pairs.size(1) > 0) {
      grad_x = sc_gradient(p, g, x, direction(grad), table);
    }
    return {grad_p, grad_g, grad_x, Tensor(), Tensor()};
  }
};

}  // namespace

Tensor sc_forward_autograd(T p, T x, const OptionalTensor& v, T atom_type, T pairs, T cubes,
                           T terms, c10::SymInt n_out) {
  return Forward::apply(p, x, v, MonomialTable{atom_type, pairs, cubes, terms},
                        std::move(n_out));
}

Tensor sc_moment_autograd(T g, T x, const OptionalTensor& v, T atom_type, T pairs, T cubes,
                          T terms, c10::SymInt n_types) {
  return Moment::apply(g, x, v, MonomialTable{atom_type, pairs, cubes, terms},
                       std::move(n_types));
}

Tensor sc_gradient_autograd(T p, T g, T x, const OptionalTensor& v, T atom_type, T pairs,
                            T cubes, T terms) {
  return Gradient::apply(p, g, x, v, MonomialTable{atom_type, pairs, cubes, terms});
}
