// MACE symmetric contraction on sparse monomials (CPU, float32/float64), with its derivatives.
//
// Per atom n (species s = type[n]) and channel c the contraction is a polynomial of degree <= 3
// in the d components x[n, :, c]. It is written on the monomials some output uses,
//
//   mu = [x_a (d of them), Q_q = x_{a_q} x_{b_q} (the pairs), x_{k_j} Q_{q_j} (the cubes)],
//
// (M = d + n_pairs + n_cubes), as  y[n, o, c] = sum_{k: out[k] = o} P[s, k, c] mu_{mono[k]}(x[n, :, c])
// over the `terms` k, the (output, monomial) pairs with a non-zero coefficient (sorted by output),
// with the weights already folded into P (a small torch einsum, differentiated by torch). Three
// kernels evaluate the bilinear form  Phi = sum G[n, out[k], c] P[s, k, c] nu_{mono[k]}(n, c) and its
// derivatives, where nu is either mu(x) (order 0) or its directional derivative along a second
// node tensor v, mu'(x)[v] (order 1):
//
//   forward   dPhi/dG: y[n, o, c]  = sum_{k of o} P[s, k, c] nu_{mono[k]}
//   moment    dPhi/dP: gP[s, k, c] = sum_{n of s} G[n, out[k], c] nu_{mono[k]}
//   gradient  dPhi/dx: gx[n, a, c] = sum_m beta_m d nu_m / d x_a,  beta_m = sum_{k: mono[k] = m} P G
//
// The derivatives of an order-0 kernel are order-0 or order-1 kernels (d nu / d v of an order-1
// nu is the order-0 gradient), which is what forces (first backward) and force training
// (second backward) need; the x-derivative of an order-1 gradient (a third derivative) is not
// provided. Node tensors are channel-last, (n, rows, C), so every inner loop runs over the C
// channels with unit stride; each output element is summed by one thread in a fixed order
// (deterministic).

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
using equiforce_vec::Vec;

struct Monomials {
  int64_t d, n_pairs, n_cubes;
  const int64_t* pair_a;  // (n_pairs,)
  const int64_t* pair_b;
  const int64_t* cube_k;  // (n_cubes,) largest factor
  const int64_t* cube_q;  // (n_cubes,) pair of the other two
  int64_t count() const { return d + n_pairs + n_cubes; }
};

// Row helpers: every inner loop of the kernels is one of these, over the L channels of one
// row. GCC honours __restrict__ on function parameters (not on local pointers), so only as
// parameters do these loops vectorise; `width` is a compile-time block width or an int64_t.
template <typename T, typename W>
inline void row_copy(T* __restrict__ out, const T* __restrict__ a, W width) {
  for (int64_t c = 0; c < int64_t(width); ++c) out[c] = a[c];
}

template <typename T, typename W>
inline void row_add(T* __restrict__ out, const T* __restrict__ a, W width) {
  for (int64_t c = 0; c < int64_t(width); ++c) out[c] += a[c];
}

// out = a * b
template <typename T, typename W>
inline void row_mul(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b,
                    W width) {
  for (int64_t c = 0; c < int64_t(width); ++c) out[c] = a[c] * b[c];
}

// out = a * b + p * q
template <typename T, typename W>
inline void row_mul2(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b,
                     const T* __restrict__ p, const T* __restrict__ q, W width) {
  for (int64_t c = 0; c < int64_t(width); ++c) out[c] = a[c] * b[c] + p[c] * q[c];
}

// out += a * b
template <typename T, typename W>
inline void row_add_mul(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b,
                        W width) {
  for (int64_t c = 0; c < int64_t(width); ++c) out[c] += a[c] * b[c];
}

// out += a * b + p * q
template <typename T, typename W>
inline void row_add_mul2(T* __restrict__ out, const T* __restrict__ a, const T* __restrict__ b,
                         const T* __restrict__ p, const T* __restrict__ q, W width) {
  for (int64_t c = 0; c < int64_t(width); ++c) out[c] += a[c] * b[c] + p[c] * q[c];
}

// out += (a + b) * x
template <typename T, typename W>
inline void row_add_sum_mul(T* __restrict__ out, const T* __restrict__ a,
                            const T* __restrict__ b, const T* __restrict__ x, W width) {
  for (int64_t c = 0; c < int64_t(width); ++c) out[c] += (a[c] + b[c]) * x[c];
}

// nu (M rows of L channels, row stride L) of one atom: x and v rows have stride `stride`.
// Order 0: mu(x); order 1 (v != nullptr): mu'(x)[v]; `quad` (n_pairs x L) receives Q(x).
// `width` is the block's channel count: std::integral_constant<kBlock> for full blocks (the
// inner loops then have a compile-time trip count and vectorise fully) or an int64_t.
template <typename T, typename W>
void build_nu(const Monomials& mono, const T* x, const T* v, int64_t stride, W width,
              T* __restrict__ nu, T* __restrict__ quad) {
  const int64_t L = width;
  const int64_t d = mono.d, np = mono.n_pairs;
  for (int64_t a = 0; a < d; ++a) {
    const T* __restrict__ src = (v ? v : x) + a * stride;
    T* __restrict__ dst = nu + a * L;
    row_copy(dst, src, width);
  }
  for (int64_t q = 0; q < np; ++q) {
    const T* __restrict__ xa = x + mono.pair_a[q] * stride;
    const T* __restrict__ xb = x + mono.pair_b[q] * stride;
    T* __restrict__ qq = quad + q * L;
    row_mul(qq, xa, xb, width);
    T* __restrict__ dst = nu + (d + q) * L;
    if (v) {
      const T* __restrict__ va = v + mono.pair_a[q] * stride;
      const T* __restrict__ vb = v + mono.pair_b[q] * stride;
      row_mul2(dst, va, xb, xa, vb, width);
    } else {
      row_copy(dst, qq, width);
    }
  }
  for (int64_t j = 0; j < mono.n_cubes; ++j) {
    const int64_t k = mono.cube_k[j], q = mono.cube_q[j];
    const T* __restrict__ xk = x + k * stride;
    const T* __restrict__ qq = quad + q * L;
    T* __restrict__ dst = nu + (d + np + j) * L;
    if (v) {
      const T* __restrict__ vk = v + k * stride;
      const T* __restrict__ dq = nu + (d + q) * L;
      row_mul2(dst, vk, qq, xk, dq, width);
    } else {
      row_mul(dst, xk, qq, width);
    }
  }
}

// Every kernel runs over blocks of `kBlock` channels (parallel over blocks) and, inside a
// block, over the atoms grouped by species: a species' coefficients for one block
// (K * kBlock values) stay in cache while its atoms stream past, and each output
// element is written by one thread. That block is larger than L1, so the forward and the
// gradient's beta = P . G take a few atoms at a time with their sums in vector registers and
// read each coefficient row once per group; the moment adds a group into each row at once.
// P and gP are read and written in place (a row's kBlock channels are one cache line in
// float32, two in float64): nothing of the size of P is copied per call, whose fixed cost
// would otherwise be paid again for every small batch (0.6 ms of a 1-atom call once).
constexpr int64_t kBlock = 16;

using FullBlock = std::integral_constant<int64_t, kBlock>;

template <typename F>
void over_channel_blocks(int64_t C, const F& body) {
  const int64_t n_blocks = (C + kBlock - 1) / kBlock;
  at::parallel_for(0, n_blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t cb = begin; cb < end; ++cb) {
      const int64_t c0 = cb * kBlock;
      if (C - c0 >= kBlock) {
        body(c0, FullBlock{});
      } else {
        body(c0, C - c0);
      }
    }
  });
}

// Scratch rows of the calling thread (slot: which buffer of a kernel), kept between calls and
// not initialised: a kernel's buffers (the monomials of a group of atoms: 250 KB for MACE-128's
// first layer in float32) cost neither an allocation, its page faults nor a zero fill per
// channel block, which a one-molecule call paid in full.
template <typename T, int Slot>
T* thread_scratch(size_t count) {
  thread_local std::vector<T> buffer;
  if (buffer.size() < count) buffer.resize(count);
  return buffer.data();
}

// Atoms grouped by species (counting sort): `order` lists them, species s at
// order[starts[s] .. starts[s + 1]).
void group_by_species(const int64_t* type, int64_t n, int64_t n_types,
                      std::vector<int64_t>& order, std::vector<int64_t>& starts) {
  starts.assign(n_types + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++starts[type[i] + 1];
  for (int64_t s = 0; s < n_types; ++s) starts[s + 1] += starts[s];
  std::vector<int64_t> next(starts.begin(), starts.end() - 1);
  order.resize(n);
  for (int64_t i = 0; i < n; ++i) order[next[type[i]]++] = i;
}

// A run of at most a group size of atoms of one species: order[first .. first + count).
struct SpeciesGroup {
  int64_t species, first, count;
};

// The atoms grouped by species (`order`, group_by_species) and cut into groups of `size`.
std::vector<SpeciesGroup> species_groups(const int64_t* type, int64_t n, int64_t n_types,
                                         int64_t size, std::vector<int64_t>& order) {
  std::vector<int64_t> starts;
  group_by_species(type, n, n_types, order, starts);
  std::vector<SpeciesGroup> groups;
  for (int64_t s = 0; s < n_types; ++s)
    for (int64_t first = starts[s]; first < starts[s + 1]; first += size)
      groups.push_back({s, first, std::min(size, starts[s + 1] - first)});
  return groups;
}

// Atoms of each species in `groups`.
std::vector<int64_t> atoms_per_species(const std::vector<SpeciesGroup>& groups, int64_t n_types) {
  std::vector<int64_t> counts(n_types, 0);
  for (const SpeciesGroup& group : groups) counts[group.species] += group.count;
  return counts;
}

// A species with at least this many atoms in a call gets its coefficient rows of a channel
// block packed into a contiguous buffer (stride L); the others read or write them in place in
// P (stride C). Packed rows stream through memory the prefetcher follows; in place costs
// nothing per call, which small batches (a few atoms per species) pay otherwise.
constexpr int64_t kPackAtoms = 16;

// Row j of species s's K coefficient rows of one channel block (channels c0 .. c0 + L)
// is at base[s] + j * stride[s]: packed (a copy of P's rows, or zeros that a gradient is summed
// into) or in place in P (home[s], stride C).
template <typename T, typename Ptr>
struct SpeciesRows {
  std::vector<T> packed;
  std::vector<Ptr> base, home;
  std::vector<int64_t> stride;
  int64_t rows, C, L;

  // `p`: P (const: packed rows are copies of P's) or gP (every row of the block starts at
  // zero, in place or packed; `copy_out` stores the packed ones).
  SpeciesRows(Ptr p, const std::vector<int64_t>& counts, int64_t rows, int64_t C, int64_t c0,
              int64_t L)
      : base(counts.size()), home(counts.size()), stride(counts.size()), rows(rows), C(C), L(L) {
    int64_t n_packed = 0;
    for (int64_t count : counts) n_packed += count >= kPackAtoms;
    packed.assign(n_packed * rows * L, T(0));
    T* next = packed.data();
    for (size_t s = 0; s < counts.size(); ++s) {
      home[s] = base[s] = p + int64_t(s) * rows * C + c0;
      stride[s] = C;
      if (counts[s] < kPackAtoms) {
        if constexpr (!std::is_const_v<std::remove_pointer_t<Ptr>>) {
          for (int64_t r = 0; r < rows; ++r) std::fill(home[s] + r * C, home[s] + r * C + L, T(0));
        }
        continue;
      }
      if constexpr (std::is_const_v<std::remove_pointer_t<Ptr>>) {
        for (int64_t r = 0; r < rows; ++r)
          std::copy(home[s] + r * C, home[s] + r * C + L, next + r * L);
      }
      base[s] = next;
      stride[s] = L;
      next += rows * L;
    }
  }

  bool is_packed(size_t s) const { return base[s] != home[s]; }

  // The packed rows into their place in gP (the in-place rows are there already).
  void copy_out() const {
    for (size_t s = 0; s < base.size(); ++s) {
      if (!is_packed(s)) continue;
      for (int64_t r = 0; r < rows; ++r)
        std::copy(base[s] + r * L, base[s] + r * L + L, home[s] + r * C);
    }
  }
};

// The non-zero (output, monomial) entries of P, sorted by output: a species' coefficient row k
// multiplies monomial mono[k] into output out[k]; output o owns rows start[o] .. start[o + 1].
// (Each monomial of an equivariant polynomial feeds few of the outputs: for MACE-128's first
// layer, 0e+1o+2e+3o -> 0e+1o, 410 of the 4 x 494 (output, monomial) pairs; dense rows would
// be 79 % zeros, multiplied and streamed from memory all the same.)
// For the gradient's beta: the terms that are their monomial's first (`first`, output o's at
// first[first_start[o] .. first_start[o + 1])), the others (`repeat`, likewise), and the
// monomials of no term (`unused`).
struct Terms {
  int64_t count, n_out;
  const int64_t* out;   // (count,) non-decreasing
  const int64_t* mono;  // (count,)
  std::vector<int64_t> start;  // (n_out + 1,)
  std::vector<int64_t> first, first_start, repeat, repeat_start, unused;
};

// atoms per group: 4 accumulator vectors (float32: 4 atoms of one vector each; 8 measured no
// faster on one molecule, with twice the monomial buffer)
template <typename T>
constexpr int64_t kVecs = kBlock / kLanes<T>;  // vectors per kBlock channels
template <typename T>
constexpr int64_t kGroup = 4 / kVecs<T>;

// body(std::integral_constant<int64_t, N>{}) for N == count, 1 <= count <= Max: each group
// size its own instantiation, so the per-atom loops have a compile-time trip count and their
// sums stay in registers (no padding of a short group with unused atoms).
template <int64_t Max, typename F>
inline void with_group_size(int64_t count, const F& body) {
  if constexpr (Max >= 1) {
    if (count == Max) {
      body(std::integral_constant<int64_t, Max>{});
      return;
    }
    with_group_size<Max - 1>(count, body);
  }
}

// Rows G[atoms[a], o, c0 .. c0 + kBlock) of A atoms, in registers.
template <typename T, int64_t A>
struct GroupRows {
  Vec<T> v[A][kVecs<T>];

  GroupRows(const T* g, const int64_t* atoms, int64_t n_out, int64_t o, int64_t C, int64_t c0) {
    for (int64_t a = 0; a < A; ++a)
      for (int64_t j = 0; j < kVecs<T>; ++j)
        v[a][j] = load<T>(g + (atoms[a] * n_out + o) * C + c0 + j * kLanes<T>);
  }
};

// The forward y[n, o] = sum_{k of o} P[s, k] nu_{mono[k]}(n) for A atoms of one species (nu:
// A x M x kBlock; ps: the species' rows, `stride` apart), their sums in registers: each row of
// P is loaded once per group, not once per atom (a species' rows of a block are larger than L1).
template <typename T, int64_t A>
void forward_group(const T* nu, const T* ps, int64_t stride, int64_t M, const Terms& terms,
                   const int64_t* atoms, int64_t C, int64_t c0, T* y) {
  constexpr int64_t nv = kVecs<T>, lanes = kLanes<T>;
  for (int64_t o = 0; o < terms.n_out; ++o) {
    Vec<T> acc[A][nv] = {};
    for (int64_t k = terms.start[o]; k < terms.start[o + 1]; ++k) {
      const int64_t m = terms.mono[k];
      Vec<T> pk[nv];
      for (int64_t j = 0; j < nv; ++j) pk[j] = load<T>(ps + k * stride + j * lanes);
      for (int64_t a = 0; a < A; ++a)
        for (int64_t j = 0; j < nv; ++j)
          acc[a][j] += pk[j] * load<T>(nu + (a * M + m) * kBlock + j * lanes);
    }
    for (int64_t a = 0; a < A; ++a)
      for (int64_t j = 0; j < nv; ++j)
        store<T>(y + (atoms[a] * terms.n_out + o) * C + c0 + j * lanes, acc[a][j]);
  }
}

// The same for a block of any width (the channel tail, L < kBlock), atom by atom.
template <typename T>
void forward_rows(const T* nu, const T* ps, int64_t stride, int64_t M, const Terms& terms,
                  const int64_t* atoms, int64_t count, int64_t C, int64_t c0, int64_t L, T* y) {
  for (int64_t a = 0; a < count; ++a) {
    for (int64_t o = 0; o < terms.n_out; ++o) {
      T acc[kBlock] = {};
      for (int64_t k = terms.start[o]; k < terms.start[o + 1]; ++k) {
        const T* __restrict__ pk = ps + k * stride;
        const T* __restrict__ num = nu + (a * M + terms.mono[k]) * L;
        for (int64_t c = 0; c < L; ++c) acc[c] += pk[c] * num[c];
      }
      T* yo = y + (atoms[a] * terms.n_out + o) * C + c0;
      for (int64_t c = 0; c < L; ++c) yo[c] = acc[c];
    }
  }
}

// The order-0 forward's monomials as products of two rows of a per-atom table of F = d + n_pairs
// + 1 rows: the x rows, the pair products Q, and a row of ones. Term k's monomial is
// table[first[k]] * table[second[k]]: x_a * 1, Q_q * 1 or x_k * Q_q (the value build_nu
// stores, bit for bit). Only the F rows are written per atom, not all M monomials (494 rows
// for 140 in MACE-128's first layer): the forward was bound by those stores.
struct TermFactors {
  int64_t rows;
  std::vector<int64_t> first, second;

  TermFactors(const Monomials& mono, const Terms& terms)
      : rows(mono.d + mono.n_pairs + 1), first(terms.count), second(terms.count) {
    const int64_t d = mono.d, np = mono.n_pairs, one = d + np;
    for (int64_t k = 0; k < terms.count; ++k) {
      const int64_t m = terms.mono[k];
      if (m < d + np) {
        first[k] = m;  // x_a, or Q_q at row d + q
        second[k] = one;
      } else {
        first[k] = mono.cube_k[m - d - np];
        second[k] = d + mono.cube_q[m - d - np];
      }
    }
  }
};

// The factor table (TermFactors) of one atom over a full block: `table` (rows x kBlock).
template <typename T>
void factor_table(const Monomials& mono, const T* x, int64_t stride, T* __restrict__ table) {
  constexpr int64_t nv = kVecs<T>, lanes = kLanes<T>;
  const int64_t d = mono.d, np = mono.n_pairs;
  for (int64_t a = 0; a < d; ++a)
    for (int64_t j = 0; j < nv; ++j)
      store<T>(table + a * kBlock + j * lanes, load<T>(x + a * stride + j * lanes));
  for (int64_t q = 0; q < np; ++q)
    for (int64_t j = 0; j < nv; ++j)
      store<T>(table + (d + q) * kBlock + j * lanes,
               load<T>(x + mono.pair_a[q] * stride + j * lanes) *
                   load<T>(x + mono.pair_b[q] * stride + j * lanes));
  Vec<T> ones;
  for (int64_t l = 0; l < lanes; ++l) ones[l] = T(1);
  for (int64_t j = 0; j < nv; ++j) store<T>(table + (d + np) * kBlock + j * lanes, ones);
}

// The factor tables of a group's atoms (count x rows x kBlock) at channels c0 .. c0 + kBlock.
template <typename T>
void group_factor_tables(const Monomials& mono, const T* x, const int64_t* atoms, int64_t count,
                         int64_t C, int64_t c0, int64_t rows, T* tables) {
  for (int64_t a = 0; a < count; ++a)
    factor_table(mono, x + atoms[a] * mono.d * C + c0, C, tables + a * rows * kBlock);
}

// forward_group at order 0 on the atoms' factor tables (A x factors.rows x kBlock).
template <typename T, int64_t A>
void forward_group_factored(const T* tables, const TermFactors& factors, const T* ps,
                            int64_t stride, const Terms& terms, const int64_t* atoms, int64_t C,
                            int64_t c0, T* y) {
  constexpr int64_t nv = kVecs<T>, lanes = kLanes<T>;
  const int64_t table_size = factors.rows * kBlock;
  for (int64_t o = 0; o < terms.n_out; ++o) {
    Vec<T> acc[A][nv] = {};
    for (int64_t k = terms.start[o]; k < terms.start[o + 1]; ++k) {
      const T* first = tables + factors.first[k] * kBlock;
      const T* second = tables + factors.second[k] * kBlock;
      Vec<T> pk[nv];
      for (int64_t j = 0; j < nv; ++j) pk[j] = load<T>(ps + k * stride + j * lanes);
      for (int64_t a = 0; a < A; ++a)
        for (int64_t j = 0; j < nv; ++j)
          acc[a][j] += pk[j] * (load<T>(first + a * table_size + j * lanes) *
                                load<T>(second + a * table_size + j * lanes));
    }
    for (int64_t a = 0; a < A; ++a)
      for (int64_t j = 0; j < nv; ++j)
        store<T>(y + (atoms[a] * terms.n_out + o) * C + c0 + j * lanes, acc[a][j]);
  }
}

template <typename T>
void forward_impl(const Monomials& mono, const Terms& terms, const T* p, const T* x, const T* v,
                  const int64_t* type, int64_t n, int64_t n_types, int64_t C, T* y) {
  const int64_t M = mono.count(), d = mono.d;
  constexpr int64_t G = kGroup<T>;
  std::vector<int64_t> order;
  const std::vector<SpeciesGroup> groups = species_groups(type, n, n_types, G, order);
  const std::vector<int64_t> counts = atoms_per_species(groups, n_types);
  const TermFactors factors(mono, terms);
  over_channel_blocks(C, [&](int64_t c0, auto width) {
    const int64_t L = width;
    constexpr bool full = std::is_same_v<decltype(width), FullBlock>;
    T* nu = thread_scratch<T, 0>(G * std::max(M, factors.rows) * kBlock);
    T* quad = thread_scratch<T, 1>(mono.n_pairs * kBlock);
    const SpeciesRows<T, const T*> coefficients(p, counts, terms.count, C, c0, L);
    for (const SpeciesGroup& group : groups) {
      const T* ps = coefficients.base[group.species];
      const int64_t stride = coefficients.stride[group.species];
      const int64_t* atoms = order.data() + group.first;
      if (full && !v) {  // order 0: the factor tables (TermFactors)
        group_factor_tables(mono, x, atoms, group.count, C, c0, factors.rows, nu);
        with_group_size<G>(group.count, [&](auto size) {
          forward_group_factored<T, size()>(nu, factors, ps, stride, terms, atoms, C, c0, y);
        });
        continue;
      }
      for (int64_t a = 0; a < group.count; ++a) {
        const int64_t off = atoms[a] * d * C + c0;
        build_nu(mono, x + off, v ? v + off : nullptr, C, width, nu + a * M * L,
                 quad);
      }
      if constexpr (full) {
        with_group_size<G>(group.count, [&](auto size) {
          forward_group<T, size()>(nu, ps, stride, M, terms, atoms, C, c0, y);
        });
      } else {
        forward_rows(nu, ps, stride, M, terms, atoms, group.count, C, c0, L, y);
      }
    }
  });
}

// gP[s, k] += sum_a G[atoms[a], out[k]] nu_{mono[k]}(atoms[a]) for A atoms of species s (gs:
// its rows of gP, `stride` apart): one output's G rows in registers, each gP row read and
// written once per group; the atoms are added in order (the same sums as atom by atom).
template <typename T, int64_t A>
void moment_group(const T* nu, const T* g, const int64_t* atoms, int64_t M, const Terms& terms,
                  int64_t C, int64_t c0, T* gs, int64_t stride) {
  constexpr int64_t nv = kVecs<T>, lanes = kLanes<T>;
  for (int64_t o = 0; o < terms.n_out; ++o) {
    const GroupRows<T, A> go(g, atoms, terms.n_out, o, C, c0);
    for (int64_t k = terms.start[o]; k < terms.start[o + 1]; ++k) {
      const int64_t m = terms.mono[k];
      for (int64_t j = 0; j < nv; ++j) {
        T* row = gs + k * stride + j * lanes;
        Vec<T> acc = load<T>(row);
        for (int64_t a = 0; a < A; ++a)
          acc += go.v[a][j] * load<T>(nu + (a * M + m) * kBlock + j * lanes);
        store<T>(row, acc);
      }
    }
  }
}

// moment_group at order 0 on the atoms' factor tables (A x factors.rows x kBlock, TermFactors).
template <typename T, int64_t A>
void moment_group_factored(const T* tables, const TermFactors& factors, const T* g,
                           const int64_t* atoms, const Terms& terms, int64_t C, int64_t c0,
                           T* gs, int64_t stride) {
  constexpr int64_t nv = kVecs<T>, lanes = kLanes<T>;
  const int64_t table_size = factors.rows * kBlock;
  for (int64_t o = 0; o < terms.n_out; ++o) {
    const GroupRows<T, A> go(g, atoms, terms.n_out, o, C, c0);
    for (int64_t k = terms.start[o]; k < terms.start[o + 1]; ++k) {
      const T* first = tables + factors.first[k] * kBlock;
      const T* second = tables + factors.second[k] * kBlock;
      for (int64_t j = 0; j < nv; ++j) {
        T* row = gs + k * stride + j * lanes;
        Vec<T> acc = load<T>(row);
        for (int64_t a = 0; a < A; ++a)
          acc += go.v[a][j] * (load<T>(first + a * table_size + j * lanes) *
                               load<T>(second + a * table_size + j * lanes));
        store<T>(row, acc);
      }
    }
  }
}

// The same for a block of any width, row by row.
template <typename T>
void moment_rows(const T* nu, const T* g, const int64_t* atoms, int64_t count, int64_t M,
                 const Terms& terms, int64_t C, int64_t c0, int64_t L, T* gs, int64_t stride) {
  for (int64_t k = 0; k < terms.count; ++k) {
    const int64_t o = terms.out[k], m = terms.mono[k];
    T acc[kBlock];
    T* __restrict__ pk = gs + k * stride;
    for (int64_t c = 0; c < L; ++c) acc[c] = pk[c];
    for (int64_t a = 0; a < count; ++a) {
      const T* __restrict__ num = nu + (a * M + m) * L;
      const T* __restrict__ ga = g + (atoms[a] * terms.n_out + o) * C + c0;
      for (int64_t c = 0; c < L; ++c) acc[c] += ga[c] * num[c];
    }
    for (int64_t c = 0; c < L; ++c) pk[c] = acc[c];
  }
}

template <typename T>
void moment_impl(const Monomials& mono, const Terms& terms, const T* g, const T* x, const T* v,
                 const int64_t* type, int64_t n, int64_t n_types, int64_t C, T* gp) {
  const int64_t M = mono.count(), d = mono.d;
  constexpr int64_t G = kGroup<T>;
  std::vector<int64_t> order;
  const std::vector<SpeciesGroup> groups = species_groups(type, n, n_types, G, order);
  const std::vector<int64_t> counts = atoms_per_species(groups, n_types);
  const TermFactors factors(mono, terms);
  over_channel_blocks(C, [&](int64_t c0, auto width) {
    const int64_t L = width;
    constexpr bool full = std::is_same_v<decltype(width), FullBlock>;
    T* nu = thread_scratch<T, 0>(G * std::max(M, factors.rows) * kBlock);
    T* quad = thread_scratch<T, 1>(mono.n_pairs * kBlock);
    const SpeciesRows<T, T*> moments(gp, counts, terms.count, C, c0, L);
    for (const SpeciesGroup& group : groups) {
      const int64_t* atoms = order.data() + group.first;
      T* gs = moments.base[group.species];
      const int64_t stride = moments.stride[group.species];
      if (full && !v) {  // order 0: the factor tables (TermFactors)
        group_factor_tables(mono, x, atoms, group.count, C, c0, factors.rows, nu);
        with_group_size<G>(group.count, [&](auto size) {
          moment_group_factored<T, size()>(nu, factors, g, atoms, terms, C, c0, gs, stride);
        });
        continue;
      }
      for (int64_t a = 0; a < group.count; ++a) {
        const int64_t off = atoms[a] * d * C + c0;
        build_nu(mono, x + off, v ? v + off : nullptr, C, width, nu + a * M * L,
                 quad);
      }
      if constexpr (full) {
        with_group_size<G>(group.count, [&](auto size) {
          moment_group<T, size()>(nu, g, atoms, M, terms, C, c0, gs, stride);
        });
      } else {
        moment_rows(nu, g, atoms, group.count, M, terms, C, c0, L, gs, stride);
      }
    }
    moments.copy_out();
  });
}

// beta[a, m] = sum_{k: mono[k] = m} P[s, k] G[atoms[a], out[k]] for A atoms of species s
// (betas: A x M x kBlock): output by output with its G rows in registers, each row of P loaded
// once per group; a monomial's first term stores its beta rows, further terms (a monomial
// feeding several outputs) add to them, and the monomials of no term are zeroed: each row is
// written once in the common case, with no zero fill of all A x M rows first.
template <typename T, int64_t A, bool Add>
void beta_pass(const T* ps, int64_t stride, const T* g, const int64_t* atoms, int64_t M,
               const Terms& terms, const std::vector<int64_t>& list,
               const std::vector<int64_t>& start, int64_t C, int64_t c0, T* betas) {
  constexpr int64_t nv = kVecs<T>, lanes = kLanes<T>;
  for (int64_t o = 0; o < terms.n_out; ++o) {
    if (start[o] == start[o + 1]) continue;
    const GroupRows<T, A> go(g, atoms, terms.n_out, o, C, c0);
    for (int64_t t = start[o]; t < start[o + 1]; ++t) {
      const int64_t k = list[t], m = terms.mono[k];
      Vec<T> pk[nv];
      for (int64_t j = 0; j < nv; ++j) pk[j] = load<T>(ps + k * stride + j * lanes);
      for (int64_t a = 0; a < A; ++a) {
        for (int64_t j = 0; j < nv; ++j) {
          T* row = betas + (a * M + m) * kBlock + j * lanes;
          if constexpr (Add) {
            store<T>(row, load<T>(row) + pk[j] * go.v[a][j]);
          } else {
            store<T>(row, pk[j] * go.v[a][j]);
          }
        }
      }
    }
  }
}

template <typename T, int64_t A>
void beta_group(const T* ps, int64_t stride, const T* g, const int64_t* atoms, int64_t M,
                const Terms& terms, int64_t C, int64_t c0, T* betas) {
  for (int64_t m : terms.unused)
    for (int64_t a = 0; a < A; ++a)
      std::fill(betas + (a * M + m) * kBlock, betas + (a * M + m + 1) * kBlock, T(0));
  beta_pass<T, A, false>(ps, stride, g, atoms, M, terms, terms.first, terms.first_start, C, c0,
                         betas);
  beta_pass<T, A, true>(ps, stride, g, atoms, M, terms, terms.repeat, terms.repeat_start, C,
                        c0, betas);
}

// The same for a block of any width (the channel tail), atom by atom.
template <typename T>
void beta_rows(const T* ps, int64_t stride, const T* g, const int64_t* atoms, int64_t count,
               int64_t M, const Terms& terms, int64_t C, int64_t c0, int64_t L, T* betas) {
  std::fill(betas, betas + count * M * L, T(0));
  for (int64_t a = 0; a < count; ++a) {
    for (int64_t k = 0; k < terms.count; ++k) {
      const T* __restrict__ pk = ps + k * stride;
      const T* __restrict__ go = g + (atoms[a] * terms.n_out + terms.out[k]) * C + c0;
      T* __restrict__ bm = betas + (a * M + terms.mono[k]) * L;
      for (int64_t c = 0; c < L; ++c) bm[c] += pk[c] * go[c];
    }
  }
}

// The cubes' and the pairs' terms of one atom's gradient (gradient_impl, below) over a full
// block (kBlock channels, kVecs vectors): the sums over a run of cubes of one pair (gamma_q, and
// at order 1 beta's row of the pair) and over a run of pairs of one first factor (g_a) are kept
// in registers and added to their rows once per run. (The cubes come sorted by pair and the
// pairs by first factor, so runs are long; any order is summed right.) A row updated in memory
// at consecutive iterations makes each update wait for the previous one's store: in MACE-128's
// first layer that chain was most of the gradient's time.
template <typename T>
void cube_and_pair_terms_block(const Monomials& mono, T* __restrict__ beta,
                               const T* __restrict__ xi, const T* __restrict__ vi, T* gi,
                               int64_t C, const T* __restrict__ quad,
                               const T* __restrict__ dquad, T* __restrict__ gamma) {
  constexpr int64_t nv = kVecs<T>, lanes = kLanes<T>;
  const int64_t d = mono.d, np = mono.n_pairs;
  std::fill(gamma, gamma + np * kBlock, T(0));
  for (int64_t j = 0; j < mono.n_cubes;) {
    const int64_t q = mono.cube_q[j];
    Vec<T> to_gamma[nv] = {}, to_beta[nv] = {};
    for (; j < mono.n_cubes && mono.cube_q[j] == q; ++j) {
      const int64_t k = mono.cube_k[j];
      const T* bj = beta + (d + np + j) * kBlock;
      const T* xk = xi + k * C;
      T* gk = gi + k * C;
      for (int64_t v = 0; v < nv; ++v) {
        const Vec<T> b = load<T>(bj + v * lanes);
        if (vi) {
          // nu_j = v_k Q_q + x_k dQ_q
          store<T>(gk + v * lanes, load<T>(gk + v * lanes) +
                                       b * load<T>(dquad + q * kBlock + v * lanes));
          to_gamma[v] += b * load<T>(vi + k * C + v * lanes);
          to_beta[v] += b * load<T>(xk + v * lanes);
        } else {
          // nu_j = x_k Q_q
          store<T>(gk + v * lanes, load<T>(gk + v * lanes) +
                                       b * load<T>(quad + q * kBlock + v * lanes));
          to_gamma[v] += b * load<T>(xk + v * lanes);
        }
      }
    }
    for (int64_t v = 0; v < nv; ++v) {
      T* gq = gamma + q * kBlock + v * lanes;
      store<T>(gq, load<T>(gq) + to_gamma[v]);
      if (vi) {
        T* bq = beta + (d + q) * kBlock + v * lanes;
        store<T>(bq, load<T>(bq) + to_beta[v]);
      }
    }
  }
  for (int64_t q = 0; q < np;) {
    const int64_t a = mono.pair_a[q];
    const T* xa = xi + a * C;
    const T* va = vi ? vi + a * C : nullptr;
    Vec<T> to_a[nv] = {};
    for (; q < np && mono.pair_a[q] == a; ++q) {
      const int64_t b = mono.pair_b[q];
      const T* bq = beta + (d + q) * kBlock;
      const T* gq = gamma + q * kBlock;
      T* gb = gi + b * C;  // row a itself for a square: both are additions
      for (int64_t v = 0; v < nv; ++v) {
        const int64_t o = v * lanes;
        if (vi) {
          // gamma * dQ/dx  +  beta_q * d(dQ)/dx, with dQ = v_a x_b + x_a v_b
          to_a[v] += load<T>(gq + o) * load<T>(xi + b * C + o) +
                     load<T>(bq + o) * load<T>(vi + b * C + o);
          store<T>(gb + o, load<T>(gb + o) + load<T>(gq + o) * load<T>(xa + o) +
                               load<T>(bq + o) * load<T>(va + o));
        } else {
          const Vec<T> coefficient = load<T>(bq + o) + load<T>(gq + o);
          to_a[v] += coefficient * load<T>(xi + b * C + o);
          store<T>(gb + o, load<T>(gb + o) + coefficient * load<T>(xa + o));
        }
      }
    }
    T* ga = gi + a * C;
    for (int64_t v = 0; v < nv; ++v) store<T>(ga + v * lanes, load<T>(ga + v * lanes) + to_a[v]);
  }
}

template <typename T>
void gradient_impl(const Monomials& mono, const Terms& terms, const T* p, const T* g, const T* x,
                   const T* v, const int64_t* type, int64_t n, int64_t n_types, int64_t C,
                   T* gx) {
  const int64_t M = mono.count(), d = mono.d, np = mono.n_pairs;
  constexpr int64_t G = kGroup<T>;
  std::vector<int64_t> order;
  const std::vector<SpeciesGroup> groups = species_groups(type, n, n_types, G, order);
  const std::vector<int64_t> counts = atoms_per_species(groups, n_types);
  over_channel_blocks(C, [&](int64_t c0, auto width) {
    const int64_t L = width;
    // beta (M x L) of a group of atoms of one species, then per atom the coefficients of Q
    // (value) and, at order 1, of dQ
    T* betas = thread_scratch<T, 0>(G * M * kBlock);
    T* quad = thread_scratch<T, 1>(np * kBlock);
    T* gamma = thread_scratch<T, 2>(np * kBlock);
    T* dquad = thread_scratch<T, 3>(np * kBlock);
    const SpeciesRows<T, const T*> coefficients(p, counts, terms.count, C, c0, L);
    for (const SpeciesGroup& group : groups) {
      const T* __restrict__ ps = coefficients.base[group.species];
      const int64_t stride = coefficients.stride[group.species];
      const int64_t* atoms = order.data() + group.first;
      if constexpr (std::is_same_v<decltype(width), FullBlock>) {
        with_group_size<G>(group.count, [&](auto size) {
          beta_group<T, size()>(ps, stride, g, atoms, M, terms, C, c0, betas);
        });
      } else {
        beta_rows(ps, stride, g, atoms, group.count, M, terms, C, c0, L, betas);
      }
      for (int64_t member = 0; member < group.count; ++member) {
        const int64_t i = atoms[member];
        T* __restrict__ beta = betas + member * M * L;
        const T* __restrict__ xi = x + i * d * C + c0;
        const T* __restrict__ vi = v ? v + i * d * C + c0 : nullptr;
        T* __restrict__ gi = gx + i * d * C + c0;
        // the linear rows: d x_a / d x_a = 1 at order 0; v_a does not depend on x at order 1
        if (!vi) {
          for (int64_t a = 0; a < d; ++a) {
            T* __restrict__ ga = gi + a * C;
            const T* __restrict__ ba = beta + a * L;
            row_add(ga, ba, width);
          }
        }
        for (int64_t q = 0; q < np; ++q) {
          const T* __restrict__ xa = xi + mono.pair_a[q] * C;
          const T* __restrict__ xb = xi + mono.pair_b[q] * C;
          T* __restrict__ qq = quad + q * L;
          row_mul(qq, xa, xb, width);
          if (vi) {
            const T* __restrict__ va = vi + mono.pair_a[q] * C;
            const T* __restrict__ vb = vi + mono.pair_b[q] * C;
            T* __restrict__ dq = dquad + q * L;
            row_mul2(dq, va, xb, xa, vb, width);
          }
        }
        if constexpr (std::is_same_v<decltype(width), FullBlock>) {
          cube_and_pair_terms_block(mono, beta, xi, vi, gi, C, quad, dquad, gamma);
          continue;
        }
        // gamma: coefficient of Q_q (value); the pair rows of beta stay the coefficient of nu's
        // own pair term (Q at order 0, dQ at order 1), to which the cubes add at order 1
        std::fill(gamma, gamma + np * L, T(0));
        for (int64_t j = 0; j < mono.n_cubes; ++j) {
          const int64_t k = mono.cube_k[j], q = mono.cube_q[j];
          const T* __restrict__ bj = beta + (d + np + j) * L;
          const T* __restrict__ xk = xi + k * C;
          T* __restrict__ gk = gi + k * C;
          T* __restrict__ gq = gamma + q * L;
          if (vi) {
            // nu_j = v_k Q_q + x_k dQ_q
            const T* __restrict__ vk = vi + k * C;
            const T* __restrict__ dq = dquad + q * L;
            T* __restrict__ bq = beta + (d + q) * L;
            // one store stream per loop (vectorises; rows of different arrays)
            row_add_mul(gk, bj, dq, width);
            row_add_mul(gq, bj, vk, width);
            row_add_mul(bq, bj, xk, width);
          } else {
            // nu_j = x_k Q_q
            const T* __restrict__ qq = quad + q * L;
            row_add_mul(gk, bj, qq, width);
            row_add_mul(gq, bj, xk, width);
          }
        }
        for (int64_t q = 0; q < np; ++q) {
          const int64_t a = mono.pair_a[q], b = mono.pair_b[q];
          const T* __restrict__ xa = xi + a * C;
          const T* __restrict__ xb = xi + b * C;
          T* ga = gi + a * C;  // ga == gb for a square (a == b): no __restrict__
          T* gb = gi + b * C;
          const T* __restrict__ bq = beta + (d + q) * L;
          const T* __restrict__ gq = gamma + q * L;
          if (vi) {
            // gamma * dQ/dx  +  beta_q * d(dQ)/dx, with dQ = v_a x_b + x_a v_b
            const T* __restrict__ va = vi + a * C;
            const T* __restrict__ vb = vi + b * C;
            // ga and gb may be one row: two loops, each with one store stream
            row_add_mul2(ga, gq, xb, bq, vb, width);
            row_add_mul2(gb, gq, xa, bq, va, width);
          } else {
            row_add_sum_mul(ga, bq, gq, xb, width);
            row_add_sum_mul(gb, bq, gq, xa, width);
          }
        }
      }
    }
  });
}

Monomials monomials(const torch::Tensor& pairs, const torch::Tensor& cubes, int64_t d) {
  TORCH_CHECK(pairs.dim() == 2 && pairs.size(0) == 2 && cubes.dim() == 2 && cubes.size(0) == 2,
              "pairs and cubes must be (2, n) int64");
  TORCH_CHECK(pairs.is_contiguous() && cubes.is_contiguous(), "pairs and cubes: contiguous");
  TORCH_CHECK(pairs.scalar_type() == torch::kLong && cubes.scalar_type() == torch::kLong,
              "pairs and cubes must be int64");
  const int64_t np = pairs.size(1), nc = cubes.size(1);
  const int64_t* pp = pairs.data_ptr<int64_t>();
  const int64_t* cp = cubes.data_ptr<int64_t>();
  return Monomials{d, np, nc, pp, pp + np, cp, cp + nc};
}

// `terms` (2, K) int64 [output; monomial], outputs sorted, checked against n_out and M.
Terms terms_input(const torch::Tensor& terms, int64_t n_out, int64_t M) {
  TORCH_CHECK(terms.dim() == 2 && terms.size(0) == 2 && terms.is_contiguous() &&
                  terms.scalar_type() == torch::kLong,
              "terms must be a contiguous (2, K) int64 tensor [output; monomial]");
  const int64_t K = terms.size(1);
  const int64_t* data = terms.data_ptr<int64_t>();
  Terms out{K, n_out, data, data + K, std::vector<int64_t>(n_out + 1, 0)};
  out.first_start.assign(n_out + 1, 0);
  out.repeat_start.assign(n_out + 1, 0);
  std::vector<bool> seen(M, false);
  for (int64_t k = 0; k < K; ++k) {
    TORCH_CHECK(out.out[k] >= 0 && out.out[k] < n_out && (k == 0 || out.out[k] >= out.out[k - 1]),
                "terms: output ", out.out[k], " of term ", k, " is not sorted within 0..",
                n_out - 1);
    TORCH_CHECK(out.mono[k] >= 0 && out.mono[k] < M, "terms: monomial ", out.mono[k],
                " of term ", k, " is outside 0..", M - 1);
    ++out.start[out.out[k] + 1];
    const bool repeated = seen[out.mono[k]];
    seen[out.mono[k]] = true;
    (repeated ? out.repeat : out.first).push_back(k);  // both stay sorted by output
    ++(repeated ? out.repeat_start : out.first_start)[out.out[k] + 1];
  }
  for (int64_t o = 0; o < n_out; ++o) {
    out.start[o + 1] += out.start[o];
    out.first_start[o + 1] += out.first_start[o];
    out.repeat_start[o + 1] += out.repeat_start[o];
  }
  for (int64_t m = 0; m < M; ++m)
    if (!seen[m]) out.unused.push_back(m);
  return out;
}

void check_node(const torch::Tensor& t, const torch::Tensor& x, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == x.scalar_type(), name,
              " must be a CPU tensor of x's dtype");
  TORCH_CHECK(t.dim() == 3 && t.size(0) == x.size(0) && t.size(2) == x.size(2), name,
              " must be (n, rows, C) like x");
}

torch::Tensor type_input(const torch::Tensor& type, const torch::Tensor& x, int64_t n_types) {
  TORCH_CHECK(type.device().is_cpu() && type.scalar_type() == torch::kLong && type.dim() == 1 &&
                  type.size(0) == x.size(0),
              "atom_type must be (n,) int64 on the CPU");
  auto out = type.contiguous();
  const int64_t* t = out.data_ptr<int64_t>();
  for (int64_t i = 0; i < out.size(0); ++i) {
    TORCH_CHECK(t[i] >= 0 && t[i] < n_types, "atom_type ", t[i], " of atom ", i,
                " is outside 0..", n_types - 1);
  }
  return out;
}

// P (n_types, K, C) of x's dtype, one row per term.
void check_coefficients(const torch::Tensor& p, const torch::Tensor& x, const Terms& terms) {
  TORCH_CHECK(p.dim() == 3 && p.size(1) == terms.count && p.size(2) == x.size(2) &&
                  p.scalar_type() == x.scalar_type(),
              "P must be (n_types, K, C) of x's dtype, one row per term");
}

}  // namespace

// y[n, o, c] = sum_{k: out[k] = o} P[type[n], k, c] nu_{mono[k]}(x[n, :, c]) (nu = mu(x), or
// mu'(x)[v] if v given), (n, n_out, C).
torch::Tensor sc_forward(torch::Tensor p, torch::Tensor x, c10::optional<torch::Tensor> v,
                         torch::Tensor type, torch::Tensor pairs, torch::Tensor cubes,
                         torch::Tensor terms, int64_t n_out) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3, "x must be (n, d, C) on the CPU");
  x = x.contiguous();
  p = p.contiguous();
  check_node(x, x, "x");
  Monomials mono = monomials(pairs, cubes, x.size(1));
  const Terms table = terms_input(terms, n_out, mono.count());
  check_coefficients(p, x, table);
  torch::Tensor vc;
  if (v) {
    vc = v->contiguous();
    check_node(vc, x, "v");
  }
  type = type_input(type, x, p.size(0));
  auto y = torch::empty({x.size(0), n_out, x.size(2)}, x.options());  // all written
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sc_forward", [&] {
    forward_impl<scalar_t>(mono, table, p.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                           v ? vc.data_ptr<scalar_t>() : nullptr, type.data_ptr<int64_t>(),
                           x.size(0), p.size(0), x.size(2), y.data_ptr<scalar_t>());
  });
  return y;
}

// gP[s, k, c] = sum_{n: type[n] = s} G[n, out[k], c] nu_{mono[k]}(x[n, :, c]), (n_types, K, C).
torch::Tensor sc_moment(torch::Tensor g, torch::Tensor x, c10::optional<torch::Tensor> v,
                        torch::Tensor type, torch::Tensor pairs, torch::Tensor cubes,
                        torch::Tensor terms, int64_t n_types) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3, "x must be (n, d, C) on the CPU");
  x = x.contiguous();
  g = g.contiguous();
  check_node(g, x, "G");
  Monomials mono = monomials(pairs, cubes, x.size(1));
  const Terms table = terms_input(terms, g.size(1), mono.count());
  torch::Tensor vc;
  if (v) {
    vc = v->contiguous();
    check_node(vc, x, "v");
  }
  type = type_input(type, x, n_types);
  auto gp = torch::empty({n_types, table.count, x.size(2)}, x.options());  // all written
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sc_moment", [&] {
    moment_impl<scalar_t>(mono, table, g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                          v ? vc.data_ptr<scalar_t>() : nullptr, type.data_ptr<int64_t>(),
                          x.size(0), n_types, x.size(2), gp.data_ptr<scalar_t>());
  });
  return gp;
}

// gx[n, a, c] = sum_k P[type[n], k, c] G[n, out[k], c] d nu_{mono[k]} / d x[n, a, c].
torch::Tensor sc_gradient(torch::Tensor p, torch::Tensor g, torch::Tensor x,
                          c10::optional<torch::Tensor> v, torch::Tensor type,
                          torch::Tensor pairs, torch::Tensor cubes, torch::Tensor terms) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3, "x must be (n, d, C) on the CPU");
  x = x.contiguous();
  g = g.contiguous();
  p = p.contiguous();
  check_node(g, x, "G");
  Monomials mono = monomials(pairs, cubes, x.size(1));
  const Terms table = terms_input(terms, g.size(1), mono.count());
  check_coefficients(p, x, table);
  torch::Tensor vc;
  if (v) {
    vc = v->contiguous();
    check_node(vc, x, "v");
  }
  type = type_input(type, x, p.size(0));
  auto gx = torch::zeros_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "sc_gradient", [&] {
    gradient_impl<scalar_t>(mono, table, p.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(),
                            x.data_ptr<scalar_t>(), v ? vc.data_ptr<scalar_t>() : nullptr,
                            type.data_ptr<int64_t>(), x.size(0), p.size(0), x.size(2),
                            gx.data_ptr<scalar_t>());
  });
  return gx;
}
