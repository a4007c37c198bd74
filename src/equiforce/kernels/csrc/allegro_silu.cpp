// SiLU with hand-written first and second derivatives, for Allegro's MLPs under force training.
//
// silu(x) = x s, s = sigmoid(x);  silu'(x) = s (1 + x (1 - s));
// silu''(x) = s (1 - s) (2 + x (1 - 2 s)).
// Under create_graph, torch's own silu backward is ~6 elementwise ops and its double backward
// ~15 more, each a full pass over an (n_edges, width) tensor. Here: the forward saves s, the
// backward is one pass (SiluGrad), the double backward one pass giving both gradients; when
// that double backward itself runs with grad mode on (a third derivative is wanted, e.g. a
// Hessian-vector loss), it is written with differentiable ATen ops instead.
#include <torch/extension.h>

#include <tuple>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;
using torch::Tensor;

void check(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "allegro_silu: ", name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              "allegro_silu: ", name, " must be float32 or float64");
}

template <typename T>
void grad_loop(const T* __restrict__ gp, const T* __restrict__ xp, const T* __restrict__ sp,
               T* __restrict__ op, int64_t n) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) {
    const T sk = sp[k];
    op[k] = gp[k] * sk * (T(1) + xp[k] * (T(1) - sk));
  }
}

template <typename T>
void grad_grad_loop(const T* __restrict__ ggp, const T* __restrict__ gp,
                    const T* __restrict__ xp, const T* __restrict__ sp, T* __restrict__ dgp,
                    T* __restrict__ dxp, int64_t n) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) {
    const T sk = sp[k], xk = xp[k], one_minus = T(1) - sk;
    dgp[k] = ggp[k] * sk * (T(1) + xk * one_minus);
    dxp[k] = ggp[k] * gp[k] * sk * one_minus * (T(2) + xk * (one_minus - sk));
  }
}

// out = g * silu'(x)
Tensor silu_grad_kernel(const Tensor& g_in, const Tensor& x_in, const Tensor& s_in) {
  auto g = g_in.contiguous(), x = x_in.contiguous(), s = s_in.contiguous();
  auto out = torch::empty_like(x);
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "allegro_silu_grad", [&] {
    grad_loop<scalar_t>(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                        out.data_ptr<scalar_t>(), n);
  });
  return out;
}

// (gg * silu'(x), gg * g * silu''(x))
std::tuple<Tensor, Tensor> silu_grad_grad_kernel(const Tensor& gg_in, const Tensor& g_in,
                                                 const Tensor& x_in, const Tensor& s_in) {
  auto gg = gg_in.contiguous(), g = g_in.contiguous(), x = x_in.contiguous(),
       s = s_in.contiguous();
  auto dg = torch::empty_like(x), dx = torch::empty_like(x);
  const int64_t n = x.numel();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "allegro_silu_grad_grad", [&] {
    grad_grad_loop<scalar_t>(gg.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                             x.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                             dg.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), n);
  });
  return {dg, dx};
}

struct SiluGrad : public torch::autograd::Function<SiluGrad> {
  static Tensor forward(AutogradContext* ctx, const Tensor& g, const Tensor& x,
                        const Tensor& s) {
    ctx->save_for_backward({g, x, s});
    return silu_grad_kernel(g, x, s);
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &gg = grads[0], &g = saved[0], &x = saved[1];
    if (torch::GradMode::is_enabled()) {
      // a higher derivative is wanted: differentiable ATen ops of x (sigmoid recomputed
      // inside the graph), so every further order is exact
      auto s = torch::sigmoid(x);
      auto one_minus = 1 - s;
      return {gg * (s * (1 + x * one_minus)),
              gg * g * (s * one_minus * (2 + x * (one_minus - s))), Tensor()};
    }
    auto [dg, dx] = silu_grad_grad_kernel(gg, g, x, saved[2]);
    return {dg, dx, Tensor()};  // s is sigmoid(x): its dependence is in silu''
  }
};

struct Silu : public torch::autograd::Function<Silu> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x) {
    auto s = torch::sigmoid(x);
    ctx->save_for_backward({x, s});
    return x * s;
  }
  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    return {SiluGrad::apply(grads[0], saved[0], saved[1])};
  }
};

Tensor silu(const Tensor& x) {
  check(x, "x");
  return Silu::apply(x);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("silu", &silu, "SiLU with C++ first and second derivatives (any order exact)");
}
