// scan: h_t = a_t * h_{t-1} + b_t (h_{-1} = h0); reverse runs t = T-1 .. 0 from h_T = h0.
// backward: delta_t = G_t + a_{t+1} * delta_{t+1}; da_t = delta_t * h_{t-1}; db_t = delta_t; dh0 = a_0 * delta_0.
// One thread per channel (b, d), coalesced across d, sequential over t.
#include "cuda/check.cuh"
#include "cuda/runtime.h"

namespace mmrec::cuda {
namespace {

template <class T>
__global__ void scan_fwd_kernel(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ h0,
                                T* __restrict__ h, int64_t B, int64_t T_, int64_t D, bool reverse) {
  using A = acc_t<T>;
  const int64_t ch = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ch >= B * D) return;
  const int64_t bi = ch / D, d = ch % D;
  A state = h0 ? A(load(h0 + ch)) : A(0);
  for (int64_t step = 0; step < T_; ++step) {
    const int64_t off = (bi * T_ + (reverse ? T_ - 1 - step : step)) * D + d;
    state = A(load(a + off)) * state + A(load(b + off));
    store(h + off, state);
  }
}

template <class T>
__global__ void scan_bwd_kernel(const T* __restrict__ a, const T* __restrict__ h, const T* __restrict__ h0,
                                const T* __restrict__ g, T* __restrict__ da, T* __restrict__ db,
                                T* __restrict__ dh0, int64_t B, int64_t T_, int64_t D, bool reverse) {
  using A = acc_t<T>;
  const int64_t ch = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (ch >= B * D) return;
  const int64_t bi = ch / D, d = ch % D;
  const int64_t row = bi * T_ * D + d;
  A delta = 0, a_next = 0;
  for (int64_t step = 0; step < T_; ++step) {
    const int64_t t = reverse ? step : T_ - 1 - step;
    const int64_t off = row + t * D;
    delta = A(load(g + off)) + a_next * delta;
    const bool first = reverse ? t == T_ - 1 : t == 0;
    const A h_prev = first ? (h0 ? A(load(h0 + ch)) : A(0)) : A(load(h + off + (reverse ? D : -D)));
    store(db + off, delta);
    store(da + off, delta * h_prev);
    a_next = A(load(a + off));
  }
  store(dh0 + ch, a_next * delta);
}

}  // namespace

int scan_fwd(DType dt, const void* a, const void* b, const void* h0, void* h, int64_t B, int64_t T_, int64_t D,
             bool reverse, void* stream) {
  return dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    constexpr int threads = 256;
    scan_fwd_kernel<T><<<blocks_for(B * D, threads), threads, 0, cudaStream_t(stream)>>>(
        static_cast<const T*>(a), static_cast<const T*>(b), static_cast<const T*>(h0), static_cast<T*>(h), B, T_, D,
        reverse);
    return last_launch_error();
  });
}

int scan_bwd(DType dt, const void* a, const void* h, const void* h0, const void* grad, void* da, void* db, void* dh0,
             int64_t B, int64_t T_, int64_t D, bool reverse, void* stream) {
  return dispatch(dt, [&](auto tag) {
    using T = decltype(tag);
    constexpr int threads = 256;
    scan_bwd_kernel<T><<<blocks_for(B * D, threads), threads, 0, cudaStream_t(stream)>>>(
        static_cast<const T*>(a), static_cast<const T*>(h), static_cast<const T*>(h0), static_cast<const T*>(grad),
        static_cast<T*>(da), static_cast<T*>(db), static_cast<T*>(dh0), B, T_, D, reverse);
    return last_launch_error();
  });
}

}  // namespace mmrec::cuda
