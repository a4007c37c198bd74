// Allegro's tensor track on pairs: the channel weighting of the edge harmonics and the last
// layer's tensor product (dot mode), one loop each way.
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
// dot_gather: out[e, u] = sum_t a[row_t, e, u] * b[centre_e, t, u]
//
// a: (d1, n_edges, mul) the pair features, component-major; b: (n_atoms, n_terms, mul) each
// term's environment component times its weight and coupling, per atom; row_t: the component
// of a in term t. In torch ops this is a gather of b to the pairs, a transposing copy, a
// product and a sum, and in the backward three products, a copy, a sum and a scatter-add:
// every one a pass over an (n_terms, n_edges, mul) tensor. Here: one loop forward, one
// backward (the atom gradient accumulated serially, deterministic). A backward run with grad
// mode on (force training differentiates it again) is written with differentiable ATen ops.
#include <torch/extension.h>

#include <tuple>
#include <vector>

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

template <typename T>
void forward_loop(const T* __restrict__ a, const T* __restrict__ b,
                  const int64_t* __restrict__ centre, const int64_t* __restrict__ rows,
                  int64_t n_edges, int64_t n_terms, int64_t mul, int64_t n_atoms,
                  int64_t d1, T* __restrict__ out) {
  for (int64_t t = 0; t < n_terms; ++t) {
    TORCH_CHECK(rows[t] >= 0 && rows[t] < d1, "dot_gather: rows[", t, "] = ", rows[t],
                " is not a component of a (", d1, ")");
  }
  for (int64_t e = 0; e < n_edges; ++e) {
    TORCH_CHECK(centre[e] >= 0 && centre[e] < n_atoms, "dot_gather: centre[", e, "] = ",
                centre[e], " is not an atom index below ", n_atoms);
    const T* be = b + centre[e] * n_terms * mul;
    T* oe = out + e * mul;
    for (int64_t u = 0; u < mul; ++u) oe[u] = T(0);
    for (int64_t t = 0; t < n_terms; ++t) {
      const T* at = a + (rows[t] * n_edges + e) * mul;
      const T* bt = be + t * mul;
#pragma omp simd
      for (int64_t u = 0; u < mul; ++u) oe[u] += at[u] * bt[u];
    }
  }
}

template <typename T>
void backward_loop(const T* __restrict__ g, const T* __restrict__ a, const T* __restrict__ b,
                   const int64_t* __restrict__ centre, const int64_t* __restrict__ rows,
                   int64_t n_edges, int64_t n_terms, int64_t mul, T* __restrict__ grad_a,
                   T* __restrict__ grad_b) {
  for (int64_t e = 0; e < n_edges; ++e) {
    const int64_t offset = centre[e] * n_terms * mul;
    const T* be = b + offset;
    T* gbe = grad_b + offset;
    const T* ge = g + e * mul;
    for (int64_t t = 0; t < n_terms; ++t) {
      const int64_t at_offset = (rows[t] * n_edges + e) * mul;
      const T* at = a + at_offset;
      T* gat = grad_a + at_offset;
      const T* bt = be + t * mul;
      T* gbt = gbe + t * mul;
#pragma omp simd
      for (int64_t u = 0; u < mul; ++u) {
        gat[u] += ge[u] * bt[u];
        gbt[u] += ge[u] * at[u];
      }
    }
  }
}

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

struct DotGather : public torch::autograd::Function<DotGather> {
  static Tensor forward(AutogradContext* ctx, const Tensor& a_in, const Tensor& b_in,
                        const Tensor& centre, const Tensor& rows) {
    auto a = a_in.contiguous(), b = b_in.contiguous();
    const int64_t n_edges = a.size(1), mul = a.size(2), n_terms = b.size(1);
    auto out = torch::empty({n_edges, mul}, a.options());
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "dot_gather", [&] {
      forward_loop<scalar_t>(a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
                             centre.data_ptr<int64_t>(), rows.data_ptr<int64_t>(), n_edges,
                             n_terms, mul, b.size(0), a.size(0),
                             out.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({a_in, b_in, centre, rows});  // the inputs: in the graph
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &a = saved[0], &b = saved[1], &centre = saved[2], &rows = saved[3];
    const Tensor& g = grads[0];
    if (torch::GradMode::is_enabled()) {
      // (n_terms, n_edges, mul) products in differentiable ATen ops
      auto b_pairs = b.index_select(0, centre).transpose(0, 1);
      auto a_rows = a.index_select(0, rows);
      auto grad_a = torch::zeros_like(a).index_add(0, rows, g.unsqueeze(0) * b_pairs);
      auto grad_b = torch::zeros_like(b).index_add(
          0, centre, (g.unsqueeze(0) * a_rows).transpose(0, 1));
      return {grad_a, grad_b, Tensor(), Tensor()};
    }
    auto gc = g.contiguous(), ac = a.contiguous(), bc = b.contiguous();
    auto grad_a = torch::zeros_like(ac), grad_b = torch::zeros_like(bc);
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "dot_gather_backward", [&] {
      backward_loop<scalar_t>(gc.data_ptr<scalar_t>(), ac.data_ptr<scalar_t>(),
                              bc.data_ptr<scalar_t>(), centre.data_ptr<int64_t>(),
                              rows.data_ptr<int64_t>(), a.size(1), b.size(1), a.size(2),
                              grad_a.data_ptr<scalar_t>(), grad_b.data_ptr<scalar_t>());
    });
    return {grad_a, grad_b, Tensor(), Tensor()};
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

Tensor weighted_channels(const Tensor& basis, const Tensor& w, const Tensor& irrep_of,
                         int64_t mul) {
  check_weighting("weighted_channels", basis, w, irrep_of, mul);
  return WeightedChannels::apply(basis, w, irrep_of, mul);
}

Tensor environment(const Tensor& basis, const Tensor& w, const Tensor& irrep_of,
                   const Tensor& centre, int64_t mul, int64_t n_atoms) {
  check_weighting("environment", basis, w, irrep_of, mul);
  TORCH_CHECK(centre.scalar_type() == at::kLong && centre.dim() == 1 &&
                  centre.size(0) == basis.size(0) && centre.is_contiguous(),
              "environment: centre must be a contiguous (n_edges,) int64 tensor");
  return Environment::apply(basis, w, irrep_of, centre, mul, n_atoms);
}

Tensor dot_gather(const Tensor& a, const Tensor& b, const Tensor& centre, const Tensor& rows) {
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), "dot_gather: CPU tensors only");
  TORCH_CHECK(a.scalar_type() == b.scalar_type() &&
                  (a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble),
              "dot_gather: a and b must both be float32 or float64");
  TORCH_CHECK(a.dim() == 3 && b.dim() == 3 && a.size(2) == b.size(2),
              "dot_gather: a (d1, n_edges, mul) and b (n_atoms, n_terms, mul) expected");
  TORCH_CHECK(centre.scalar_type() == at::kLong && centre.dim() == 1 &&
                  centre.size(0) == a.size(1) && centre.is_contiguous(),
              "dot_gather: centre must be a contiguous (n_edges,) int64 tensor");
  TORCH_CHECK(rows.scalar_type() == at::kLong && rows.dim() == 1 && rows.size(0) == b.size(1) &&
                  rows.is_contiguous(),
              "dot_gather: rows must be a contiguous (n_terms,) int64 tensor");
  return DotGather::apply(a, b, centre, rows);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("weighted_channels", &weighted_channels,
        "out[i, e, u] = basis[e, i] * w[e, u * n_irreps + irrep_of[i]] (any order exact)");
  m.def("environment", &environment,
        "env[n, i * mul + u] = sum over n's pairs e of basis[e, i] * w[e, u * n_irreps + "
        "irrep_of[i]] (any order exact)");
  m.def("dot_gather", &dot_gather,
        "out[e, u] = sum_t a[rows[t], e, u] * b[centre[e], t, u] (any order exact)");
}
