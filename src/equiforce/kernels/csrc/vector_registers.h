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

}  // namespace equiforce_vec
