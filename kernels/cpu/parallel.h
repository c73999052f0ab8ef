// OpenMP shim and ISA dispatch for the CPU kernels.
// MMREC_ISA_DISPATCH compiles a function three times (AVX-512, AVX2+FMA, baseline x86-64)
// and picks one at load time (ifunc); always-inline templates inherit the clone's ISA.
// The body of an `omp parallel` region is outlined into a function compiled for the BASELINE
// ISA (seen in the disassembly: SSE mulps/addps only), so put the dispatched function inside
// the region (one call per task), never around it.
#pragma once
#include <cstdint>
#include <omp.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MMREC_ISA_DISPATCH __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MMREC_ISA_DISPATCH
#endif

#define MMREC_INLINE inline __attribute__((always_inline))

namespace mmrec {

// Below this many elements a parallel region costs more than it saves (~5 us to fork).
constexpr int64_t kParallelMinWork = 1 << 15;

inline int num_threads_for(int64_t work, int64_t tasks) {
  if (work < kParallelMinWork || tasks < 2) return 1;
  int n = omp_get_max_threads();
  return int(tasks < n ? tasks : n);
}

}  // namespace mmrec
