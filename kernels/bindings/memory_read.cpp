// Binding of memory_read (SPEC.md, op 5): checks shapes, dtypes and devices once, then runs the CPU kernel
// (kernels/cpu/memory_read.cpp) or, for CUDA tensors, the CUDA kernel (kernels/cuda/memory_read.cu) on `stream`,
// without the GIL. Backward arguments are gradient-first.
#include "bindings/common.h"
#include "cpu/memory_read.h"
#include "cuda/memory_read.h"

#ifndef MMREC_WITH_CUDA
namespace mmrec::cuda {
int memory_read_fwd(DType, const void*, const void*, const void*, const void*, const void*, const void*, const void*,
                    void*, void*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                    double, double, void*) {
  return kNotBuilt;
}
int memory_read_bwd(DType, const void*, const void*, const void*, const void*, const void*, const void*, const void*,
                    const void*, const void*, void*, void*, void*, void*, void*, void*, void*, int64_t, int64_t,
                    int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, double, double, void*) {
  return kNotBuilt;
}
}  // namespace mmrec::cuda
#endif

namespace mmrec::bind {

namespace {

// Sizes from q [B, T, D], base [N, D] and Ms [B, L, S, D]; ranks are checked before any size is read.
cpu::ReadDims read_dims(const Array& q, const Array& base, const Array& Ms, int64_t k0, int64_t C, int64_t H) {
  expect(q.ndim() == 3, "q: expected 3 dims [B, T, D]");
  expect(base.ndim() == 2, "base: expected 2 dims [N, D]");
  expect(Ms.ndim() == 4, "Ms: expected 4 dims [B, L, S, D]");
  const int64_t B = q.shape(0), T = q.shape(1), D = q.shape(2);
  expect(C >= 1 && k0 >= 0 && k0 < C, "k0, chunk_len: need 0 <= k0 < chunk_len");
  expect(H >= 1 && D % H == 0, "n_heads: must divide D");
  return {B, T, int64_t(base.shape(0)), D, (k0 + T + C - 1) / C, int64_t(Ms.shape(2)), H, k0, C};
}

void check_eps(double eps, double norm_eps) {
  expect(eps > 0.0 && eps < 0.5, "eps: must be in (0, 0.5)");
  expect(norm_eps > 0.0, "norm_eps: must be > 0");
}

void memory_read_fwd(const Array& q, const Array& h, const Array& v, const Array& mod, const Array& base,
                     const Array& Ms, const OptArray& m0, const Array& r, const Array& m_last, int64_t k0,
                     int64_t chunk_len, int64_t n_heads, double eps, double norm_eps, uintptr_t stream) {
  const DType dt = dtype_of(q, "q");
  const Dev dev = device_of(q, "q");
  const cpu::ReadDims d = read_dims(q, base, Ms, k0, chunk_len, n_heads);
  const void* pq = checked(q, "q", 3, {d.B, d.T, d.D}, dt, dev);
  const void* ph = checked(h, "h", 3, {d.B, d.T, d.D}, dt, dev);
  const void* pv = checked(v, "v", 3, {d.B, d.T, d.D}, dt, dev);
  const void* pmod = checked(mod, "mod", 3, {d.B, d.T, d.N}, dt, dev);
  const void* pbase = checked(base, "base", 2, {d.N, d.D}, dt, dev);
  const void* pMs = checked(Ms, "Ms", 4, {d.B, d.L, d.S, d.D}, dt, dev);
  const void* pm0 = checked_opt(m0, "m0", 3, {d.B, d.N, d.D}, dt, dev);
  void* pr = checked(r, "r", 3, {d.B, d.T, d.D}, dt, dev);
  void* pml = checked(m_last, "m_last", 3, {d.B, d.N, d.D}, dt, dev);
  check_eps(eps, norm_eps);
  if (dev == Dev::cuda) {
    launch_cuda("memory_read", [&] {
      return cuda::memory_read_fwd(dt, pq, ph, pv, pmod, pbase, pMs, pm0, pr, pml, d.B, d.T, d.N, d.D, d.L, d.S, d.H,
                                   d.k0, d.C, eps, norm_eps, as_stream(stream));
    });
    return;
  }
  dispatch_cpu(dt, [&](auto tag) {
    using T_ = decltype(tag);
    nb::gil_scoped_release nogil;
    cpu::memory_read_fwd<T_>(static_cast<const T_*>(pq), static_cast<const T_*>(ph), static_cast<const T_*>(pv),
                             static_cast<const T_*>(pmod), static_cast<const T_*>(pbase), static_cast<const T_*>(pMs),
                             static_cast<const T_*>(pm0), static_cast<T_*>(pr), static_cast<T_*>(pml), d, eps,
                             norm_eps);
  });
}

void memory_read_bwd(const Array& grad_r, const Array& grad_m, const Array& q, const Array& h, const Array& v,
                     const Array& mod, const Array& base, const Array& Ms, const OptArray& m0, const Array& dq,
                     const Array& dh, const Array& dv, const Array& dmod, const Array& dbase, const Array& dMs,
                     const Array& dm0, int64_t k0, int64_t chunk_len, int64_t n_heads, double eps, double norm_eps,
                     uintptr_t stream) {
  const DType dt = dtype_of(q, "q");
  const Dev dev = device_of(q, "q");
  const cpu::ReadDims d = read_dims(q, base, Ms, k0, chunk_len, n_heads);
  const void* pgr = checked(grad_r, "grad_r", 3, {d.B, d.T, d.D}, dt, dev);
  const void* pgm = checked(grad_m, "grad_m", 3, {d.B, d.N, d.D}, dt, dev);
  const void* pq = checked(q, "q", 3, {d.B, d.T, d.D}, dt, dev);
  const void* ph = checked(h, "h", 3, {d.B, d.T, d.D}, dt, dev);
  const void* pv = checked(v, "v", 3, {d.B, d.T, d.D}, dt, dev);
  const void* pmod = checked(mod, "mod", 3, {d.B, d.T, d.N}, dt, dev);
  const void* pbase = checked(base, "base", 2, {d.N, d.D}, dt, dev);
  const void* pMs = checked(Ms, "Ms", 4, {d.B, d.L, d.S, d.D}, dt, dev);
  const void* pm0 = checked_opt(m0, "m0", 3, {d.B, d.N, d.D}, dt, dev);
  void* pdq = checked(dq, "dq", 3, {d.B, d.T, d.D}, dt, dev);
  void* pdh = checked(dh, "dh", 3, {d.B, d.T, d.D}, dt, dev);
  void* pdv = checked(dv, "dv", 3, {d.B, d.T, d.D}, dt, dev);
  void* pdmod = checked(dmod, "dmod", 3, {d.B, d.T, d.N}, dt, dev);
  void* pdbase = checked(dbase, "dbase", 2, {d.N, d.D}, dt, dev);
  void* pdMs = checked(dMs, "dMs", 4, {d.B, d.L, d.S, d.D}, dt, dev);
  void* pdm0 = checked(dm0, "dm0", 3, {d.B, d.N, d.D}, dt, dev);
  check_eps(eps, norm_eps);
  if (dev == Dev::cuda) {
    launch_cuda("memory_read backward", [&] {
      return cuda::memory_read_bwd(dt, pgr, pgm, pq, ph, pv, pmod, pbase, pMs, pm0, pdq, pdh, pdv, pdmod, pdbase, pdMs,
                                   pdm0, d.B, d.T, d.N, d.D, d.L, d.S, d.H, d.k0, d.C, eps, norm_eps,
                                   as_stream(stream));
    });
    return;
  }
  dispatch_cpu(dt, [&](auto tag) {
    using T_ = decltype(tag);
    nb::gil_scoped_release nogil;
    cpu::memory_read_bwd<T_>(static_cast<const T_*>(pgr), static_cast<const T_*>(pgm), static_cast<const T_*>(pq),
                             static_cast<const T_*>(ph), static_cast<const T_*>(pv), static_cast<const T_*>(pmod),
                             static_cast<const T_*>(pbase), static_cast<const T_*>(pMs), static_cast<const T_*>(pm0),
                             static_cast<T_*>(pdq), static_cast<T_*>(pdh), static_cast<T_*>(pdv),
                             static_cast<T_*>(pdmod), static_cast<T_*>(pdbase), static_cast<T_*>(pdMs),
                             static_cast<T_*>(pdm0), d, eps, norm_eps);
  });
}

}  // namespace

void bind_memory_read(nb::module_& m) {
  m.def("memory_read_fwd", &memory_read_fwd, nb::arg("q"), nb::arg("h"), nb::arg("v"), nb::arg("mod"),
        nb::arg("base"), nb::arg("Ms"), nb::arg("m0").none(), nb::arg("r"), nb::arg("m_last"), nb::arg("k0"),
        nb::arg("chunk_len"), nb::arg("n_heads"), nb::arg("eps"), nb::arg("norm_eps"), nb::arg("stream") = 0,
        "(r[B,T,D], m_last[B,N,D]) <- memory_read(q, h, v, mod, base, Ms, m0, ...); see kernels/cpu/memory_read.cpp");
  m.def("memory_read_bwd", &memory_read_bwd, nb::arg("grad_r"), nb::arg("grad_m"), nb::arg("q"), nb::arg("h"),
        nb::arg("v"), nb::arg("mod"), nb::arg("base"), nb::arg("Ms"), nb::arg("m0").none(), nb::arg("dq"),
        nb::arg("dh"), nb::arg("dv"), nb::arg("dmod"), nb::arg("dbase"), nb::arg("dMs"), nb::arg("dm0"),
        nb::arg("k0"), nb::arg("chunk_len"), nb::arg("n_heads"), nb::arg("eps"), nb::arg("norm_eps"),
        nb::arg("stream") = 0, "(dq, dh, dv, dmod, dbase, dMs, dm0) <- backward of memory_read given (dL/dr, dL/dm_last)");
}

}  // namespace mmrec::bind
