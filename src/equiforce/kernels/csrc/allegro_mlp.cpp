// Allegro's bias-free scalar MLPs as one autograd node, with SiLU's derivatives in one pass each.
//
// y = act(... act(x W0 a0) W1 a1 ...) W_L a_L, act = silu or identity, x given as column blocks
// (x = [x_0, x_1, ...], multiplied by the matching rows of W0 and summed; no concatenation).
// In torch ops every layer is a weight scaling, a matmul and a SiLU forward, and a matmul,
// a transpose and a SiLU backward node backward: on one molecule of the tiny Allegro (182
// pairs, 32 wide) each costs its Python call and autograd node, more than its arithmetic.
// Here: one node; the forward keeps every pre-activation, its sigmoid and the activation,
// and the backward (gradients of the blocks and, where wanted, of the weights) runs the
// matmuls and one fused pass per SiLU.
//
// silu(x) = x s, s = sigmoid(x);  silu'(x) = s (1 + x (1 - s));
// silu''(x) = s (1 - s) (2 + x (1 - 2 s)).
//
// A backward run with grad mode on (force training differentiates it again) recomputes the
// forward from the inputs with differentiable ATen ops and writes the backward with them, the
// SiLU derivative as SiluGrad, whose own backward is one pass for both of its gradients (torch's
// silu double backward is ~15 elementwise passes); SiluGrad's backward with grad mode on (a
// third derivative) is differentiable ATen ops, so every order is exact.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include <tuple>
#include <vector>

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

template <typename T>
void silu_grad_loop(const T* __restrict__ gp, const T* __restrict__ xp, const T* __restrict__ sp,
                    T* __restrict__ op, int64_t n) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) {
    const T sk = sp[k];
    op[k] = gp[k] * sk * (T(1) + xp[k] * (T(1) - sk));
  }
}

template <typename T>
void silu_grad_grad_loop(const T* __restrict__ ggp, const T* __restrict__ gp,
                         const T* __restrict__ xp, const T* __restrict__ sp, T* __restrict__ dgp,
                         T* __restrict__ dxp, int64_t n) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) {
    const T sk = sp[k], xk = xp[k], one_minus = T(1) - sk;
    dgp[k] = ggp[k] * sk * (T(1) + xk * one_minus);
    dxp[k] = ggp[k] * gp[k] * sk * one_minus * (T(2) + xk * (one_minus - sk));
  }
}

// g * silu'(x), s = sigmoid(x)
Tensor silu_grad_kernel(const Tensor& g_in, const Tensor& x_in, const Tensor& s_in) {
  auto g = g_in.contiguous(), x = x_in.contiguous(), s = s_in.contiguous();
  auto out = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "allegro_silu_grad", [&] {
    silu_grad_loop<scalar_t>(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                             s.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), x.numel());
  });
  return out;
}

// (gg * silu'(x), gg * g * silu''(x))
std::tuple<Tensor, Tensor> silu_grad_grad_kernel(const Tensor& gg_in, const Tensor& g_in,
                                                 const Tensor& x_in, const Tensor& s_in) {
  auto gg = gg_in.contiguous(), g = g_in.contiguous(), x = x_in.contiguous(),
       s = s_in.contiguous();
  auto dg = torch::empty_like(x), dx = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "allegro_silu_grad_grad", [&] {
    silu_grad_grad_loop<scalar_t>(gg.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                                  x.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                                  dg.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), x.numel());
  });
  return {dg, dx};
}

// g * silu'(x) as a differentiable node of (g, x); s = sigmoid(x) is a value, not an input
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

// SiLU as a differentiable node whose backward is SiluGrad (recorded and recomputed nets)
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

// The rows of the first weight that multiply each input block (views; none for one block).
std::vector<Tensor> block_rows(const Tensor& first, at::TensorList blocks) {
  if (blocks.size() == 1) return {first};
  std::vector<Tensor> rows;
  int64_t start = 0;
  for (const auto& block : blocks) {
    rows.push_back(first.narrow(0, start, block.size(1)));
    start += block.size(1);
  }
  return rows;
}

// The forward pass in ATen ops: with grad mode on, recorded (SiLU as a Silu node); off, values
// only. Keeps, per hidden layer, the pre-activation, its sigmoid (values only; both undefined
// without SiLU) and the activation.
struct Pass {
  Tensor out;
  std::vector<Tensor> pre, sig, act;
};

Pass run_forward(at::TensorList blocks, const std::vector<Tensor>& scaled, bool silu) {
  const bool recorded = torch::GradMode::is_enabled();
  Pass pass;
  auto rows = block_rows(scaled[0], blocks);
  Tensor h = at::mm(blocks[0], rows[0]);
  for (size_t k = 1; k < blocks.size(); ++k) h = at::addmm(h, blocks[k], rows[k]);
  for (size_t i = 1; i < scaled.size(); ++i) {
    pass.pre.push_back(silu ? h : Tensor());
    pass.sig.push_back(silu && !recorded ? torch::sigmoid(h) : Tensor());
    if (silu) h = recorded ? Silu::apply(h) : h * pass.sig.back();
    pass.act.push_back(h);
    h = at::mm(h, scaled[i]);
  }
  pass.out = h;
  return pass;
}

std::vector<Tensor> scale(at::TensorList weights, const std::vector<double>& alphas) {
  std::vector<Tensor> scaled;
  for (size_t i = 0; i < weights.size(); ++i) scaled.push_back(weights[i] * alphas[i]);
  return scaled;
}

struct ScaledMlp : public torch::autograd::Function<ScaledMlp> {
  static Tensor forward(AutogradContext* ctx, at::TensorList blocks, at::TensorList weights,
                        std::vector<double> alphas, bool silu) {
    auto scaled = scale(weights, alphas);
    Pass pass = run_forward(blocks, scaled, silu);
    // saved: blocks, weights (the graph's inputs, for a differentiable backward), then the
    // scaled weights and the forward's intermediates (values)
    std::vector<Tensor> saved(blocks.begin(), blocks.end());
    saved.insert(saved.end(), weights.begin(), weights.end());
    saved.insert(saved.end(), scaled.begin(), scaled.end());
    for (size_t i = 0; i < pass.pre.size(); ++i) {
      saved.insert(saved.end(), {pass.pre[i], pass.sig[i], pass.act[i]});
    }
    ctx->save_for_backward(saved);
    ctx->saved_data["n_blocks"] = static_cast<int64_t>(blocks.size());
    ctx->saved_data["alphas"] = alphas;
    ctx->saved_data["silu"] = silu;
    return pass.out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto n_blocks = static_cast<size_t>(ctx->saved_data["n_blocks"].toInt());
    const auto alphas = ctx->saved_data["alphas"].toDoubleVector();
    const bool silu = ctx->saved_data["silu"].toBool();
    const size_t n_layers = alphas.size();
    std::vector<Tensor> blocks(saved.begin(), saved.begin() + n_blocks);
    std::vector<Tensor> weights(saved.begin() + n_blocks, saved.begin() + n_blocks + n_layers);
    std::vector<bool> needs_weight(n_layers);
    for (size_t i = 0; i < n_layers; ++i) needs_weight[i] = ctx->needs_input_grad(n_blocks + i);

    auto it = saved.begin() + n_blocks + n_layers;
    std::vector<Tensor> scaled(it, it + n_layers);
    Pass pass;
    for (it += n_layers; it != saved.end(); it += 3) {
      pass.pre.push_back(it[0]);
      pass.sig.push_back(it[1]);
      pass.act.push_back(it[2]);
    }
    if (torch::GradMode::is_enabled()) {
      // differentiated again: the intermediates as functions of the inputs (the sigmoids
      // stay the forward's values: SiluGrad takes s as a value)
      scaled = scale(weights, alphas);
      auto sig = pass.sig;
      pass = run_forward(blocks, scaled, silu);
      pass.sig = sig;
    }

    tensor_list out(n_blocks + n_layers + 2);
    Tensor g = grads[0];
    for (size_t i = n_layers - 1; i >= 1; --i) {
      if (needs_weight[i]) out[n_blocks + i] = at::mm(pass.act[i - 1].t(), g) * alphas[i];
      g = at::mm(g, scaled[i].t());
      if (!silu) continue;
      g = torch::GradMode::is_enabled() ? SiluGrad::apply(g, pass.pre[i - 1], pass.sig[i - 1])
                                        : silu_grad_kernel(g, pass.pre[i - 1], pass.sig[i - 1]);
    }
    auto rows = block_rows(scaled[0], blocks);
    std::vector<Tensor> first_grads;
    for (size_t k = 0; k < n_blocks; ++k) {
      if (ctx->needs_input_grad(k)) out[k] = at::mm(g, rows[k].t());
      if (needs_weight[0]) first_grads.push_back(at::mm(blocks[k].t(), g));
    }
    if (needs_weight[0]) out[n_blocks] = at::cat(first_grads, 0) * alphas[0];
    return out;
  }
};

void check(const Tensor& t, const Tensor& like, const char* what, size_t index) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == like.scalar_type(), "allegro_mlp: ",
              what, "[", index, "] must be a CPU tensor of the first block's dtype");
  TORCH_CHECK(t.dim() == 2, "allegro_mlp: ", what, "[", index, "] must be 2-D");
}

// record: the net as recorded ATen ops and Silu nodes (a graph that force training's double
// backward walks with the forward's intermediates), else one ScaledMlp node.
}  // namespace

torch::Tensor allegro_scaled_mlp(at::TensorList blocks, at::TensorList weights,
                                 at::ArrayRef<double> alpha_values, bool silu, bool record) {
  const std::vector<double> alphas(alpha_values.begin(), alpha_values.end());
  TORCH_CHECK(!blocks.empty() && !weights.empty(), "allegro_mlp: needs blocks and weights");
  TORCH_CHECK(alphas.size() == weights.size(), "allegro_mlp: one alpha per weight");
  const auto& like = blocks[0];
  TORCH_CHECK(like.scalar_type() == at::kFloat || like.scalar_type() == at::kDouble,
              "allegro_mlp: float32 or float64 only");
  int64_t width = 0;
  for (size_t k = 0; k < blocks.size(); ++k) {
    check(blocks[k], like, "blocks", k);
    TORCH_CHECK(blocks[k].size(0) == like.size(0), "allegro_mlp: blocks differ in rows");
    width += blocks[k].size(1);
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    check(weights[i], like, "weights", i);
    TORCH_CHECK(weights[i].size(0) == width, "allegro_mlp: weights[", i, "] has ",
                weights[i].size(0), " rows, its input is ", width, " wide");
    width = weights[i].size(1);
  }
  if (record) return run_forward(blocks, scale(weights, alphas), silu).out;
  return ScaledMlp::apply(blocks, weights, alphas, silu);
}
