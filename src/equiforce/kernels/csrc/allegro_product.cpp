// Allegro's tensor product on pairs against their centre's per-atom factor, two kernels closed
// under differentiation (their fake formulas: kernels/allegro_product_ops.py).
//
// gather_contract: out[k, e, u] = sum_i x[i, e, u] * p[centre_e, i, k, u]
//   x (d1, n_edges, U) pair features, component-major; p (n_atoms, d1, d2, U) a factor per
//   atom (the environment contracted with the weight-mixed Clebsch-Gordan coupling), atom-major
//   so a pair reads one contiguous block; out (d2, n_edges, U).
// scatter_outer: q[n, i, k, u] = sum_{e: centre_e = n} x[i, e, u] * y[k, e, u]
//   x (d1, n_edges, U), y (d2, n_edges, U); q (n_atoms, d1, d2, U).
//
// In torch ops gather_contract is a gather of p to the pairs, a (d1, d2, n_edges, U) product
// and a sum over d1 (d1 * d2 numbers per pair and channel written and read again, 81 for
// l_max 2), and its backward a product, a sum and a scatter-add of the same size. Here every
// pair reads its centre's factor in place and nothing pair-sized but the output is written.
// gather_contract runs edges in parallel (each writes its own rows); scatter_outer gives
// each thread whole components i of q and runs the edges in their order, so the sums are
// deterministic for any thread count.
//
// Their autograd kernels are here too, in C++: the gradient of each with respect to any input
// is one of the two again (p transposed in its axes 1 and 2 where x and y swap roles), called
// through the dispatcher, so every order is differentiable. (A Python autograd formula cost
// ~0.1 ms per forward and backward, a tenth of one tiny Allegro's call on a molecule.)
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include <type_traits>

#include "library_operator.h"
#include "pair_centres.h"

namespace {

using equiforce_ops::check_centre;
using torch::Tensor;

void check_features(const char* op, const Tensor& x, const char* name) {
  TORCH_CHECK(x.device().is_cpu(), op, ": CPU tensors only");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64");
  TORCH_CHECK(x.is_contiguous(), op, ": ", name, " must be contiguous");
}

// MUL > 0: the channel count known at compile time (the row loops become whole vectors; a
// runtime count of 8 ran a 16-lane loop's scalar remainder); 0: `mul` at run time.
template <typename T, int64_t MUL>
void gather_contract_loop(const T* __restrict__ x, const T* __restrict__ p,
                          const int64_t* __restrict__ centre, int64_t d1, int64_t d2,
                          int64_t n_edges, int64_t runtime_mul, T* __restrict__ out) {
  const int64_t mul = MUL > 0 ? MUL : runtime_mul;
  at::parallel_for(0, n_edges, 64, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const T* pc = p + centre[e] * d1 * d2 * mul;
      for (int64_t k = 0; k < d2; ++k) {
        T* o = out + (k * n_edges + e) * mul;
        for (int64_t u = 0; u < mul; ++u) o[u] = T(0);
      }
      for (int64_t i = 0; i < d1; ++i) {
        const T* xi = x + (i * n_edges + e) * mul;
        for (int64_t k = 0; k < d2; ++k) {
          const T* pk = pc + (i * d2 + k) * mul;
          T* o = out + (k * n_edges + e) * mul;
#pragma omp simd
          for (int64_t u = 0; u < mul; ++u) o[u] += xi[u] * pk[u];
        }
      }
    }
  });
}

template <typename T, int64_t MUL>
void scatter_outer_loop(const T* __restrict__ x, const T* __restrict__ y,
                        const int64_t* __restrict__ centre, int64_t d1, int64_t d2,
                        int64_t n_edges, int64_t runtime_mul, T* __restrict__ q) {
  const int64_t mul = MUL > 0 ? MUL : runtime_mul;
  at::parallel_for(0, d1, 1, [&](int64_t begin, int64_t end) {
    for (int64_t e = 0; e < n_edges; ++e) {
      for (int64_t i = begin; i < end; ++i) {
        const T* xi = x + (i * n_edges + e) * mul;
        T* qc = q + (centre[e] * d1 + i) * d2 * mul;
        for (int64_t k = 0; k < d2; ++k) {
          const T* yk = y + (k * n_edges + e) * mul;
          T* qk = qc + k * mul;
#pragma omp simd
          for (int64_t u = 0; u < mul; ++u) qk[u] += xi[u] * yk[u];
        }
      }
    }
  });
}

// loop<MUL>(args...) with MUL the channel count where it is a common one, else 0 (run time)
template <typename Loop>
void with_channels(int64_t mul, Loop&& loop) {
  switch (mul) {
    case 8: return loop(std::integral_constant<int64_t, 8>{});
    case 16: return loop(std::integral_constant<int64_t, 16>{});
    case 32: return loop(std::integral_constant<int64_t, 32>{});
    case 64: return loop(std::integral_constant<int64_t, 64>{});
    default: return loop(std::integral_constant<int64_t, 0>{});
  }
}

}  // namespace

Tensor allegro_gather_contract(const Tensor& x, const Tensor& p, const Tensor& centre) {
  const char* op = "allegro_gather_contract";
  check_features(op, x, "x");
  check_features(op, p, "p");
  TORCH_CHECK(x.dim() == 3 && p.dim() == 4 && p.size(1) == x.size(0) && p.size(3) == x.size(2),
              op, ": x (d1, n_edges, U) and p (n_atoms, d1, d2, U) expected, got ", x.sizes(),
              " and ", p.sizes());
  TORCH_CHECK(x.scalar_type() == p.scalar_type(), op, ": x and p must have one dtype");
  const int64_t d1 = x.size(0), n_edges = x.size(1), mul = x.size(2);
  const int64_t d2 = p.size(2), n_atoms = p.size(0);
  check_centre(op, centre, n_edges, n_atoms);
  auto out = torch::empty({d2, n_edges, mul}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "allegro_gather_contract", [&] {
    with_channels(mul, [&](auto channels) {
      gather_contract_loop<scalar_t, decltype(channels)::value>(
          x.data_ptr<scalar_t>(), p.data_ptr<scalar_t>(), centre.data_ptr<int64_t>(), d1, d2,
          n_edges, mul, out.data_ptr<scalar_t>());
    });
  });
  return out;
}

Tensor allegro_scatter_outer(const Tensor& x, const Tensor& y, const Tensor& centre,
                             c10::SymInt n_atoms_symbolic) {
  const char* op = "allegro_scatter_outer";
  const int64_t n_atoms = n_atoms_symbolic.expect_int();
  check_features(op, x, "x");
  check_features(op, y, "y");
  TORCH_CHECK(x.dim() == 3 && y.dim() == 3 && y.size(1) == x.size(1) && y.size(2) == x.size(2),
              op, ": x (d1, n_edges, U) and y (d2, n_edges, U) expected, got ", x.sizes(),
              " and ", y.sizes());
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), op, ": x and y must have one dtype");
  TORCH_CHECK(n_atoms >= 0, op, ": n_atoms must be >= 0");
  const int64_t d1 = x.size(0), n_edges = x.size(1), mul = x.size(2), d2 = y.size(0);
  check_centre(op, centre, n_edges, n_atoms);
  auto q = torch::zeros({n_atoms, d1, d2, mul}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "allegro_scatter_outer", [&] {
    with_channels(mul, [&](auto channels) {
      scatter_outer_loop<scalar_t, decltype(channels)::value>(
          x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), centre.data_ptr<int64_t>(), d1, d2,
          n_edges, mul, q.data_ptr<scalar_t>());
    });
  });
  return q;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

// the operators through the dispatcher (autograd included, unless a guard excludes it)
Tensor call_gather_contract(const Tensor& x, const Tensor& p, const Tensor& centre) {
  static auto op = equiforce_ops::library_operator<Tensor(const Tensor&, const Tensor&,
                                                          const Tensor&)>(
      EQF_OPERATOR("allegro_gather_contract"));
  return op.call(x, p, centre);
}

Tensor call_scatter_outer(const Tensor& x, const Tensor& y, const Tensor& centre,
                          c10::SymInt n_atoms) {
  static auto op = equiforce_ops::library_operator<Tensor(const Tensor&, const Tensor&,
                                                          const Tensor&, c10::SymInt)>(
      EQF_OPERATOR("allegro_scatter_outer"));
  return op.call(x, y, centre, std::move(n_atoms));
}

struct GatherContract : public torch::autograd::Function<GatherContract> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& p,
                        const Tensor& centre) {
    ctx->save_for_backward({x, p, centre});
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_gather_contract(x, p, centre);
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &p = saved[1], &centre = saved[2];
    const Tensor g = grads[0].contiguous();
    Tensor grad_x, grad_p;
    if (ctx->needs_input_grad(0)) {
      grad_x = call_gather_contract(g, p.transpose(1, 2).contiguous(), centre);
    }
    if (ctx->needs_input_grad(1)) grad_p = call_scatter_outer(x, g, centre, p.sym_size(0));
    return {grad_x, grad_p, Tensor()};
  }
};

struct ScatterOuter : public torch::autograd::Function<ScatterOuter> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& y,
                        const Tensor& centre, c10::SymInt n_atoms) {
    ctx->save_for_backward({x, y, centre});
    at::AutoDispatchBelowADInplaceOrView guard;
    return call_scatter_outer(x, y, centre, std::move(n_atoms));
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &y = saved[1], &centre = saved[2];
    const Tensor& g = grads[0];
    Tensor grad_x, grad_y;
    if (ctx->needs_input_grad(0)) {
      grad_x = call_gather_contract(y, g.transpose(1, 2).contiguous(), centre);
    }
    if (ctx->needs_input_grad(1)) grad_y = call_gather_contract(x, g.contiguous(), centre);
    return {grad_x, grad_y, Tensor(), Tensor()};
  }
};

}  // namespace

Tensor allegro_gather_contract_autograd(const Tensor& x, const Tensor& p, const Tensor& centre) {
  return GatherContract::apply(x, p, centre);
}

Tensor allegro_scatter_outer_autograd(const Tensor& x, const Tensor& y, const Tensor& centre,
                                      c10::SymInt n_atoms) {
  return ScatterOuter::apply(x, y, centre, std::move(n_atoms));
}
