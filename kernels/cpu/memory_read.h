#pragma once
#include <cstdint>
#include "common/dtypes.h"

namespace mmrec::cpu {

// Sizes of one memory_read call (SPEC.md, op 5): H read heads of dh = D / H channels, L = ceil((k0 + T) / C)
// slot states, token t reads chunk (k0 + t) / C.
struct ReadDims {
  int64_t B, T, N, D, L, S, H, k0, C;
};

// q, h, v, r: [B, T, D]; mod: [B, T, N]; base: [N, D]; Ms: [B, L, S, D]; m0 (nullptr = zeros), m_last: [B, N, D].
// All contiguous.
template <class T>
void memory_read_fwd(const T* q, const T* h, const T* v, const T* mod, const T* base, const T* Ms, const T* m0,
                     T* r, T* m_last, const ReadDims& dims, double eps, double norm_eps);

// grad_r, dq, dh, dv: [B, T, D]; grad_m, dm0: [B, N, D]; dmod: [B, T, N]; dbase: [N, D]; dMs: [B, L, S, D].
// Every output is written (dm0 also when m0 is nullptr).
template <class T>
void memory_read_bwd(const T* grad_r, const T* grad_m, const T* q, const T* h, const T* v, const T* mod,
                     const T* base, const T* Ms, const T* m0, T* dq, T* dh, T* dv, T* dmod, T* dbase, T* dMs, T* dm0,
                     const ReadDims& dims, double eps, double norm_eps);

}  // namespace mmrec::cpu
