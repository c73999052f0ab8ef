// Device queries and error text for the host side (bindings are compiled without nvcc).
#include <cuda_runtime.h>

#include "cuda/runtime.h"

namespace mmrec::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

const char* error_string(int code) {
  if (code == kNotBuilt) return "mmrec_ops._C was built without CUDA kernels";
  return cudaGetErrorString(cudaError_t(code));
}

}  // namespace mmrec::cuda
