// Host entry points of the CUDA memory_read kernels (kernels/cuda/memory_read.cu), in the style of runtime.h:
// 0 or a cudaError_t code (kNotBuilt without nvcc, kUnsupported when dh > 1024 or the per-block shared memory
// (6 N + S) * roundup32(dh) accumulators exceeds 48 KB). Pointers are device pointers of contiguous tensors.
#pragma once
#include <cstdint>

#include "common/dtypes.h"

namespace mmrec::cuda {

// q, h, v, r, grad_r, dq, dh, dv: [B, T, D]; mod, dmod: [B, T, N]; base, dbase: [N, D]; Ms, dMs: [B, L, S, D];
// m0 (nullptr = zeros), m_last, grad_m, dm0: [B, N, D]; H read heads; token t reads chunk (k0 + t) / C.
int memory_read_fwd(DType dt, const void* q, const void* h, const void* v, const void* mod, const void* base,
                    const void* Ms, const void* m0, void* r, void* m_last, int64_t B, int64_t T, int64_t N, int64_t D,
                    int64_t L, int64_t S, int64_t H, int64_t k0, int64_t C, double eps, double norm_eps, void* stream);
int memory_read_bwd(DType dt, const void* grad_r, const void* grad_m, const void* q, const void* h, const void* v,
                    const void* mod, const void* base, const void* Ms, const void* m0, void* dq, void* dh, void* dv,
                    void* dmod, void* dbase, void* dMs, void* dm0, int64_t B, int64_t T, int64_t N, int64_t D,
                    int64_t L, int64_t S, int64_t H, int64_t k0, int64_t C, double eps, double norm_eps, void* stream);

}  // namespace mmrec::cuda
