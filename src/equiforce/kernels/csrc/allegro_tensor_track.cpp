// Allegro's tensor track on pairs: the channel weighting of the edge harmonics (the tensor
// product with the centre's environment is allegro_product.cpp's).
//
// weighted_channels: out[i, e, u] = basis[e, i] * w[e, u * n_irreps + irrep_i]
// (the initial pair tensor features, component-major (dim, n_edges, mul)). In torch ops a
// gather of the weights per component and a product forward, and two products, a sum, a
// scatter-add and a transposing copy backward.
//
// environment: env[n, i * mul + u] = sum_{e: centre_e = n} basis[e, i] * w[e, u * n_irreps +
// irrep_i] (the density of a layer: the weighted harmonics summed over each atom's pairs). In
// torch ops two one-hot GEMMs, a product and a scatter-add forward, a gather, two products
// and two GEMMs backward.
//
// Each runs one loop forward and one backward (the atom gradients accumulated serially,
// deterministic). A backward run with grad mode on (force training differentiates it again)
// is written with differentiable ATen ops.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include <tuple>
#include <vector>

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

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

// the torch formulation: weights as (n_irreps, n_edges, mul), gathered per component
Tensor per_component_weights(const Tensor& w, const Tensor& irrep_of, int64_t mul) {
  const int64_t n_irreps = w.size(1) / mul;
  return w.reshape({-1, mul, n_irreps}).permute({2, 0, 1}).index_select(0, irrep_of);
}

struct WeightedChannels : public torch::autograd::Function<WeightedChannels> {
  static Tensor forward(AutogradContext* ctx, const Tensor& basis_in, const Tensor& w_in,
                        const Tensor& irrep_of, int64_t mul) {
    auto basis = basis_in.contiguous(), w = w_in.contiguous();
    const int64_t n_edges = basis.size(0), dim = basis.size(1), n_irreps = w.size(1) / mul;
    auto out = torch::empty({dim, n_edges, mul}, basis.options());
    AT_DISPATCH_FLOATING_TYPES(basis.scalar_type(), "weighted_channels", [&] {
      weighting_forward_loop<scalar_t>(basis.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                       irrep_of.data_ptr<int64_t>(), n_edges, dim, mul,
                                       n_irreps, out.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({basis_in, w_in, irrep_of});  // the inputs: connected to the graph
    ctx->saved_data["mul"] = mul;
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &basis = saved[0], &w = saved[1], &irrep_of = saved[2];
    const int64_t mul = ctx->saved_data["mul"].toInt();
    const Tensor& g = grads[0];
    const int64_t n_edges = basis.size(0), dim = basis.size(1), n_irreps = w.size(1) / mul;
    if (torch::GradMode::is_enabled()) {
      auto grad_basis = (g * per_component_weights(w, irrep_of, mul)).sum(-1).t();
      auto per_irrep = torch::zeros({n_irreps, n_edges, mul}, g.options())
                           .index_add(0, irrep_of, g * basis.t().unsqueeze(-1));
      auto grad_w = per_irrep.permute({1, 2, 0}).reshape({n_edges, mul * n_irreps});
      return {grad_basis, grad_w, Tensor(), Tensor()};
    }
    auto gc = g.contiguous(), bc = basis.contiguous(), wc = w.contiguous();
    auto grad_basis = torch::empty_like(bc), grad_w = torch::zeros_like(wc);
    AT_DISPATCH_FLOATING_TYPES(basis.scalar_type(), "weighted_channels_backward", [&] {
      weighting_backward_loop<scalar_t>(gc.data_ptr<scalar_t>(), bc.data_ptr<scalar_t>(),
                                        wc.data_ptr<scalar_t>(), irrep_of.data_ptr<int64_t>(),
                                        n_edges, dim, mul, n_irreps,
                                        grad_basis.data_ptr<scalar_t>(),
                                        grad_w.data_ptr<scalar_t>());
    });
    return {grad_basis, grad_w, Tensor(), Tensor()};
  }
};

template <typename T>
void environment_forward_loop(const T* __restrict__ basis, const T* __restrict__ w,
                              const int64_t* __restrict__ irrep_of,
                              const int64_t* __restrict__ centre, int64_t n_edges, int64_t dim,
                              int64_t mul, int64_t n_irreps, int64_t n_atoms,
                              T* __restrict__ env) {
  const int64_t row = mul * n_irreps;
  for (int64_t e = 0; e < n_edges; ++e) {
    const int64_t n = centre[e];
    TORCH_CHECK(n >= 0 && n < n_atoms, "environment: centre[", e, "] = ", n,
                " is not an atom index below ", n_atoms);
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

struct Environment : public torch::autograd::Function<Environment> {
  static Tensor forward(AutogradContext* ctx, const Tensor& basis_in, const Tensor& w_in,
                        const Tensor& irrep_of, const Tensor& centre, int64_t mul,
                        int64_t n_atoms) {
    auto basis = basis_in.contiguous(), w = w_in.contiguous();
    const int64_t n_edges = basis.size(0), dim = basis.size(1), n_irreps = w.size(1) / mul;
    auto env = torch::zeros({n_atoms, dim * mul}, basis.options());
    AT_DISPATCH_FLOATING_TYPES(basis.scalar_type(), "environment", [&] {
      environment_forward_loop<scalar_t>(basis.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                                         irrep_of.data_ptr<int64_t>(),
                                         centre.data_ptr<int64_t>(), n_edges, dim, mul,
                                         n_irreps, n_atoms, env.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({basis_in, w_in, irrep_of, centre});  // inputs: in the graph
    ctx->saved_data["mul"] = mul;
    return env;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &basis = saved[0], &w = saved[1], &irrep_of = saved[2], &centre = saved[3];
    const int64_t mul = ctx->saved_data["mul"].toInt();
    const int64_t n_edges = basis.size(0), dim = basis.size(1), n_irreps = w.size(1) / mul;
    const Tensor& g = grads[0];
    if (torch::GradMode::is_enabled()) {
      auto pairs = g.index_select(0, centre).view({n_edges, dim, mul});
      auto w_per_component = w.view({n_edges, mul, n_irreps}).index_select(2, irrep_of);
      auto grad_basis = (pairs * w_per_component.transpose(1, 2)).sum(-1);
      auto grad_w = torch::zeros({n_edges, n_irreps, mul}, g.options())
                        .index_add(1, irrep_of, pairs * basis.unsqueeze(-1))
                        .transpose(1, 2)
                        .reshape({n_edges, mul * n_irreps});
      return {grad_basis, grad_w, Tensor(), Tensor(), Tensor(), Tensor()};
    }
    auto gc = g.contiguous(), bc = basis.contiguous(), wc = w.contiguous();
    auto grad_basis = torch::empty_like(bc), grad_w = torch::zeros_like(wc);
    AT_DISPATCH_FLOATING_TYPES(basis.scalar_type(), "environment_backward", [&] {
      environment_backward_loop<scalar_t>(gc.data_ptr<scalar_t>(), bc.data_ptr<scalar_t>(),
                                          wc.data_ptr<scalar_t>(), irrep_of.data_ptr<int64_t>(),
                                          centre.data_ptr<int64_t>(), n_edges, dim, mul,
                                          n_irreps, grad_basis.data_ptr<scalar_t>(),
                                          grad_w.data_ptr<scalar_t>());
    });
    return {grad_basis, grad_w, Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

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

torch::Tensor allegro_weighted_channels(const torch::Tensor& basis, const torch::Tensor& w,
                                        const torch::Tensor& irrep_of, int64_t mul) {
  check_weighting("weighted_channels", basis, w, irrep_of, mul);
  return WeightedChannels::apply(basis, w, irrep_of, mul);
}

torch::Tensor allegro_environment(const torch::Tensor& basis, const torch::Tensor& w,
                                  const torch::Tensor& irrep_of, const torch::Tensor& centre,
                                  int64_t mul, int64_t n_atoms) {
  check_weighting("environment", basis, w, irrep_of, mul);
  TORCH_CHECK(centre.scalar_type() == at::kLong && centre.dim() == 1 &&
                  centre.size(0) == basis.size(0) && centre.is_contiguous(),
              "environment: centre must be a contiguous (n_edges,) int64 tensor");
  return Environment::apply(basis, w, irrep_of, centre, mul, n_atoms);
}
