// Without nvcc the CUDA entry points exist but refuse: the module imports and runs on CPU.
#ifndef MMREC_WITH_CUDA
#include "cuda/runtime.h"

namespace mmrec::cuda {

int device_count() { return 0; }
const char* error_string(int) {
  return "mmrec_ops._C was built without CUDA kernels (MMREC_CUDA=OFF or no nvcc at build time)";
}
int scan_fwd(DType, const void*, const void*, const void*, void*, int64_t, int64_t, int64_t, bool, void*) {
  return kNotBuilt;
}
int scan_bwd(DType, const void*, const void*, const void*, const void*, void*, void*, void*, int64_t, int64_t, int64_t,
             bool, void*) {
  return kNotBuilt;
}
int recurrence_fwd(DType, const void*, const void*, const void*, const void*, const void*, void*, int64_t, int64_t,
                   int64_t, int64_t, void*) {
  return kNotBuilt;
}
int recurrence_bwd(DType, const void*, const void*, const void*, const void*, const void*, const void*, const void*,
                   void*, void*, void*, void*, void*, int64_t, int64_t, int64_t, int64_t, void*) {
  return kNotBuilt;
}
int mdi_fwd(DType, const void*, const void*, const void*, const void*, void*, int64_t, int64_t, int64_t, int64_t,
            double, void*) {
  return kNotBuilt;
}
int mdi_bwd(DType, const void*, const void*, const void*, const void*, const void*, const void*, void*, void*, void*,
            void*, int64_t, int64_t, int64_t, int64_t, double, void*) {
  return kNotBuilt;
}
int memory_update_fwd(DType, const void*, const void*, const void*, const void*, void*, int64_t, int64_t, int64_t,
                      int64_t, void*) {
  return kNotBuilt;
}
int memory_update_bwd(DType, const void*, const void*, const void*, const void*, const void*, const void*, void*,
                      void*, void*, void*, int64_t, int64_t, int64_t, int64_t, void*) {
  return kNotBuilt;
}

}  // namespace mmrec::cuda
#endif
