// Allegro's tensor track on pairs: the channel weighting of the edge harmonics (the tensor
// product with the centre's environment is allegro_product.cpp's). Three operators closed
// under differentiation, the partial derivatives of one trilinear form
//   F = sum_{e, i, u} g[i, e, u] * basis[e, i] * w[e, u * n_irreps + irrep_i],
// with g either per pair, component-major (dim, n_edges, mul), or per atom,
// g[i, e, u] = h[centre_e, i * mul + u] (the row of each pair's centre):
//
// weighted_channels = dF/dg per pair: out[i, e, u] = basis[e, i] * w[e, u * n_irreps + irrep_i]
//   (the initial pair tensor features, (dim, n_edges, mul)). In torch ops a gather of the
//   weights per component and a product forward, and two products, a sum, a scatter-add and a
//   transposing copy backward.
// environment = dF/dh per atom: env[n, i * mul + u] = sum_{e: centre_e = n} basis[e, i] *
//   w[e, u * n_irreps + irrep_i] (the density of a layer: the weighted harmonics summed over
//   each atom's pairs). In torch ops two one-hot GEMMs (eager) or gathers (a trace), a product
//   and a scatter-add forward; a gather, products and scatters backward.
// weighting_backward = (dF/dbasis, dF/dw) for g per pair (centre absent) or per atom:
//   grad_basis[e, i] = sum_u g[i, e, u] w[e, u * n_irreps + irrep_i],
//   grad_w[e, u * n_irreps + k] = sum_{i: irrep_i = k} g[i, e, u] basis[e, i].
//
// Each is one loop over the pairs (atom rows accumulated serially: deterministic). Their
// autograd kernels are here too: the derivative of each is the others again, called through
// the dispatcher, so every order is differentiable and a trace (torch.export, torch.compile)
// records the same opaque calls, which an exported package runs (their fake formulas:
// kernels/allegro_tensor_track.py).
#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include <optional>
#include <tuple>
#include <vector>

#include "library_operator.h"
#include "pair_centres.h"

namespace {

using equiforce_ops::check_centre;
using torch::Tensor;

template <typename T>
void weighting_forward_loop(const T* __restrict__ basis, const T* __restrict__ w,
                            const int64_t* __restrict__ irrep_of, int64_t n_edges, int64_t dim,
                            int64_t mul, int64_t n_irreps, T* __restrict__ out) {
  const int64_t row = mul * n_irreps;
  for (int64_t i = 0; i < dim; ++i) {
    const int64_t k = irrep_of[i];
    T* oi = out + i * n_edges * mul;
    for (int64_t e = 0; e < n_edges; ++e) {
      const T be = basis[e * dim + i];
      const T* we = w + e * row + k;
      T* oe = oi + e * mul;
      for (int64_t u = 0; u < mul; ++u) oe[u] = be * we[u * n_irreps];
    }
  }
}

// one edge's share of the weighting's backward: g_e + i * g_stride is the gradient row of
// component i (mul numbers), the rows of the pair features (weighted_channels) or of the
// centre's environment (environment)
template <typename T>
inline void weighting_edge_backward(const T* __restrict__ g_e, int64_t g_stride,
                                    const T* __restrict__ basis_e, const T* __restrict__ w_e,
                                    const int64_t* __restrict__ irrep_of, int64_t dim,
                                    int64_t mul, int64_t n_irreps, T* __restrict__ grad_basis_e,
                                    T* __restrict__ grad_w_e) {
  for (int64_t i = 0; i < dim; ++i) {
    const int64_t k = irrep_of[i];
    const T* gi = g_e + i * g_stride;
    const T be = basis_e[i];
    T acc = T(0);
    for (int64_t u = 0; u < mul; ++u) {
      acc += gi[u] * w_e[u * n_irreps + k];
      grad_w_e[u * n_irreps + k] += gi[u] * be;
    }
    grad_basis_e[i] = acc;
  }
}

template <typename T>
void weighting_backward_loop(const T* __restrict__ g, const T* __restrict__ basis,
                             const T* __restrict__ w, const int64_t* __restrict__ irrep_of,
                             int64_t n_edges, int64_t dim, int64_t mul, int64_t n_irreps,
                             T* __restrict__ grad_basis, T* __restrict__ grad_w) {
  const int64_t row = mul * n_irreps;
  for (int64_t e = 0; e < n_edges; ++e) {
    weighting_edge_backward(g + e * mul, n_edges * mul, basis + e * dim, w + e * row, irrep_of,
                            dim, mul, n_irreps, grad_basis + e * dim, grad_w + e * row);
  }
}

template <typename T>
void environment_forward_loop(const T* __restrict__ basis, const T* __restrict__ w,
                              const int64_t* __restrict__ irrep_of,
                              const int64_t* __restrict__ centre, int64_t n_edges, int64_t dim,
                              int64_t mul, int64_t n_irreps, T* __restrict__ env) {
  const int64_t row = mul * n_irreps;
  for (int64_t e = 0; e < n_edges; ++e) {
    const int64_t n = centre[e];
    const T* we = w + e * row;
    T* out = env + n * dim * mul;
    for (int64_t i = 0; i < dim; ++i) {
      const T be = basis[e * dim + i];
      const T* wk = we + irrep_of[i];
      T* oi = out + i * mul;
      for (int64_t u = 0; u < mul; ++u) oi[u] += be * wk[u * n_irreps];
    }
  }
}

template <typename T>
void environment_backward_loop(const T* __restrict__ g, const T* __restrict__ basis,
                               const T* __restrict__ w, const int64_t* __restrict__ irrep_of,
                               const int64_t* __restrict__ centre, int64_t n_edges,
                               int64_t dim, int64_t mul, int64_t n_irreps,
                               T* __restrict__ grad_basis, T* __restrict__ grad_w) {
  const int64_t row = mul * n_irreps;
  for (int64_t e = 0; e < n_edges; ++e) {
    weighting_edge_backward(g + centre[e] * dim * mul, mul, basis + e * dim, w + e * row,
                            irrep_of, dim, mul, n_irreps, grad_basis + e * dim,
                            grad_w + e * row);
  }
}

// basis (n_edges, dim), w (n_edges, mul * n_irreps), irrep_of (dim,) in range
void check_weighting(const char* op, const Tensor& basis, const Tensor& w,
                     const Tensor& irrep_of, int64_t mul) {
  TORCH_CHECK(basis.device().is_cpu() && w.device().is_cpu(), op, ": CPU tensors only");
  TORCH_CHECK(basis.scalar_type() == w.scalar_type() &&
                  (basis.scalar_type() == at::kFloat || basis.scalar_type() == at::kDouble),
              op, ": basis and weights must both be float32 or float64");
  TORCH_CHECK(basis.dim() == 2 && w.dim() == 2 && w.size(0) == basis.size(0) && mul > 0 &&
                  w.size(1) % mul == 0,
              op, ": basis (n_edges, dim) and weights (n_edges, mul * n_irreps) expected");
  TORCH_CHECK(irrep_of.scalar_type() == at::kLong && irrep_of.is_contiguous() &&
                  irrep_of.dim() == 1 && irrep_of.size(0) == basis.size(1),
              op, ": irrep_of must be a contiguous (dim,) int64 tensor");
  const int64_t n_irreps = w.size(1) / mul;
  const int64_t* k = irrep_of.data_ptr<int64_t>();
  for (int64_t i = 0; i < irrep_of.size(0); ++i) {
    TORCH_CHECK(k[i] >= 0 && k[i] < n_irreps, op, ": irrep_of[", i, "] = ", k[i],
                " is not an irrep below ", n_irreps);
  }
}

}  // namespace

Tensor allegro_weighted_channels(const Tensor& basis_in, const Tensor& w_in,
                                 const Tensor& irrep_of, int64_t mul) {
  check_weighting("weighted_channels", basis_in, w_in, irrep_of, mul);
  auto basis = basis_in.contiguous(), w = w_in.contiguous();
  const int64_t n_edges = basis.size(0), dim = basis.size(1), n_irreps = w.size(1) / mul;
  auto out = torch::empty({dim, n_edges, mul}, basis.options());
  AT_DISPATCH_FLOATING_TYPES(basis.scalar_type(), "weighted_channels", [&] {
    weighting_forward_loop<scalar_t>(basis.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                     irrep_of.data_ptr<int64_t>(), n_edges, dim, mul, n_irreps,
                                     out.data_ptr<scalar_t>());
  });
  return out;
}

Tensor allegro_environment(const Tensor& basis_in, const Tensor& w_in, const Tensor& irrep_of,
                           const Tensor& centre, int64_t mul, c10::SymInt n_atoms_symbolic) {
  check_weighting("environment", basis_in, w_in, irrep_of, mul);
  const int64_t n_atoms = n_atoms_symbolic.expect_int();
  check_centre("environment", centre, basis_in.size(0), n_atoms);
  auto basis = basis_in.contiguous(), w = w_in.contiguous();
  const int64_t n_edges = basis.size(0), dim = basis.size(1), n_irreps = w.size(1) / mul;
  auto env = torch::zeros({n_atoms, dim * mul}, basis.options());
  AT_DISPATCH_FLOATING_TYPES(basis.scalar_type(), "environment", [&] {
    environment_forward_loop<scalar_t>(basis.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                       irrep_of.data_ptr<int64_t>(), centre.data_ptr<int64_t>(),
                                       n_edges, dim, mul, n_irreps, env.data_ptr<scalar_t>());
  });
  return env;
}

std::tuple<Tensor, Tensor> allegro_weighting_backward(const Tensor& g_in, const Tensor& basis_in,
                                                      const Tensor& w_in, const Tensor& irrep_of,
                                                      const std::optional<Tensor>& centre,
                                                      int64_t mul) {
  const char* op = "weighting_backward";
  check_weighting(op, basis_in, w_in, irrep_of, mul);
  auto g = g_in.contiguous(), basis = basis_in.contiguous(), w = w_in.contiguous();
  const int64_t n_edges = basis.size(0), dim = basis.size(1), n_irreps = w.size(1) / mul;
  TORCH_CHECK(g.scalar_type() == basis.scalar_type(), op, ": g must have the basis's dtype");
  if (centre.has_value()) {
    TORCH_CHECK(g.dim() == 2 && g.size(1) == dim * mul, op,
                ": g per atom must be (n_atoms, dim * mul), got ", g.sizes());
    check_centre(op, *centre, n_edges, g.size(0));
  } else {
    TORCH_CHECK(g.dim() == 3 && g.size(0) == dim && g.size(1) == n_edges && g.size(2) == mul,
                op, ": g per pair must be (dim, n_edges, mul), got ", g.sizes());
  }
  auto grad_basis = torch::empty_like(basis), grad_w = torch::zeros_like(w);
  AT_DISPATCH_FLOATING_TYPES(basis.scalar_type(), "weighting_backward", [&] {
    if (centre.has_value()) {
      environment_backward_loop<scalar_t>(
          g.data_ptr<scalar_t>(), basis.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
          irrep_of.data_ptr<int64_t>(), centre->data_ptr<int64_t>(), n_edges, dim, mul,
          n_irreps, grad_basis.data_ptr<scalar_t>(), grad_w.data_ptr<scalar_t>());
    } else {
      weighting_backward_loop<scalar_t>(g.data_ptr<scalar_t>(), basis.data_ptr<scalar_t>(),
                                        w.data_ptr<scalar_t>(), irrep_of.data_ptr<int64_t>(),
                                        n_edges, dim, mul, n_irreps,
                                        grad_basis.data_ptr<scalar_t>(),
                                        grad_w.data_ptr<scalar_t>());
    }
  });
  return {grad_basis, grad_w};
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// the operators through the dispatcher (autograd included, unless a guard excludes it)
Tensor call_weighted_channels(const Tensor& basis, const Tensor& w, const Tensor& irrep_of,
                              int64_t mul) {
  static auto op = equiforce_ops::library_operator<Tensor(const Tensor&, const Tensor&,
                                                          const Tensor&, int64_t)>(
      EQF_OPERATOR("allegro_weighted_channels"));
  return op.call(basis, w, irrep_of, mul);
}

Tensor call_environment(const Tensor& basis, const Tensor& w, const Tensor& irrep_of,
                        const Tensor& centre, int64_t mul, c10::SymInt n_atoms) {
  static auto op = equiforce_ops::library_operator<Tensor(
      const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, c10::SymInt)>(
      EQF_OPERATOR("allegro_environment"));
  return op.call(basis, w, irrep_of, centre, mul, std::move(n_atoms));
}

std::tuple<Tensor, Tensor> call_weighting_backward(const Tensor& g, const Tensor& basis,
                                                   const Tensor& w, const Tensor& irrep_of,
                                                   const std::optional<Tensor>& centre,
                                                   int64_t mul) {
  static auto op = equiforce_ops::library_operator<std::tuple<Tensor, Tensor>(
      const Tensor&, const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&,
      int64_t)>(EQF_OPERATOR("allegro_weighting_backward"));
  return op.call(g, basis, w, irrep_of, centre, mul);
}

struct WeightedChannels : public torch::autograd::Function<WeightedChannels> {
  static Tensor forward(AutogradContext* ctx, const Tensor& basis, const Tensor& w,
                        const Tensor& irrep_of, int64_t mul) {
    ctx->save_for_backward({basis, w, irrep_of});
    ctx->saved_data["mul"] = mul;
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_weighted_channels(basis, w, irrep_of, mul);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    auto [grad_basis, grad_w] = call_weighting_backward(
        grads[0], saved[0], saved[1], saved[2], std::nullopt, ctx->saved_data["mul"].toInt());
    return {grad_basis, grad_w, Tensor(), Tensor()};
  }
};

struct Environment : public torch::autograd::Function<Environment> {
  static Tensor forward(AutogradContext* ctx, const Tensor& basis, const Tensor& w,
                        const Tensor& irrep_of, const Tensor& centre, int64_t mul,
                        c10::SymInt n_atoms) {
    ctx->save_for_backward({basis, w, irrep_of, centre});
    ctx->saved_data["mul"] = mul;
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_environment(basis, w, irrep_of, centre, mul, std::move(n_atoms));
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    auto [grad_basis, grad_w] = call_weighting_backward(
        grads[0], saved[0], saved[1], saved[2], saved[3], ctx->saved_data["mul"].toInt());
    return {grad_basis, grad_w, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// weighting_backward's derivative: for upstream gradients (Gb, Gw) of its outputs, g's is the
// forward operator on (Gb, w) plus on (basis, Gw); basis's and w's are weighting_backward(g,
// Gb, Gw)'s two outputs (its grad_basis reads Gw, its grad_w reads Gb).
struct WeightingBackward : public torch::autograd::Function<WeightingBackward> {
  static tensor_list forward(AutogradContext* ctx, const Tensor& g, const Tensor& basis,
                             const Tensor& w, const Tensor& irrep_of,
                             const std::optional<Tensor>& centre, int64_t mul) {
    ctx->save_for_backward({g, basis, w, irrep_of, centre.value_or(Tensor())});
    ctx->saved_data["mul"] = mul;
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [grad_basis, grad_w] = call_weighting_backward(g, basis, w, irrep_of, centre, mul);
    return {grad_basis, grad_w};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &g = saved[0], &basis = saved[1], &w = saved[2], &irrep_of = saved[3];
    const Tensor& centre = saved[4];
    const int64_t mul = ctx->saved_data["mul"].toInt();
    const Tensor gb = grads[0].defined() ? grads[0] : torch::zeros_like(basis);
    const Tensor gw = grads[1].defined() ? grads[1] : torch::zeros_like(w);
    Tensor grad_g, grad_basis, grad_w;
    if (ctx->needs_input_grad(0)) {
      grad_g = centre.defined()
                   ? call_environment(gb, w, irrep_of, centre, mul, g.sym_size(0)) +
                         call_environment(basis, gw, irrep_of, centre, mul, g.sym_size(0))
                   : call_weighted_channels(gb, w, irrep_of, mul) +
                         call_weighted_channels(basis, gw, irrep_of, mul);
    }
    if (ctx->needs_input_grad(1) || ctx->needs_input_grad(2)) {
      std::optional<Tensor> rows = centre.defined() ? std::optional<Tensor>(centre) : std::nullopt;
      std::tie(grad_basis, grad_w) = call_weighting_backward(g, gb, gw, irrep_of, rows, mul);
    }
    return {grad_g, grad_basis, grad_w, Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

Tensor allegro_weighted_channels_autograd(const Tensor& basis, const Tensor& w,
                                          const Tensor& irrep_of, int64_t mul) {
  return WeightedChannels::apply(basis, w, irrep_of, mul);
}

Tensor allegro_environment_autograd(const Tensor& basis, const Tensor& w, const Tensor& irrep_of,
                                    const Tensor& centre, int64_t mul, c10::SymInt n_atoms) {
  return Environment::apply(basis, w, irrep_of, centre, mul, std::move(n_atoms));
}

std::tuple<Tensor, Tensor> allegro_weighting_backward_autograd(
    const Tensor& g, const Tensor& basis, const Tensor& w, const Tensor& irrep_of,
    const std::optional<Tensor>& centre, int64_t mul) {
  auto out = WeightingBackward::apply(g, basis, w, irrep_of, centre, mul);
  return {out[0], out[1]};
}
