// Launch helpers shared by the CUDA kernels: storage <-> accumulation conversion, error checks,
// device limits and stream-ordered scratch memory.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/dtypes.h"
#include "cuda/runtime.h"

namespace mmrec::cuda {

template <class T> struct acc_of { using type = float; };
template <> struct acc_of<double> { using type = double; };
template <class T> using acc_t = typename acc_of<T>::type;

__device__ __forceinline__ float load(const float* p) { return *p; }
__device__ __forceinline__ double load(const double* p) { return *p; }
__device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }

__device__ __forceinline__ void store(float* p, float x) { *p = x; }
__device__ __forceinline__ void store(double* p, double x) { *p = x; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }
__device__ __forceinline__ void store(__half* p, float x) { *p = __float2half_rn(x); }

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }

// float -> 16/32-bit storage type (vector paths; float64 never takes them).
template <class T> __device__ __forceinline__ T cvt(float x);
template <> __device__ __forceinline__ float cvt<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 cvt<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half cvt<__half>(float x) { return __float2half_rn(x); }

// Two adjacent 16-bit elements (4-byte aligned) <- float2.
__device__ __forceinline__ void store2(__nv_bfloat16* p, float2 x) {
  *reinterpret_cast<__nv_bfloat162*>(p) = __float22bfloat162_rn(x);
}
__device__ __forceinline__ void store2(__half* p, float2 x) { *reinterpret_cast<__half2*>(p) = __float22half2_rn(x); }

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

template <class A> __device__ __forceinline__ A warp_sum(A x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}
template <class A> __device__ __forceinline__ A warp_max(A x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x = max(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}

// Sums NB values (NB a power of 2, <= 32) over the 32 lanes at once: NB - 1 + 5 - log2(NB) shuffles instead of
// 5 NB. Returns, in lane l, the warp total of value multi_index<NB>(l); the lanes with multi_writer<NB>(l) hold
// each total once. The addition order is fixed: deterministic.
template <class A, int NB>
__device__ __forceinline__ A warp_sum_multi(A (&x)[NB], int lane) {
  int off = 16;
#pragma unroll
  for (int k = NB; k > 1; k /= 2, off /= 2) {
    const bool hi = lane & off;
#pragma unroll
    for (int i = 0; i < k / 2; ++i) {
      const A send = hi ? x[i] : x[i + k / 2];
      const A keep = hi ? x[i + k / 2] : x[i];
      x[i] = keep + __shfl_xor_sync(0xffffffffu, send, off);
    }
  }
  A s = x[0];
  for (; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
  return s;
}

template <int NB>
__device__ __forceinline__ int multi_index(int lane) {
  int n = 0, off = 16;
#pragma unroll
  for (int k = NB; k > 1; k /= 2, off /= 2) n = n * 2 + ((lane & off) ? 1 : 0);
  return n;
}

template <int NB>
__device__ __forceinline__ bool multi_writer(int lane) {
  int mask = 0, off = 16;
#pragma unroll
  for (int k = NB; k > 1; k /= 2, off /= 2) mask |= off;
  return (lane & ~mask & 31) == 0;
}

// Calls f(T{}) with the CUDA storage type of dt.
template <class F>
int dispatch(DType dt, F&& f) {
  switch (dt) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::bf16: return f(__nv_bfloat16{});
    case DType::f16: return f(__half{});
  }
  return int(cudaErrorInvalidValue);
}

// The frame of a host entry point (cuda/runtime.h): kUnsupported unless the sizes `fit` the kernels, else
// f(T{}, stream) for the CUDA storage type T of dt.
template <class F>
int run_entry(bool fit, DType dt, void* stream, F&& f) {
  if (!fit) return kUnsupported;
  const cudaStream_t st = cudaStream_t(stream);
  return dispatch(dt, [&](auto tag) -> int { return f(tag, st); });
}

// Returns from the enclosing int-returning function on any CUDA error.
#define MMREC_CHECK(expr)                        \
  do {                                           \
    const cudaError_t mmrec_err_ = (expr);       \
    if (mmrec_err_ != cudaSuccess) return int(mmrec_err_); \
  } while (0)
// After a <<<...>>> launch: configuration errors and asynchronous faults seen so far.
#define MMREC_CHECK_LAUNCH() MMREC_CHECK(cudaGetLastError())

inline int last_launch_error() { return int(cudaGetLastError()); }

inline unsigned blocks_for(int64_t n, int threads) { return unsigned((n + threads - 1) / threads); }

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Per-device limits, read once: multiprocessor count and the opt-in shared memory per block.
struct DeviceLimits {
  int sm_count = 0;
  int smem_optin = 0;
};
int device_limits(DeviceLimits* out);

// Stream-ordered scratch memory (cudaMallocAsync from the device's default pool, kept cached);
// freed on the same stream when the owner goes out of scope, after the kernels queued before it.
class Scratch {
 public:
  explicit Scratch(cudaStream_t s) : stream_(s) {}
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    if (ptr_) cudaFreeAsync(ptr_, stream_);
  }
  // Reserves `bytes` (rounded up to 256) and returns 0 or an error; pointers from take() follow.
  int reserve(size_t bytes);
  template <class X>
  X* take(size_t count) {
    const size_t bytes = (count * sizeof(X) + 255) & ~size_t(255);
    X* p = reinterpret_cast<X*>(static_cast<char*>(ptr_) + used_);
    used_ += bytes;
    return p;
  }
  static size_t round(size_t bytes) { return (bytes + 255) & ~size_t(255); }

 private:
  cudaStream_t stream_;
  void* ptr_ = nullptr;
  size_t used_ = 0;
};

}  // namespace mmrec::cuda
