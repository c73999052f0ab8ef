// Host-side entry points of the CUDA kernels, callable from code compiled without nvcc.
// Every function returns 0 or a cudaError_t code; error_string() turns it into text.
#pragma once
#include <cstdint>

#include "common/dtypes.h"

namespace mmrec::cuda {

#ifdef MMREC_WITH_CUDA
constexpr bool kBuilt = true;
#else
constexpr bool kBuilt = false;  // kernels/bindings/cuda_stubs.cpp answers every call with kNotBuilt
#endif
constexpr int kNotBuilt = -1;

int device_count();
const char* error_string(int code);

// scan: see kernels/cuda/scan.cu. Pointers are device pointers; stream is a cudaStream_t.
int scan_fwd(DType dt, const void* a, const void* b, const void* h0, void* h, int64_t B, int64_t T, int64_t D,
             bool reverse, void* stream);
int scan_bwd(DType dt, const void* a, const void* h, const void* h0, const void* grad, void* da, void* db, void* dh0,
             int64_t B, int64_t T, int64_t D, bool reverse, void* stream);

}  // namespace mmrec::cuda
