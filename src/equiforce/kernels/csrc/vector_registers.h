// 512-bit vectors for sums kept in registers (GCC/Clang vector extensions; on CPUs without
// AVX-512 the compiler splits them into narrower instructions).
//
// A plain array accumulator of a compile-time width is often fully unrolled before GCC's
// vectoriser sees it and then stays in memory; these types keep it in registers.
#pragma once

#include <cstdint>

namespace equiforce_vec {

template <typename T>
using Vec __attribute__((vector_size(64))) = T;

// Lanes of one vector.
template <typename T>
constexpr int64_t kLanes = 64 / sizeof(T);

// Unaligned load and store of one vector.
template <typename T>
inline Vec<T> load(const T* p) {
  Vec<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline void store(T* p, Vec<T> v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// The sum of a vector's lanes, halving the width at each step in registers (a tree of
// log2(lanes) dependent adds; a lane-by-lane loop or a round trip through memory is slower).
template <typename T>
inline T sum_lanes(Vec<T> v) {
  if constexpr (sizeof(T) == 4) {
    const auto half = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                      __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    const auto quarter = __builtin_shufflevector(half, half, 0, 1, 2, 3) +
                         __builtin_shufflevector(half, half, 4, 5, 6, 7);
    const auto pair = __builtin_shufflevector(quarter, quarter, 0, 1) +
                      __builtin_shufflevector(quarter, quarter, 2, 3);
    return pair[0] + pair[1];
  } else {
    static_assert(sizeof(T) == 8, "float32 or float64 lanes");
    const auto half = __builtin_shufflevector(v, v, 0, 1, 2, 3) +
                      __builtin_shufflevector(v, v, 4, 5, 6, 7);
    const auto pair = __builtin_shufflevector(half, half, 0, 1) +
                      __builtin_shufflevector(half, half, 2, 3);
    return pair[0] + pair[1];
  }
}

}  // namespace equiforce_vec
