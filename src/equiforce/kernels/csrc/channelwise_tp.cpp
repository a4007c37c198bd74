// Fused gather -> channel-wise tensor product -> scatter kernels (CPU, float32/float64).
//
// All three kernels evaluate slices of one trilinear form over the edges e of a graph,
//
//   F = sum_e sum_t S[e, t] * sum_u A[g(e), ia_t, u] * R[w(e), p_t, u] * B[o(e), ib_t, u],
//
// where t runs over "triples" (p_t, ia_t, ib_t, c_t): a tensor-product path p, a pair of
// components of the two node tensors it couples and the column c_t of S that weights it
// (the same triple table may come in another order, e.g. sorted for the swapped roles of A
// and B, and still address the same S columns). S holds the Clebsch-Gordan coefficients
// already contracted with the edge spherical harmonics, and R the per-path, per-channel
// radial weights: row w(e) of R belongs to edge e, so edges that share their weights (the
// two directions of a bond) read one row, and dF/dR sums both edges into it without an
// (n_edges x features) copy. Each kernel returns the gradient of F with respect to one
// argument, so the derivatives of each kernel are again these kernels (any grad order):
//
//   node_out  dF/dB: out[o, ib, u], edges visited per output node o through a CSR (perm,
//             offsets); no atomics, deterministic, parallel over output nodes.
//   edge_r    dF/dR: out[w, p, u], edges visited per row w of R through a CSR; parallel
//             over rows.
//   edge_s    dF/dS: out[e, t],    parallel over edges.
//
// Node tensors are channel-last, (n_nodes, n_components, U), so the inner loops run over the
// U channels with unit stride. node_out and edge_r sum each output row in vector registers
// (GCC vector types; 128 channels at a time, then single vectors, then element by element)
// over the triples of its output component or path and the row's edges, in table and CSR
// order, and store it once: a row updated in memory triple after triple is bound by its
// stores, and a whole 128-channel row pays the edge and triple bookkeeping once. edge_s
// forms, per edge, each product row A[ia] * R[p] in registers once for up to four triples of
// that (p, ia) and dots it with their rows of B, each sum reduced as a tree of lanes. Every
// sum runs in a fixed order (deterministic). Where R does not fit in the caches, node_out and
// edge_s ask for the rows they will gather next (prefetch, below).

#include <torch/types.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "vector_registers.h"

namespace {

using equiforce_vec::kLanes;
using equiforce_vec::load;
using equiforce_vec::store;
using equiforce_vec::sum_lanes;
using equiforce_vec::Vec;

// A running sum of up to kVectors vectors: kRowChannels channels (with AVX-512 a whole
// 128-channel row, whose edge and triple bookkeeping is then paid once per row).
template <typename T>
constexpr int64_t kVectors = equiforce_vec::kRowChannels<T> / kLanes<T>;

// acc += c * x * y over V vectors.
template <typename T, int64_t V>
inline void add_product(Vec<T>* acc, T c, const T* x, const T* y) {
  for (int64_t k = 0; k < V; ++k)
    acc[k] += c * load<T>(x + k * kLanes<T>) * load<T>(y + k * kLanes<T>);
}

template <typename T, int64_t V>
inline void store_block(T* z, const Vec<T>* acc) {
  for (int64_t k = 0; k < V; ++k) store<T>(z + k * kLanes<T>, acc[k]);
}

// Asks for `count` elements from `p` on in the caches ahead of their use: rows gathered by
// an index, which the hardware prefetchers do not foresee. Done only where R holds more than
// kCached bytes: on a 999-atom water box (R: 141 MB float32) the first read of each edge's
// rows of R came from memory, and asking ahead made node_out 1.12-1.16x and edge_s
// 1.15-1.23x faster (float64: 1.0-1.1x, 1.2-1.4x; edge_r, whose rows of A and B were asked
// for, gained nothing and asks for none); on one molecule (R: 0.5 MB) the rows stay in cache.
constexpr int64_t kCached = int64_t(4) << 20;

template <typename T>
inline bool beyond_cache(int64_t elements) {
  return elements * static_cast<int64_t>(sizeof(T)) > kCached;
}

template <typename T>
inline void prefetch(const T* p, int64_t count) {
  const char* bytes = reinterpret_cast<const char*>(p);
  const int64_t n = count * static_cast<int64_t>(sizeof(T));
  for (int64_t offset = 0; offset < n; offset += 64) __builtin_prefetch(bytes + offset, 0, 2);
}

// block(std::integral_constant<int64_t, V>{}, u0) over the channels in blocks of V vectors:
// kVectors while they fit, then single vectors. Returns where the channel tail (fewer
// channels than a vector's lanes, summed element by element) starts.
template <typename T, typename Block>
inline int64_t for_each_block(int64_t channels, Block&& block) {
  constexpr int64_t L = kLanes<T>, wide = kVectors<T> * L;
  int64_t u0 = 0;
  for (; u0 + wide <= channels; u0 += wide) {
    block(std::integral_constant<int64_t, kVectors<T>>{}, u0);
  }
  for (; u0 + L <= channels; u0 += L) block(std::integral_constant<int64_t, 1>{}, u0);
  return u0;
}

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

// The triples grouped by key(t) in 0 .. n_groups - 1 (a counting sort, stable; the triples are
// checked first, check_triples): group g owns order[first[g] .. first[g + 1]).
struct TripleGroups {
  std::vector<int64_t> first, order;
};

template <typename Key>
TripleGroups group_triples(int64_t n_triples, int64_t n_groups, const Key& key) {
  TripleGroups groups{std::vector<int64_t>(n_groups + 1, 0), std::vector<int64_t>(n_triples)};
  for (int64_t t = 0; t < n_triples; ++t) ++groups.first[key(t) + 1];
  for (int64_t g = 0; g < n_groups; ++g) groups.first[g + 1] += groups.first[g];
  std::vector<int64_t> next(groups.first.begin(), groups.first.end() - 1);
  for (int64_t t = 0; t < n_triples; ++t) groups.order[next[key(t)]++] = t;
  return groups;
}

// Every triple's path, components and column of S in range: the kernels index raw pointers
// with them.
void check_triples(const int64_t* triples, int64_t n_triples, int64_t n_paths, int64_t da,
                   int64_t db) {
  const int64_t bounds[4] = {n_paths, da, db, n_triples};
  const char* names[4] = {"path", "component of A", "component of B", "column of S"};
  for (int64_t t = 0; t < n_triples; ++t) {
    for (int64_t i = 0; i < 4; ++i) {
      const int64_t value = triples[4 * t + i];
      TORCH_CHECK(value >= 0 && value < bounds[i], "triple ", t, ": ", names[i], " ", value,
                  " outside 0..", bounds[i] - 1);
    }
  }
}

// out[node, ib, u0 .. u0 + V lanes) summed in vector registers over the node's edges and the
// triples [t0, t1) of output component ib (`order` lists the triples by ib), then stored.
template <typename T, int64_t V>
inline void node_out_block(const T* a, const T* s, const T* r, const int64_t* gather,
                           const int64_t* weight_row, const int64_t* perm, int64_t q0, int64_t q1,
                           const int64_t* triples, const int64_t* order, int64_t t0, int64_t t1,
                           int64_t n_triples, int64_t da, int64_t n_paths, int64_t channels,
                           int64_t u0, T* __restrict__ y) {
  Vec<T> acc[V] = {};
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t e = perm[q];
    const T* a_row = a + gather[e] * da * channels + u0;
    const T* r_row = r + weight_row[e] * n_paths * channels + u0;
    const T* s_row = s + e * n_triples;
    for (int64_t j = t0; j < t1; ++j) {
      const int64_t* row = triples + 4 * order[j];
      add_product<T, V>(acc, s_row[row[3]], a_row + row[1] * channels, r_row + row[0] * channels);
    }
  }
  store_block<T, V>(y, acc);
}

template <typename T>
void node_out_impl(const T* a, const T* s, const T* r, const int64_t* gather,
                   const int64_t* weight_row, const int64_t* perm, const int64_t* offsets,
                   const int64_t* triples, int64_t n_out, int64_t n_triples, int64_t da,
                   int64_t d_out, int64_t n_paths, int64_t channels, bool ask_ahead, T* out) {
  // each output row is summed in registers over its component's triples and the node's edges;
  // ask_ahead: R is beyond the caches (beyond_cache), its rows are prefetched
  check_triples(triples, n_triples, n_paths, da, d_out);
  const TripleGroups by_ib =
      group_triples(n_triples, d_out, [&](int64_t t) { return triples[4 * t + 2]; });
  const std::vector<int64_t>& first = by_ib.first;
  const int64_t* order = by_ib.order.data();
  at::parallel_for(0, n_out, 16, [&](int64_t begin, int64_t end) {
    for (int64_t node = begin; node < end; ++node) {
      const int64_t q0 = offsets[node], q1 = offsets[node + 1];
      // the next node's rows of R, asked for a share at each output component
      const int64_t n0 = q1, n_next = node + 1 < end && ask_ahead ? offsets[node + 2] - q1 : 0;
      for (int64_t ib = 0; ib < d_out; ++ib) {
        for (int64_t q = n0 + n_next * ib / d_out; q < n0 + n_next * (ib + 1) / d_out; ++q) {
          prefetch(r + weight_row[perm[q]] * n_paths * channels, n_paths * channels);
        }
        T* __restrict__ y = out + (node * d_out + ib) * channels;
        const int64_t t0 = first[ib], t1 = first[ib + 1];
        const int64_t tail = for_each_block<T>(channels, [&](auto vectors, int64_t u0) {
          node_out_block<T, decltype(vectors)::value>(a, s, r, gather, weight_row, perm, q0, q1,
                                                      triples, order, t0, t1, n_triples, da,
                                                      n_paths, channels, u0, y + u0);
        });
        for (int64_t u = tail; u < channels; ++u) y[u] = T(0);
        for (int64_t q = q0; q < q1 && tail < channels; ++q) {
          const int64_t e = perm[q];
          for (int64_t j = t0; j < t1; ++j) {
            const int64_t* row = triples + 4 * order[j];
            const T coefficient = s[e * n_triples + row[3]];
            const T* __restrict__ x = a + (gather[e] * da + row[1]) * channels;
            const T* __restrict__ w = r + (weight_row[e] * n_paths + row[0]) * channels;
            for (int64_t u = tail; u < channels; ++u) y[u] += coefficient * x[u] * w[u];
          }
        }
      }
    }
  });
}

// Where edge_r reads its inputs: the edges of each row of R (a CSR) and their rows of A, B, S.
template <typename T>
struct EdgeRInputs {
  const T* a;
  const T* b;
  const T* s;
  const int64_t* gather;
  const int64_t* other;
  const int64_t* perm;  // edges sorted by their row of R
  const int64_t* triples;
  const int64_t* order;  // triples sorted by path
  int64_t da, db, n_triples, channels;
};

// out[w, p, u0 .. u0 + V lanes) summed in vector registers over the edges [q0, q1) of row w
// and the path's triples [t0, t1), then stored once.
template <typename T, int64_t V>
inline void edge_r_block(const EdgeRInputs<T>& in, int64_t q0, int64_t q1, int64_t t0,
                         int64_t t1, int64_t u0, T* __restrict__ z) {
  Vec<T> acc[V] = {};
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t e = in.perm[q];
    const T* a_row = in.a + in.gather[e] * in.da * in.channels + u0;
    const T* b_row = in.b + in.other[e] * in.db * in.channels + u0;
    const T* s_row = in.s + e * in.n_triples;
    for (int64_t j = t0; j < t1; ++j) {
      const int64_t* row = in.triples + 4 * in.order[j];
      add_product<T, V>(acc, s_row[row[3]], a_row + row[1] * in.channels,
                        b_row + row[2] * in.channels);
    }
  }
  store_block<T, V>(z, acc);
}

// The same, element by element, for the channels [u0, channels) (fewer than a vector's lanes).
template <typename T>
inline void edge_r_tail(const EdgeRInputs<T>& in, int64_t q0, int64_t q1, int64_t t0,
                        int64_t t1, int64_t u0, T* __restrict__ z) {
  for (int64_t u = u0; u < in.channels; ++u) z[u] = T(0);
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t e = in.perm[q];
    const T* __restrict__ a_row = in.a + in.gather[e] * in.da * in.channels;
    const T* __restrict__ b_row = in.b + in.other[e] * in.db * in.channels;
    const T* s_row = in.s + e * in.n_triples;
    for (int64_t j = t0; j < t1; ++j) {
      const int64_t* row = in.triples + 4 * in.order[j];
      const T coefficient = s_row[row[3]];
      const T* __restrict__ x = a_row + row[1] * in.channels;
      const T* __restrict__ y = b_row + row[2] * in.channels;
      for (int64_t u = u0; u < in.channels; ++u) z[u] += coefficient * x[u] * y[u];
    }
  }
}

template <typename T>
void edge_r_impl(const T* a, const T* s, const T* b, const int64_t* gather,
                 const int64_t* other, const int64_t* perm, const int64_t* offsets,
                 const int64_t* triples, int64_t n_rows, int64_t n_triples, int64_t da,
                 int64_t db, int64_t n_paths, int64_t channels, T* out) {
  // each output row is summed in registers over its edges and its path's triples and written
  // once (a path without triples, or a row without edges, writes zeros)
  check_triples(triples, n_triples, n_paths, da, db);
  const TripleGroups by_p =
      group_triples(n_triples, n_paths, [&](int64_t t) { return triples[4 * t]; });
  const std::vector<int64_t>& first = by_p.first;
  const EdgeRInputs<T> in{a,       b,  s,  gather,    other,   perm, triples,
                          by_p.order.data(), da, db, n_triples, channels};
  at::parallel_for(0, n_rows, 64, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      const int64_t q0 = offsets[w], q1 = offsets[w + 1];
      for (int64_t p = 0; p < n_paths; ++p) {
        T* z = out + (w * n_paths + p) * channels;
        const int64_t tail = for_each_block<T>(channels, [&](auto vectors, int64_t u0) {
          edge_r_block<T, decltype(vectors)::value>(in, q0, q1, first[p], first[p + 1], u0,
                                                    z + u0);
        });
        if (tail < channels) edge_r_tail(in, q0, q1, first[p], first[p + 1], tail, z);
      }
    }
  });
}

// Up to kDots dot products of one product row x * w (kept in registers, never stored) with
// rows y[j] of B, over the channels [0, full) in whole vectors; two partial sums per dot
// product hide the adds' latency.
constexpr int64_t kDots = 4;

// edge_s asks for the rows of the edge this many edges ahead.
constexpr int64_t kAhead = 2;

template <typename T, int64_t M>
inline void edge_s_dots(const T* __restrict__ x, const T* __restrict__ w,
                        const T* const* y, int64_t full, T* totals) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc[M][2] = {};
  int64_t u = 0;
  for (; u + 2 * L <= full; u += 2 * L) {
    const Vec<T> xw0 = load<T>(x + u) * load<T>(w + u);
    const Vec<T> xw1 = load<T>(x + u + L) * load<T>(w + u + L);
    for (int64_t j = 0; j < M; ++j) {
      acc[j][0] += xw0 * load<T>(y[j] + u);
      acc[j][1] += xw1 * load<T>(y[j] + u + L);
    }
  }
  if (u < full) {
    const Vec<T> xw0 = load<T>(x + u) * load<T>(w + u);
    for (int64_t j = 0; j < M; ++j) acc[j][0] += xw0 * load<T>(y[j] + u);
  }
  for (int64_t j = 0; j < M; ++j) {
    totals[j] = sum_lanes<T>(acc[j][0] + acc[j][1]);
  }
}

template <typename T>
void edge_s_impl(const T* a, const T* r, const T* b, const int64_t* gather,
                 const int64_t* other, const int64_t* weight_row, const int64_t* triples,
                 int64_t n_edges, int64_t n_triples, int64_t da, int64_t db, int64_t n_paths,
                 int64_t channels, bool ask_ahead, T* out) {
  // per edge and (path, component of A) group, the product row A * R is formed in registers
  // once for up to kDots triples and dotted with their rows of B; ask_ahead as node_out_impl
  check_triples(triples, n_triples, n_paths, da, db);
  const TripleGroups groups = group_triples(
      n_triples, n_paths * da, [&](int64_t t) { return triples[4 * t] * da + triples[4 * t + 1]; });
  const int64_t* order = groups.order.data();
  const int64_t n_groups = static_cast<int64_t>(groups.first.size()) - 1;
  const int64_t full = channels - channels % kLanes<T>;
  // two instantiations: with the requests ahead, and the loop as it is without them (a test
  // inside one loop cost ~10 % on one molecule)
  const auto run = [&](auto ask) {
    at::parallel_for(0, n_edges, 64, [&](int64_t begin, int64_t end) {
      const T* y[kDots];
      T totals[kDots];
      for (int64_t e = begin; e < end; ++e) {
        if constexpr (decltype(ask)::value) {
          if (const int64_t ahead = e + kAhead; ahead < end) {  // its rows of R, A and B
            prefetch(r + weight_row[ahead] * n_paths * channels, n_paths * channels);
            prefetch(a + gather[ahead] * da * channels, da * channels);
            if (other[ahead] != other[ahead - 1]) {  // consecutive edges mostly share B's
              prefetch(b + other[ahead] * db * channels, db * channels);
            }
          }
        }
        const T* a_row = a + gather[e] * da * channels;
        const T* b_row = b + other[e] * db * channels;
        const T* r_row = r + weight_row[e] * n_paths * channels;
        T* o_row = out + e * n_triples;
        for (int64_t g = 0; g < n_groups; ++g) {
          for (int64_t j0 = groups.first[g]; j0 < groups.first[g + 1]; j0 += kDots) {
            const int64_t m = std::min(kDots, groups.first[g + 1] - j0);
            const int64_t* first_row = triples + 4 * order[j0];
            const T* x = a_row + first_row[1] * channels;
            const T* w = r_row + first_row[0] * channels;
            for (int64_t j = 0; j < m; ++j) {
              y[j] = b_row + triples[4 * order[j0 + j] + 2] * channels;
            }
            switch (m) {
              case 1: edge_s_dots<T, 1>(x, w, y, full, totals); break;
              case 2: edge_s_dots<T, 2>(x, w, y, full, totals); break;
              case 3: edge_s_dots<T, 3>(x, w, y, full, totals); break;
              default: edge_s_dots<T, 4>(x, w, y, full, totals); break;
            }
            for (int64_t j = 0; j < m; ++j) {  // the channel tail, element by element
              const T* yj = y[j];
              for (int64_t u = full; u < channels; ++u) totals[j] += x[u] * w[u] * yj[u];
              o_row[triples[4 * order[j0 + j] + 3]] = totals[j];
            }
          }
        }
      }
    });
  };
  if (ask_ahead) {
    run(std::true_type{});
  } else {
    run(std::false_type{});
  }
}

}  // namespace

// The row of R of each edge: int64, one per edge, every entry in 0 .. n_rows - 1.
torch::Tensor weight_rows(const torch::Tensor& weight_row, int64_t n_edges, int64_t n_rows) {
  auto rows = index_input(weight_row, "weight_row", 1);
  TORCH_CHECK(rows.size(0) == n_edges, "weight_row needs one entry per edge, got ",
              rows.size(0), " for ", n_edges, " edges");
  if (n_edges > 0) {
    TORCH_CHECK(rows.min().item<int64_t>() >= 0 && rows.max().item<int64_t>() < n_rows,
                "weight_row outside 0..", n_rows - 1);
  }
  return rows;
}

// out[o, ib, u] = sum_{q in CSR row o} sum_t S[e, t] A[gather[e], ia_t, u] R[w(e), p_t, u],
// e = perm[q], w = weight_row.
torch::Tensor node_out(torch::Tensor a, torch::Tensor s, torch::Tensor r, torch::Tensor gather,
                       torch::Tensor weight_row, torch::Tensor perm, torch::Tensor offsets,
                       torch::Tensor triples, int64_t n_out, int64_t d_out) {
  check_inputs(a, s, r, triples);
  a = a.contiguous();
  s = s.contiguous();
  r = r.contiguous();
  gather = index_input(gather, "gather", 1);
  weight_row = weight_rows(weight_row, s.size(0), r.size(0));
  perm = index_input(perm, "perm", 1);
  offsets = index_input(offsets, "offsets", 1);
  triples = index_input(triples, "triples", 2);
  TORCH_CHECK(gather.size(0) == s.size(0) && perm.size(0) == s.size(0),
              "gather and perm need one entry per edge");
  TORCH_CHECK(offsets.size(0) == n_out + 1, "offsets needs n_out + 1 entries");
  auto out = torch::empty({n_out, d_out, a.size(2)}, a.options());  // all written
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "node_out", [&] {
    node_out_impl<scalar_t>(a.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                            r.data_ptr<scalar_t>(), gather.data_ptr<int64_t>(),
                            weight_row.data_ptr<int64_t>(), perm.data_ptr<int64_t>(),
                            offsets.data_ptr<int64_t>(), triples.data_ptr<int64_t>(), n_out,
                            triples.size(0), a.size(1), d_out, r.size(1), a.size(2),
                            beyond_cache<scalar_t>(r.numel()), out.data_ptr<scalar_t>());
  });
  return out;
}

// out[w, p, u] = sum_{q in CSR row w} sum_{t: p_t = p} S[e, t] A[gather[e], ia_t, u]
// B[other[e], ib_t, u], e = perm[q]: the (n_rows, n_paths, U) gradient of R.
torch::Tensor edge_r(torch::Tensor a, torch::Tensor s, torch::Tensor b, torch::Tensor gather,
                     torch::Tensor other, torch::Tensor perm, torch::Tensor offsets,
                     torch::Tensor triples, int64_t n_paths) {
  check_inputs(a, s, b, triples);
  a = a.contiguous();
  s = s.contiguous();
  b = b.contiguous();
  gather = index_input(gather, "gather", 1);
  other = index_input(other, "other", 1);
  perm = index_input(perm, "perm", 1);
  offsets = index_input(offsets, "offsets", 1);
  triples = index_input(triples, "triples", 2);
  TORCH_CHECK(gather.size(0) == s.size(0) && other.size(0) == s.size(0) &&
                  perm.size(0) == s.size(0),
              "gather, other and perm need one entry per edge");
  TORCH_CHECK(offsets.size(0) >= 1, "offsets needs n_rows + 1 entries");
  const int64_t n_rows = offsets.size(0) - 1;
  auto out = torch::empty({n_rows, n_paths, a.size(2)}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "edge_r", [&] {
    edge_r_impl<scalar_t>(a.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(),
                          b.data_ptr<scalar_t>(), gather.data_ptr<int64_t>(),
                          other.data_ptr<int64_t>(), perm.data_ptr<int64_t>(),
                          offsets.data_ptr<int64_t>(), triples.data_ptr<int64_t>(), n_rows,
                          triples.size(0), a.size(1), b.size(1), n_paths, a.size(2),
                          out.data_ptr<scalar_t>());
  });
  return out;
}

// out[e, t] = sum_u A[gather[e], ia_t, u] R[w(e), p_t, u] B[other[e], ib_t, u].
torch::Tensor edge_s(torch::Tensor a, torch::Tensor r, torch::Tensor b, torch::Tensor gather,
                     torch::Tensor other, torch::Tensor weight_row, torch::Tensor triples) {
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
  const int64_t n_edges = gather.size(0);
  TORCH_CHECK(other.size(0) == n_edges, "gather and other need one entry per edge");
  weight_row = weight_rows(weight_row, n_edges, r.size(0));
  auto out = torch::empty({n_edges, triples.size(0)}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "edge_s", [&] {
    edge_s_impl<scalar_t>(a.data_ptr<scalar_t>(), r.data_ptr<scalar_t>(),
                          b.data_ptr<scalar_t>(), gather.data_ptr<int64_t>(),
                          other.data_ptr<int64_t>(), weight_row.data_ptr<int64_t>(),
                          triples.data_ptr<int64_t>(), n_edges, triples.size(0), a.size(1),
                          b.size(1), r.size(1), a.size(2), beyond_cache<scalar_t>(r.numel()),
                          out.data_ptr<scalar_t>());
  });
  return out;
}
