// Element types shared by the CPU and CUDA kernels: storage type -> accumulation type,
// and bfloat16 conversion on the CPU (no libtorch, no compiler extensions).
#pragma once
#include <cstdint>
#include <cstring>

namespace mmrec {

enum class DType : int { f32 = 0, f64 = 1, bf16 = 2, f16 = 3 };

// bfloat16 stored as its raw 16 bits; arithmetic happens in float.
struct bf16_t {
  uint16_t bits;
};

inline float to_float(float x) { return x; }
inline double to_float(double x) { return x; }
inline float to_float(bf16_t x) {
  uint32_t u = uint32_t(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <class T> struct acc_of { using type = float; };
template <> struct acc_of<double> { using type = double; };
template <class T> using acc_t = typename acc_of<T>::type;

template <class T> inline T from_acc(acc_t<T> x) { return T(x); }
// Round to nearest even; NaN stays NaN (quiet bit forced).
template <> inline bf16_t from_acc<bf16_t>(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{uint16_t((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{uint16_t(u >> 16)};
}

}  // namespace mmrec
