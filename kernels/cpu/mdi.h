#pragma once
#include <cstdint>
#include "common/dtypes.h"

namespace mmrec::cpu {

// v: [B, T, D]; mod: [B, T, N]; base: [N, D]; m0: [B, N, D] or nullptr (zeros); m: [B, T, N, D].
// All contiguous; 0 < eps < 0.5.
template <class T>
void mdi_fwd(const T* v, const T* mod, const T* base, const T* m0, T* m, int64_t B, int64_t T_, int64_t N,
             int64_t D, double eps);

// grad, m: [B, T, N, D]; dv: [B, T, D]; dmod: [B, T, N]; dbase: [N, D]; dm0: [B, N, D] (always written).
template <class T>
void mdi_bwd(const T* grad, const T* v, const T* mod, const T* base, const T* m0, const T* m, T* dv, T* dmod,
             T* dbase, T* dm0, int64_t B, int64_t T_, int64_t N, int64_t D, double eps);

}  // namespace mmrec::cpu
