// Scalar helpers the CPU kernels share (accumulation type A: float or double).
#pragma once
#include <cmath>

#include "cpu/parallel.h"

namespace mmrec::cpu {

// 1 / (1 + e^-x) without overflow for large |x|.
template <class A>
MMREC_INLINE A sigmoid(A x) {
  if (x >= A(0)) return A(1) / (A(1) + std::exp(-x));
  A e = std::exp(x);
  return e / (A(1) + e);
}

// torch.clamp: NaN passes through.
template <class A>
MMREC_INLINE A clamp(A x, A lo, A hi) {
  x = x < lo ? lo : x;
  return x > hi ? hi : x;
}

}  // namespace mmrec::cpu
