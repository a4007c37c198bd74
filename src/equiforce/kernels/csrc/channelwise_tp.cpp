// Fused gather -> channel-wise tensor product -> scatter kernels (CPU, float32/float64).
//
// All three kernels evaluate slices of one trilinear form over the edges e of a graph,
//
//   F = sum_e sum_t S[e, t] * sum_u A[g(e), ia_t, u] * R[e, p_t, u] * B[o(e), ib_t, u],
//
// where t runs over "triples" (p_t, ia_t, ib_t, c_t): a tensor-product path p, a pair of
// components of the two node tensors it couples and the column c_t of S that weights it
// (the same triple table may come in another order, e.g. sorted for the swapped roles of A
// and B, and still address the same S columns). S holds the Clebsch-Gordan coefficients
// already contracted with the edge spherical harmonics, and R the per-edge, per-path,
// per-channel radial weights. Each kernel returns the gradient of F with respect to one
// argument, so the derivatives of each kernel are again these kernels (any grad order):
//
//   node_out  dF/dB: out[o, ib, u], edges visited per output node o through a CSR (perm,
//             offsets); no atomics, deterministic, parallel over output nodes.
//   edge_r    dF/dR: out[e, p, u], parallel over edges.
//   edge_s    dF/dS: out[e, t],    parallel over edges.
//
// Node tensors are channel-last, (n_nodes, n_components, U), so the inner loops run over the
// U channels with unit stride (vectorised by the compiler). Triples arrive sorted by
// (p, ia) so node_out forms A * R once per run of equal (p, ia). The edge_s dot products are
// plain loops with an ``omp simd`` reduction (fixed order: deterministic).

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

void check_inputs(const torch::Tensor& a, const torch::Tensor& s, const torch::Tensor& r,
                  const torch::Tensor& triples) {
  TORCH_CHECK(a.device().is_cpu() && s.device().is_cpu() && r.device().is_cpu(),
              "equiforce channel-wise TP kernels run on CPU tensors");
  TORCH_CHECK(a.dim() == 3 && r.dim() == 3 && s.dim() == 2, "bad ranks");
  TORCH_CHECK(a.scalar_type() == s.scalar_type() && a.scalar_type() == r.scalar_type(),
              "dtypes differ");
  TORCH_CHECK(triples.dim() == 2 && triples.size(1) == 4, "triples must be (T, 4)");
  TORCH_CHECK(s.size(1) == triples.size(0), "S has one column per triple");
  TORCH_CHECK(a.size(2) == r.size(2), "A and R have different channel counts");
}

// An index argument as the kernels read it: int64 on the CPU, `dim` dimensions, unit strides.
// The loops index raw pointers, so a strided view (e.g. a row of edge_index.T.contiguous().T)
// must be copied, never read as if it were contiguous.
torch::Tensor index_input(const torch::Tensor& index, const char* name, int64_t dim) {
  TORCH_CHECK(index.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(index.scalar_type() == torch::kLong, name, " must be int64, got ",
              index.scalar_type());
  TORCH_CHECK(index.dim() == dim, name, " must have ", dim, " dimensions, got ", index.dim());
  return index.contiguous();
}

template <typename T>
void node_out_impl(const T* a, const T* s, const T* r, const int64_t* gather,
                   const int64_t* perm, const int64_t* offsets, const int64_t* triples,
                   int64_t n_out, int64_t n_triples, int64_t da, int64_t d_out, int64_t n_paths,
                   int64_t channels, T* out) {
  at::parallel_for(0, n_out, 16, [&](int64_t begin, int64_t end) {
    std::vector<T> prod(channels);
    for (int64_t node = begin; node < end; ++node) {
      T* acc = out + node * d_out * channels;
      for (int64_t q = offsets[node]; q < offsets[node + 1]; ++q) {
        const int64_t e = perm[q];
        const T* a_row = a + gather[e] * da * channels;
        const T* r_row = r + e * n_paths * channels;
        const T* s_row = s + e * n_triples;
        int64_t last_p = -1, last_ia = -1;
        for (int64_t t = 0; t < n_triples; ++t) {
          const int64_t* row = triples + 4 * t;
          const int64_t p = row[0], ia = row[1], ib = row[2], column = row[3];
          if (p != last_p || ia != last_ia) {
            const T* x = a_row + ia * channels;
            const T* w = r_row + p * channels;
            for (int64_t u = 0; u < channels; ++u) prod[u] = x[u] * w[u];
            last_p = p;
            last_ia = ia;
          }
          const T coefficient = s_row[column];
          T* y = acc + ib * channels;
          for (int64_t u = 0; u < channels; ++u) y[u] += coefficient * prod[u];
        }
      }
    }
  });
}

template <typename T>
void edge_r_impl(const T* a, const T* s, const T* b, const int64_t* gather,
                 const int64_t* other, const int64_t* triples, int64_t n_edges,
                 int64_t n_triples, int64_t da, int64_t db, int64_t n_paths, int64_t channels,
                 T* out) {
  // `out` is uninitialised: a path's first triple writes its row, later ones add, and the
  // rows of paths without triples are zeroed (no separate zero-fill pass over the output)
  std::vector<char> has_triple(n_paths, 0);
  for (int64_t t = 0; t < n_triples; ++t) has_triple[triples[4 * t]] = 1;
  at::parallel_for(0, n_edges, 64, [&](int64_t begin, int64_t end) {
    std::vector<char> written(n_paths);
    for (int64_t e = begin; e < end; ++e) {
      const T* a_row = a + gather[e] * da * channels;
      const T* b_row = b + other[e] * db * channels;
      const T* s_row = s + e * n_triples;
      T* o_row = out + e * n_paths * channels;
      std::fill(written.begin(), written.end(), 0);
      for (int64_t t = 0; t < n_triples; ++t) {
        const int64_t* row = triples + 4 * t;
        const int64_t p = row[0], ia = row[1], ib = row[2], column = row[3];
        const T coefficient = s_row[column];
        const T* x = a_row + ia * channels;
        const T* y = b_row + ib * channels;
        T* z = o_row + p * channels;
        if (written[p]) {
          for (int64_t u = 0; u < channels; ++u) z[u] += coefficient * x[u] * y[u];
        } else {
          for (int64_t u = 0; u < channels; ++u) z[u] = coefficient * x[u] * y[u];
          written[p] = 1;
        }
      }
      for (int64_t p = 0; p < n_paths; ++p)
        if (!has_triple[p]) std::fill(o_row + p * channels, o_row + (p + 1) * channels, T(0));
    }
  });
}

template <typename T>
void edge_s_impl(const T* a, const T* r, const T* b, const int64_t* gather,
                 const int64_t* other, const int64_t* triples, int64_t n_edges,
                 int64_t n_triples, int64_t da, int64_t db, int64_t n_paths, int64_t channels,
                 T* out) {
  at::parallel_for(0, n_edges, 64, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      const T* a_row = a + gather[e] * da * channels;
      const T* b_row = b + other[e] * db * channels;
      const T* r_row = r + e * n_paths * channels;
      for (int64_t t = 0; t < n_triples; ++t) {
        const int64_t* row = triples + 4 * t;
        const int64_t p = row[0], ia = row[1], ib = row[2], column = row[3];
        const T* x = a_row + ia * channels;
        const T* y = b_row + ib * channels;
        const T* w = r_row + p * channels;
        T total = 0;
#pragma omp simd reduction(+ : total)
        for (int64_t u = 0; u < channels; ++u) total += x[u] * w[u] * y[u];
        out[e * n_triples + column] = total;
      }
    }
  });
}

}  // namespace

// out[o, ib, u] = sum_{q in CSR row o} sum_t S[e, t] A[gather[e], ia_t, u] R[e, p_t, u],
// e = perm[q].
torch::Tensor node_out(torch::Tensor a, torch::Tensor s, torch::Tensor r, torch::Tensor gather,
                       torch::Tensor perm, torch::Tensor offsets, torch::Tensor triples,
                       int64_t n_out, int64_t d_out) {
  check_inputs(a, s, r, triples);
  a = a.contiguous();
  s = s.contiguous();
  r = r.contiguous();
  gather = index_input(gather, "gather", 1);
  perm = index_input(perm, "perm", 1);
  offsets = index_input(offsets, "offsets", 1);
  triples = index_input(triples, "triples", 2);
  TORCH_CHECK(gather.size(0) == s.size(0) && perm.size(0) == s.size(0),
              "gather and perm need one entry per edge");
  TORCH_CHECK(offsets.size(0) == n_out + 1, "offsets needs n_out + 1 entries");
  auto out = torch::zeros({n_out, d_out, a.size(2)}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "node_out", [&] {
    node_out_impl<scalar_t>(a.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                            r.data_ptr<scalar_t>(), gather.data_ptr<int64_t>(),
                            perm.data_ptr<int64_t>(), offsets.data_ptr<int64_t>(),
                            triples.data_ptr<int64_t>(), n_out, triples.size(0), a.size(1),
                            d_out, r.size(1), a.size(2), out.data_ptr<scalar_t>());
  });
  return out;
}

// out[e, p, u] = sum_{t: p_t = p} S[e, t] A[gather[e], ia_t, u] B[other[e], ib_t, u].
torch::Tensor edge_r(torch::Tensor a, torch::Tensor s, torch::Tensor b, torch::Tensor gather,
                     torch::Tensor other, torch::Tensor triples, int64_t n_paths) {
  check_inputs(a, s, b, triples);
  a = a.contiguous();
  s = s.contiguous();
  b = b.contiguous();
  gather = index_input(gather, "gather", 1);
  other = index_input(other, "other", 1);
  triples = index_input(triples, "triples", 2);
  TORCH_CHECK(gather.size(0) == s.size(0) && other.size(0) == s.size(0),
              "gather and other need one entry per edge");
  auto out = torch::empty({s.size(0), n_paths, a.size(2)}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "edge_r", [&] {
    edge_r_impl<scalar_t>(a.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                          b.data_ptr<scalar_t>(), gather.data_ptr<int64_t>(),
                          other.data_ptr<int64_t>(), triples.data_ptr<int64_t>(), s.size(0),
                          triples.size(0), a.size(1), b.size(1), n_paths, a.size(2),
                          out.data_ptr<scalar_t>());
  });
  return out;
}

// out[e, t] = sum_u A[gather[e], ia_t, u] R[e, p_t, u] B[other[e], ib_t, u].
torch::Tensor edge_s(torch::Tensor a, torch::Tensor r, torch::Tensor b, torch::Tensor gather,
                     torch::Tensor other, torch::Tensor triples) {
  TORCH_CHECK(a.device().is_cpu() && r.device().is_cpu() && b.device().is_cpu(),
              "equiforce channel-wise TP kernels run on CPU tensors");
  TORCH_CHECK(a.scalar_type() == r.scalar_type() && a.scalar_type() == b.scalar_type(),
              "dtypes differ");
  a = a.contiguous();
  r = r.contiguous();
  b = b.contiguous();
  gather = index_input(gather, "gather", 1);
  other = index_input(other, "other", 1);
  triples = index_input(triples, "triples", 2);
  TORCH_CHECK(triples.size(1) == 4, "triples must be (T, 4)");
  TORCH_CHECK(gather.size(0) == r.size(0) && other.size(0) == r.size(0),
              "gather and other need one entry per edge");
  auto out = torch::empty({r.size(0), triples.size(0)}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "edge_s", [&] {
    edge_s_impl<scalar_t>(a.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(),
                          b.data_ptr<scalar_t>(), gather.data_ptr<int64_t>(),
                          other.data_ptr<int64_t>(), triples.data_ptr<int64_t>(), r.size(0),
                          triples.size(0), a.size(1), b.size(1), r.size(1), a.size(2),
                          out.data_ptr<scalar_t>());
  });
  return out;
}

// symmetric_contraction.cpp
torch::Tensor sc_forward(torch::Tensor p, torch::Tensor x, c10::optional<torch::Tensor> v,
                         torch::Tensor type, torch::Tensor pairs, torch::Tensor cubes);
torch::Tensor sc_moment(torch::Tensor g, torch::Tensor x, c10::optional<torch::Tensor> v,
                        torch::Tensor type, torch::Tensor pairs, torch::Tensor cubes,
                        int64_t n_types);
torch::Tensor sc_gradient(torch::Tensor p, torch::Tensor g, torch::Tensor x,
                          c10::optional<torch::Tensor> v, torch::Tensor type,
                          torch::Tensor pairs, torch::Tensor cubes);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("node_out", &node_out, "dF/dB of the trilinear edge form (see file header)");
  m.def("edge_r", &edge_r, "dF/dR of the trilinear edge form");
  m.def("edge_s", &edge_s, "dF/dS of the trilinear edge form");
  m.def("sc_forward", &sc_forward, "symmetric contraction: y = P . nu(x)");
  m.def("sc_moment", &sc_moment, "symmetric contraction: dPhi/dP");
  m.def("sc_gradient", &sc_gradient, "symmetric contraction: dPhi/dx");
}
