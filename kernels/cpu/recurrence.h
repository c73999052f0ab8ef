#pragma once
#include <cstdint>
#include "common/dtypes.h"

namespace mmrec::cpu {

// z, gamma, h: [B, T, D] contiguous with D = H * d; w: [H, d, d]; bias: [D] or nullptr (zeros);
// h0: [B, D] or nullptr (zeros).
template <class T>
void recurrence_fwd(const T* z, const T* gamma, const T* w, const T* bias, const T* h0, T* h, int64_t B, int64_t T_,
                    int64_t H, int64_t d);

// grad, dz, dgamma: [B, T, D]; dw: [H, d, d]; dbias: [D]; dh0: [B, D] (all always written).
template <class T>
void recurrence_bwd(const T* grad, const T* z, const T* gamma, const T* w, const T* bias, const T* h0, const T* h,
                    T* dz, T* dgamma, T* dw, T* dbias, T* dh0, int64_t B, int64_t T_, int64_t H, int64_t d);

}  // namespace mmrec::cpu
