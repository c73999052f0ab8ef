// Host-side entry points of the CUDA kernels, callable from code compiled without nvcc (defined only in a build
// with MMREC_WITH_CUDA). Every function returns 0, a cudaError_t code or kUnsupported; error_string() turns it
// into text. Pointers are device pointers of contiguous tensors of storage type `dt`; optional inputs may
// be nullptr (zeros); stream is a cudaStream_t on the current device. Work is queued on `stream` only.
#pragma once
#include <cstdint>

#include "common/dtypes.h"

namespace mmrec::cuda {

#ifdef MMREC_WITH_CUDA
constexpr bool kBuilt = true;
#else
constexpr bool kBuilt = false;
#endif
constexpr int kUnsupported = -2;  // a shape beyond a kernel's limits (recurrence: head size d > 1024)

const char* error_string(int code);

// scan (kernels/cuda/scan.cu): a, b, h, grad, da, db: [B, T, D]; h0, dh0: [B, D].
int scan_fwd(DType dt, const void* a, const void* b, const void* h0, void* h, int64_t B, int64_t T, int64_t D,
             bool reverse, void* stream);
int scan_bwd(DType dt, const void* grad, const void* a, const void* h, const void* h0, void* da, void* db, void* dh0,
             int64_t B, int64_t T, int64_t D, bool reverse, void* stream);

// recurrence (kernels/cuda/recurrence.cu): z, gamma, h, grad, dz, dgamma: [B, T, H*d]; w, dw: [H, d, d];
// bias, dbias: [H*d]; h0, dh0: [B, H*d]. d <= 1024.
int recurrence_fwd(DType dt, const void* z, const void* gamma, const void* w, const void* bias, const void* h0,
                   void* h, int64_t B, int64_t T, int64_t H, int64_t d, void* stream);
int recurrence_bwd(DType dt, const void* grad, const void* z, const void* gamma, const void* w, const void* bias,
                   const void* h0, const void* h, void* dz, void* dgamma, void* dw, void* dbias, void* dh0, int64_t B,
                   int64_t T, int64_t H, int64_t d, void* stream);

// mdi (kernels/cuda/mdi.cu): v, dv: [B, T, D]; mod, dmod: [B, T, N]; base, dbase: [N, D];
// m0, dm0: [B, N, D]; m, grad: [B, T, N, D].
int mdi_fwd(DType dt, const void* v, const void* mod, const void* base, const void* m0, void* m, int64_t B, int64_t T,
            int64_t N, int64_t D, double eps, void* stream);
int mdi_bwd(DType dt, const void* grad, const void* v, const void* mod, const void* base, const void* m0,
            const void* m, void* dv, void* dmod, void* dbase, void* dm0, int64_t B, int64_t T, int64_t N, int64_t D,
            double eps, void* stream);

// memory_update (kernels/cuda/memory_update.cu): M0, dM0: [B, S, D]; key, value, dkey, dvalue: [B, NC, D];
// strength, dstrength: [B, NC]; Ms, grad: [B, NC + 1, S, D].
int memory_update_fwd(DType dt, const void* M0, const void* key, const void* value, const void* strength, void* Ms,
                      int64_t B, int64_t NC, int64_t S, int64_t D, void* stream);
int memory_update_bwd(DType dt, const void* grad, const void* M0, const void* key, const void* value,
                      const void* strength, const void* Ms, void* dM0, void* dkey, void* dvalue, void* dstrength,
                      int64_t B, int64_t NC, int64_t S, int64_t D, void* stream);

}  // namespace mmrec::cuda
