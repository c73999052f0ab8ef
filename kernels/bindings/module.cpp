// nanobind module mmrec_ops._C: tensors arrive as DLPack arrays (zero-copy), CUDA streams as integers.
#include <omp.h>

#include "bindings/common.h"

namespace nb = nanobind;

NB_MODULE(_C, m) {
  m.doc() = "mmrec kernels: torch-free CPU (OpenMP, SIMD) and CUDA implementations";
  m.attr("has_cuda") = mmrec::cuda::kBuilt;
  m.def("cuda_device_count", &mmrec::cuda::device_count);
  m.def("omp_max_threads", []() { return omp_get_max_threads(); });
  mmrec::bind::bind_scan(m);
  mmrec::bind::bind_cuda_ops(m);
  mmrec::bind::bind_recurrence(m);
  mmrec::bind::bind_mdi(m);
  mmrec::bind::bind_memory_update(m);
  mmrec::bind::bind_memory_read(m);
}
