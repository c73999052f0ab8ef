// nanobind module mmrec_ops._C: one binding per op (bindings/<op>.cpp), tensors as DLPack arrays (zero-copy),
// CUDA streams as integers.
#include "bindings/common.h"

NB_MODULE(_C, m) {
  m.doc() = "mmrec kernels: torch-free CPU (OpenMP, SIMD) and CUDA implementations";
  m.attr("has_cuda") = mmrec::cuda::kBuilt;
  mmrec::bind::bind_scan(m);
  mmrec::bind::bind_recurrence(m);
  mmrec::bind::bind_mdi(m);
  mmrec::bind::bind_memory_update(m);
  mmrec::bind::bind_memory_read(m);
  mmrec::bind::bind_decode_step(m);
}
