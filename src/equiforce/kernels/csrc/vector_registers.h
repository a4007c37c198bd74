// Vectors of the target's register width for sums kept in registers (GCC/Clang vector
// extensions): 64 bytes with AVX-512, 32 bytes otherwise (AVX2). Wider generic vectors than
// the target's registers were lowered badly: compiled for x86-64-v3, 64-byte vectors had their
// scalar factors broadcast through the stack (a 4-byte store reloaded as 16 bytes, a
// store-forwarding stall each) and node_out ran 6.7x slower than for AVX-512.
//
// A plain array accumulator of a compile-time width is often fully unrolled before GCC's
// vectoriser sees it and then stays in memory; these types keep it in registers.
#pragma once

#include <cstdint>

namespace equiforce_vec {

// Whether the target has AVX-512's 32 vector registers of 64 bytes (otherwise AVX2's 16 of 32).
#ifdef __AVX512F__
constexpr bool kWideRegisterFile = true;
#else
constexpr bool kWideRegisterFile = false;
#endif

constexpr int64_t kVectorBytes = kWideRegisterFile ? 64 : 32;

template <typename T>
using Vec __attribute__((vector_size(kVectorBytes))) = T;

// Lanes of one vector.
template <typename T>
constexpr int64_t kLanes = kVectorBytes / sizeof(T);

// Channels of a row whose running sums stay in registers: 128 with AVX-512 (8 of its 32
// registers in float32, 16 in float64), otherwise 8 of AVX2's 16 registers (64 float32 or 32
// float64 channels).
template <typename T>
constexpr int64_t kRowChannels = kWideRegisterFile ? 128 : 256 / static_cast<int64_t>(sizeof(T));

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
template <typename V>
inline auto sum_4_lanes(V v) {
  const auto pair = __builtin_shufflevector(v, v, 0, 1) + __builtin_shufflevector(v, v, 2, 3);
  return pair[0] + pair[1];
}

template <typename V>
inline auto sum_8_lanes(V v) {
  return sum_4_lanes(__builtin_shufflevector(v, v, 0, 1, 2, 3) +
                     __builtin_shufflevector(v, v, 4, 5, 6, 7));
}

template <typename V>
inline auto sum_16_lanes(V v) {
  return sum_8_lanes(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                     __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15));
}

template <typename T>
inline T sum_lanes(Vec<T> v) {
  if constexpr (kLanes<T> == 16) {
    return sum_16_lanes(v);
  } else if constexpr (kLanes<T> == 8) {
    return sum_8_lanes(v);
  } else {
    static_assert(kLanes<T> == 4, "float32 or float64 lanes of 32 or 64 bytes");
    return sum_4_lanes(v);
  }
}

}  // namespace equiforce_vec
