#include "bindings/common.h"
#include "cpu/mdi.h"

namespace mmrec::bind {

namespace {

// Shapes from v [B, T, D] and base [N, D]; a wrong rank is reported before any size is read.
struct MdiDims {
  int64_t B, T, N, D;
};

MdiDims mdi_dims(const Array& v, const Array& base) {
  expect(v.ndim() == 3, "v: expected 3 dims [B, T, D]");
  expect(base.ndim() == 2, "base: expected 2 dims [N, D]");
  return {int64_t(v.shape(0)), int64_t(v.shape(1)), int64_t(base.shape(0)), int64_t(v.shape(2))};
}

void check_eps(double eps) {
  expect(eps > 0.0 && eps < 0.5, "eps: must be in (0, 0.5), got " + std::to_string(eps));
}

void no_cuda(Dev dev) { expect(dev == Dev::cpu, "mdi: no CUDA kernel in this extension; use the cuda backend's"); }

void mdi_fwd(const Array& v, const Array& mod, const Array& base, const OptArray& m0, const Array& m, double eps,
             uintptr_t) {
  const DType dt = dtype_of(v, "v");
  const Dev dev = device_of(v, "v");
  const auto [B, T, N, D] = mdi_dims(v, base);
  const void* pv = checked(v, "v", 3, {B, T, D}, dt, dev);
  const void* pmod = checked(mod, "mod", 3, {B, T, N}, dt, dev);
  const void* pbase = checked(base, "base", 2, {N, D}, dt, dev);
  const void* pm0 = checked_opt(m0, "m0", 3, {B, N, D}, dt, dev);
  void* pm = checked(m, "m", 4, {B, T, N, D}, dt, dev);
  check_eps(eps);
  no_cuda(dev);
  dispatch_cpu(dt, [&](auto tag) {
    using T_ = decltype(tag);
    nb::gil_scoped_release nogil;
    cpu::mdi_fwd<T_>(static_cast<const T_*>(pv), static_cast<const T_*>(pmod), static_cast<const T_*>(pbase),
                     static_cast<const T_*>(pm0), static_cast<T_*>(pm), B, T, N, D, eps);
  });
}

void mdi_bwd(const Array& v, const Array& mod, const Array& base, const OptArray& m0, const Array& m,
             const Array& grad, const Array& dv, const Array& dmod, const Array& dbase, const Array& dm0, double eps,
             uintptr_t) {
  const DType dt = dtype_of(v, "v");
  const Dev dev = device_of(v, "v");
  const auto [B, T, N, D] = mdi_dims(v, base);
  const void* pv = checked(v, "v", 3, {B, T, D}, dt, dev);
  const void* pmod = checked(mod, "mod", 3, {B, T, N}, dt, dev);
  const void* pbase = checked(base, "base", 2, {N, D}, dt, dev);
  const void* pm0 = checked_opt(m0, "m0", 3, {B, N, D}, dt, dev);
  const void* pm = checked(m, "m", 4, {B, T, N, D}, dt, dev);
  const void* pg = checked(grad, "grad", 4, {B, T, N, D}, dt, dev);
  void* pdv = checked(dv, "dv", 3, {B, T, D}, dt, dev);
  void* pdmod = checked(dmod, "dmod", 3, {B, T, N}, dt, dev);
  void* pdbase = checked(dbase, "dbase", 2, {N, D}, dt, dev);
  void* pdm0 = checked(dm0, "dm0", 3, {B, N, D}, dt, dev);
  check_eps(eps);
  no_cuda(dev);
  dispatch_cpu(dt, [&](auto tag) {
    using T_ = decltype(tag);
    nb::gil_scoped_release nogil;
    cpu::mdi_bwd<T_>(static_cast<const T_*>(pv), static_cast<const T_*>(pmod), static_cast<const T_*>(pbase),
                     static_cast<const T_*>(pm0), static_cast<const T_*>(pm), static_cast<const T_*>(pg),
                     static_cast<T_*>(pdv), static_cast<T_*>(pdmod), static_cast<T_*>(pdbase),
                     static_cast<T_*>(pdm0), B, T, N, D, eps);
  });
}

}  // namespace

void bind_mdi(nb::module_& m) {
  m.def("mdi_fwd", &mdi_fwd, nb::arg("v"), nb::arg("mod"), nb::arg("base"), nb::arg("m0").none(), nb::arg("m"),
        nb::arg("eps"), nb::arg("stream") = 0, "m[B,T,N,D] <- mdi(v, mod, base, m0, eps); see kernels/cpu/mdi.cpp");
  m.def("mdi_bwd", &mdi_bwd, nb::arg("v"), nb::arg("mod"), nb::arg("base"), nb::arg("m0").none(), nb::arg("m"),
        nb::arg("grad"), nb::arg("dv"), nb::arg("dmod"), nb::arg("dbase"), nb::arg("dm0"), nb::arg("eps"),
        nb::arg("stream") = 0, "(dv, dmod, dbase, dm0) <- backward of mdi given dL/dm");
}

}  // namespace mmrec::bind
