#pragma once
#include <cstdint>
#include "common/dtypes.h"

namespace mmrec::cpu {

// a, b, h: [B, T, D] contiguous; h0: [B, D] or nullptr (zeros).
template <class T>
void scan_fwd(const T* a, const T* b, const T* h0, T* h, int64_t B, int64_t T_, int64_t D, bool reverse);

// grad, da, db: [B, T, D]; dh0: [B, D] (always written).
template <class T>
void scan_bwd(const T* grad, const T* a, const T* h, const T* h0, T* da, T* db, T* dh0, int64_t B, int64_t T_,
              int64_t D, bool reverse);

}  // namespace mmrec::cpu
