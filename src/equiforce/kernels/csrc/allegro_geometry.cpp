// Allegro's edge geometry in one pass: lengths, enveloped Bessel basis and l <= 1 harmonics.
//
// Per edge, with v the edge vector (cast to the geometry dtype T), r = |v|, x = r / r_max:
//   e(x) = 1 + x^p (a + x (b + c x))                (polynomial envelope, 0 for x >= 1)
//   basis_n = sin(n pi x) e(x) / (pi x),  n = 1..N  (nequip's normalised Bessel basis)
//   sh = [1] (l_max 0) or [1, sqrt(3) v / r] (l_max 1, x y z order)
// sin(n pi x) and cos(n pi x) come from one sin/cos per edge by angle addition.
//
// The torch formulation of the same (nn/allegro/embedding.py) is ~25 elementwise ops forward
// and ~45 in the backward, each a pass over an (n_edges, 1..N) tensor: on one molecule of the
// tiny Allegro a quarter of all ops of an energy + forces call. Here the forward is one loop
// and the first derivative (d loss / d v from the basis' and harmonics' gradients) another.
// When that derivative is itself differentiated (force training), the backward runs with
// grad mode on and is written with differentiable ATen ops of the same formulas, so every
// further order is exact.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/types.h>

#include <cmath>
#include <tuple>

namespace {

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

constexpr double kPi = 3.14159265358979323846;
constexpr double kSqrt3 = 1.7320508075688772;

struct Envelope {
  double a, b, c;
  int64_t p;
  explicit Envelope(int64_t order)
      : a(-(order + 1.0) * (order + 2.0) / 2.0),
        b(order * (order + 2.0)),
        c(-order * (order + 1.0) / 2.0),
        p(order) {}
};

template <typename T>
T int_pow(T x, int64_t n) {
  T out = T(1);
  for (int64_t k = 0; k < n; ++k) out *= x;
  return out;
}

// inverse cutoff of edge e: one per edge, or a single uniform value
template <typename T>
struct Inverse {
  const T* per_edge;
  T uniform;
  T at(int64_t e) const { return per_edge ? per_edge[e] : uniform; }
};

// one edge in the geometry dtype: its vector, length and normalised length x = r / r_max
template <typename T>
struct Edge {
  T vx, vy, vz, r, inv, x;
  Edge(const double* vec, int64_t e, const Inverse<T>& inverse)
      : vx(T(vec[3 * e])), vy(T(vec[3 * e + 1])), vz(T(vec[3 * e + 2])),
        r(std::sqrt(vx * vx + vy * vy + vz * vz)), inv(inverse.at(e)), x(r * inv) {}
};

template <typename T>
void forward_loop(const double* __restrict__ vec, Inverse<T> inverse, const Envelope& env,
                  int64_t n_edges, int64_t n_basis, int64_t l_max, T* __restrict__ basis,
                  T* __restrict__ sh) {
  const T a = T(env.a), b = T(env.b), c = T(env.c), pi = T(kPi), sqrt3 = T(kSqrt3);
  const int64_t sh_dim = l_max == 0 ? 1 : 4;
  for (int64_t e = 0; e < n_edges; ++e) {
    const Edge<T> edge(vec, e, inverse);
    const T vx = edge.vx, vy = edge.vy, vz = edge.vz, r = edge.r, x = edge.x;
    T* out = basis + e * n_basis;
    if (x < T(1)) {
      const T w = (T(1) + int_pow(x, env.p) * (a + x * (b + c * x))) / (x * pi);
      const T s1 = std::sin(pi * x), c1 = std::cos(pi * x);
      T s = s1, co = c1;
      for (int64_t n = 0; n < n_basis; ++n) {
        out[n] = s * w;
        const T next = s * c1 + co * s1;
        co = co * c1 - s * s1;
        s = next;
      }
    } else {
      for (int64_t n = 0; n < n_basis; ++n) out[n] = T(0);
    }
    T* y = sh + e * sh_dim;
    y[0] = T(1);
    if (l_max == 1) {
      const T scale = sqrt3 / r;
      y[1] = vx * scale;
      y[2] = vy * scale;
      y[3] = vz * scale;
    }
  }
}

// d loss / d v (float64, (n_edges, 3)) from d loss / d basis and d loss / d sh
template <typename T>
void backward_loop(const double* __restrict__ vec, Inverse<T> inverse, const Envelope& env,
                   int64_t n_edges, int64_t n_basis, int64_t l_max,
                   const T* __restrict__ grad_basis, const T* __restrict__ grad_sh,
                   double* __restrict__ grad_vec) {
  const T a = T(env.a), b = T(env.b), c = T(env.c), pi = T(kPi), sqrt3 = T(kSqrt3);
  const int64_t sh_dim = l_max == 0 ? 1 : 4;
  for (int64_t e = 0; e < n_edges; ++e) {
    const Edge<T> edge(vec, e, inverse);
    const T vx = edge.vx, vy = edge.vy, vz = edge.vz, r = edge.r, inv = edge.inv, x = edge.x;
    T grad_r = T(0);
    if (grad_basis != nullptr && x < T(1)) {
      const T xp = int_pow(x, env.p);
      const T poly = a + x * (b + c * x);
      const T envelope = T(1) + xp * poly;
      const T d_envelope = (env.p ? T(env.p) * int_pow(x, env.p - 1) * poly : T(0)) +
                           xp * (b + T(2) * c * x);
      const T px = pi * x;
      const T w = envelope / px, dw = d_envelope / px - envelope / (px * x);
      const T s1 = std::sin(px), c1 = std::cos(px);
      const T* g = grad_basis + e * n_basis;
      T s = s1, co = c1, grad_x = T(0);
      for (int64_t n = 0; n < n_basis; ++n) {
        grad_x += g[n] * (T(n + 1) * pi * co * w + s * dw);
        const T next = s * c1 + co * s1;
        co = co * c1 - s * s1;
        s = next;
      }
      grad_r = grad_x * inv;
    }
    T gx = grad_r * vx / r, gy = grad_r * vy / r, gz = grad_r * vz / r;
    if (grad_sh != nullptr && l_max == 1) {
      const T* g = grad_sh + e * sh_dim + 1;
      const T inv_r = T(1) / r;
      const T radial = (g[0] * vx + g[1] * vy + g[2] * vz) * inv_r * inv_r;
      gx += sqrt3 * inv_r * (g[0] - radial * vx);
      gy += sqrt3 * inv_r * (g[1] - radial * vy);
      gz += sqrt3 * inv_r * (g[2] - radial * vz);
    }
    grad_vec[3 * e] = double(gx);
    grad_vec[3 * e + 1] = double(gy);
    grad_vec[3 * e + 2] = double(gz);
  }
}

struct Settings {
  int64_t n_basis, p, l_max;
  double inverse_uniform;
  at::ScalarType dtype;
};

Settings settings_of(AutogradContext* ctx) {
  return {ctx->saved_data["n_basis"].toInt(), ctx->saved_data["p"].toInt(),
          ctx->saved_data["l_max"].toInt(), ctx->saved_data["inverse_uniform"].toDouble(),
          static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt())};
}

// the first derivative as differentiable ATen ops (grad mode on: a further order is wanted)
Tensor backward_aten(const Tensor& vec, const Tensor& inverse, const Settings& s,
                     const Tensor& grad_basis, const Tensor& grad_sh) {
  const Envelope env(s.p);
  auto v = vec.to(s.dtype);
  auto r = at::linalg_vector_norm(v, 2, {-1}, true);
  auto inv = inverse.numel() ? inverse.unsqueeze(-1)
                             : torch::full({1, 1}, s.inverse_uniform, v.options());
  auto x = r * inv;
  auto grad_r = torch::zeros_like(r);
  if (grad_basis.defined()) {
    auto mask = (x < 1).to(s.dtype);
    auto poly = env.a + x * (env.b + env.c * x);
    auto xp = torch::pow(x, s.p);
    auto envelope = 1 + xp * poly;
    auto d_envelope = xp * (env.b + 2 * env.c * x);
    if (s.p) d_envelope = d_envelope + s.p * torch::pow(x, s.p - 1) * poly;
    auto px = kPi * x;
    auto w = envelope / px, dw = d_envelope / px - envelope / (px * x);
    auto n_pi = torch::arange(1, s.n_basis + 1, v.options()) * kPi;
    auto d_basis = n_pi * torch::cos(x * n_pi) * w + torch::sin(x * n_pi) * dw;
    grad_r = (grad_basis * d_basis).sum(-1, true) * mask * inv;
  }
  auto grad_v = grad_r * v / r;
  if (grad_sh.defined() && s.l_max == 1) {
    auto g = grad_sh.narrow(-1, 1, 3);
    auto radial = (g * v).sum(-1, true) / (r * r);
    grad_v = grad_v + kSqrt3 * (g - radial * v) / r;
  }
  return grad_v.to(vec.scalar_type());
}

struct Geometry : public torch::autograd::Function<Geometry> {
  static tensor_list forward(AutogradContext* ctx, const Tensor& vec_in, const Tensor& inverse,
                             double inverse_uniform, int64_t n_basis, int64_t p, int64_t l_max,
                             int64_t dtype) {
    auto vec = vec_in.contiguous();
    const auto scalar = static_cast<at::ScalarType>(dtype);
    const int64_t n_edges = vec.size(0);
    auto options = vec.options().dtype(scalar);
    auto basis = torch::empty({n_edges, n_basis}, options);
    auto sh = torch::empty({n_edges, l_max == 0 ? 1 : 4}, options);
    const Envelope env(p);
    AT_DISPATCH_FLOATING_TYPES(scalar, "allegro_geometry", [&] {
      Inverse<scalar_t> inv{inverse.numel() ? inverse.data_ptr<scalar_t>() : nullptr,
                            scalar_t(inverse_uniform)};
      forward_loop<scalar_t>(vec.data_ptr<double>(), inv, env, n_edges, n_basis, l_max,
                             basis.data_ptr<scalar_t>(), sh.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({vec_in, inverse});  // the input: connected to the graph
    ctx->saved_data["n_basis"] = n_basis;
    ctx->saved_data["p"] = p;
    ctx->saved_data["l_max"] = l_max;
    ctx->saved_data["inverse_uniform"] = inverse_uniform;
    ctx->saved_data["dtype"] = dtype;
    return {basis, sh};
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &vec = saved[0], &inverse = saved[1];
    const Settings s = settings_of(ctx);
    const Tensor &grad_basis = grads[0], &grad_sh = grads[1];
    Tensor grad_vec;
    if (torch::GradMode::is_enabled()) {
      grad_vec = backward_aten(vec, inverse, s, grad_basis, grad_sh);
    } else {
      auto gb = grad_basis.defined() ? grad_basis.contiguous() : grad_basis;
      auto gs = grad_sh.defined() ? grad_sh.contiguous() : grad_sh;
      auto vc = vec.contiguous();
      grad_vec = torch::empty_like(vc);
      const int64_t n_edges = vec.size(0);
      AT_DISPATCH_FLOATING_TYPES(s.dtype, "allegro_geometry_backward", [&] {
        Inverse<scalar_t> inv{inverse.numel() ? inverse.data_ptr<scalar_t>() : nullptr,
                              scalar_t(s.inverse_uniform)};
        backward_loop<scalar_t>(vc.data_ptr<double>(), inv, Envelope(s.p), n_edges,
                                s.n_basis, s.l_max,
                                gb.defined() ? gb.data_ptr<scalar_t>() : nullptr,
                                gs.defined() ? gs.data_ptr<scalar_t>() : nullptr,
                                grad_vec.data_ptr<double>());
      });
    }
    return {grad_vec, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

}  // namespace

std::tuple<torch::Tensor, torch::Tensor> allegro_geometry(
    const torch::Tensor& vec, const std::optional<torch::Tensor>& inverse,
    double inverse_uniform, int64_t n_basis, int64_t p, int64_t l_max, bool float64) {
  const at::ScalarType dtype = float64 ? at::kDouble : at::kFloat;
  TORCH_CHECK(vec.device().is_cpu() && vec.scalar_type() == at::kDouble && vec.dim() == 2 &&
                  vec.size(1) == 3,
              "allegro_geometry: vec must be a (n_edges, 3) float64 CPU tensor");
  TORCH_CHECK(l_max == 0 || l_max == 1, "allegro_geometry: l_max must be 0 or 1");
  TORCH_CHECK(n_basis >= 1 && p >= 0, "allegro_geometry: n_basis >= 1 and p >= 0 needed");
  // no per-edge values: an empty tensor (undefined ones cannot pass through apply)
  torch::Tensor inv = torch::empty({0}, vec.options().dtype(dtype));
  if (inverse.has_value() && inverse->defined()) {
    inv = inverse->to(dtype).contiguous();
    TORCH_CHECK(inv.dim() == 1 && inv.size(0) == vec.size(0),
                "allegro_geometry: inverse must hold one value per edge");
  }
  auto out = Geometry::apply(vec, inv, inverse_uniform, n_basis, p, l_max,
                             static_cast<int64_t>(dtype));
  return {out[0], out[1]};
}
