// Device limits, scratch memory and error text for the host side (bindings are compiled without nvcc).
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>

#include "cuda/check.cuh"
#include "cuda/runtime.h"

namespace mmrec::cuda {

const char* error_string(int code) {
  if (code == kUnsupported) return "shape not supported by the CUDA kernels (see kernels/cuda/runtime.h)";
  return cudaGetErrorString(cudaError_t(code));
}

namespace {
constexpr int kMaxDevices = 64;
std::once_flag g_once[kMaxDevices];
DeviceLimits g_limits[kMaxDevices];
int g_status[kMaxDevices];

void init_device(int dev) {
  DeviceLimits lim;
  cudaError_t e = cudaDeviceGetAttribute(&lim.sm_count, cudaDevAttrMultiProcessorCount, dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&lim.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (e == cudaSuccess) {
    // Keep freed scratch in the pool: returning it to the OS at every sync costs more than the kernels.
    cudaMemPool_t pool;
    e = cudaDeviceGetDefaultMemPool(&pool, dev);
    if (e == cudaSuccess) {
      uint64_t keep = UINT64_MAX;
      e = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
    }
  }
  g_limits[dev] = lim;
  g_status[dev] = int(e);
}
}  // namespace

int device_limits(DeviceLimits* out) {
  int dev = 0;
  MMREC_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || dev >= kMaxDevices) return int(cudaErrorInvalidDevice);
  std::call_once(g_once[dev], init_device, dev);
  *out = g_limits[dev];
  return g_status[dev];
}

int Scratch::reserve(size_t bytes) {
  DeviceLimits lim;
  if (int err = device_limits(&lim)) return err;  // configures the pool once per device
  if (bytes == 0) return 0;
  return int(cudaMallocAsync(&ptr_, round(bytes), stream_));
}

}  // namespace mmrec::cuda
