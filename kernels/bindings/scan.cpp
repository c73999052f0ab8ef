#include "bindings/common.h"
#include "cpu/scan.h"
#include "cuda/runtime.h"

namespace mmrec::bind {

namespace {

void scan_fwd(const Array& a, const Array& b, const OptArray& h0, const Array& h, bool reverse, uintptr_t stream) {
  const DType dt = dtype_of(a, "a");
  const Dev dev = device_of(a, "a");
  const int64_t B = a.ndim() == 3 ? a.shape(0) : -1, T = a.ndim() == 3 ? a.shape(1) : -1,
                D = a.ndim() == 3 ? a.shape(2) : -1;
  const void* pa = checked(a, "a", 3, {B, T, D}, dt, dev);
  const void* pb = checked(b, "b", 3, {B, T, D}, dt, dev);
  const void* ph0 = checked_opt(h0, "h0", 2, {B, D}, dt, dev);
  void* ph = checked(h, "h", 3, {B, T, D}, dt, dev);
  if (dev == Dev::cuda)
    return launch_cuda("scan", [&] { return cuda::scan_fwd(dt, pa, pb, ph0, ph, B, T, D, reverse, as_stream(stream)); });
  dispatch_cpu(dt, [&](auto tag) {
    using T_ = decltype(tag);
    nb::gil_scoped_release nogil;
    cpu::scan_fwd<T_>(static_cast<const T_*>(pa), static_cast<const T_*>(pb), static_cast<const T_*>(ph0),
                      static_cast<T_*>(ph), B, T, D, reverse);
  });
}

void scan_bwd(const Array& a, const Array& h, const OptArray& h0, const Array& grad, const Array& da,
              const Array& db, const Array& dh0, bool reverse, uintptr_t stream) {
  const DType dt = dtype_of(a, "a");
  const Dev dev = device_of(a, "a");
  const int64_t B = a.ndim() == 3 ? a.shape(0) : -1, T = a.ndim() == 3 ? a.shape(1) : -1,
                D = a.ndim() == 3 ? a.shape(2) : -1;
  const void* pa = checked(a, "a", 3, {B, T, D}, dt, dev);
  const void* ph = checked(h, "h", 3, {B, T, D}, dt, dev);
  const void* ph0 = checked_opt(h0, "h0", 2, {B, D}, dt, dev);
  const void* pg = checked(grad, "grad", 3, {B, T, D}, dt, dev);
  void* pda = checked(da, "da", 3, {B, T, D}, dt, dev);
  void* pdb = checked(db, "db", 3, {B, T, D}, dt, dev);
  void* pdh0 = checked(dh0, "dh0", 2, {B, D}, dt, dev);
  if (dev == Dev::cuda)
    return launch_cuda("scan backward", [&] {
      return cuda::scan_bwd(dt, pa, ph, ph0, pg, pda, pdb, pdh0, B, T, D, reverse, as_stream(stream));
    });
  dispatch_cpu(dt, [&](auto tag) {
    using T_ = decltype(tag);
    nb::gil_scoped_release nogil;
    cpu::scan_bwd<T_>(static_cast<const T_*>(pa), static_cast<const T_*>(ph), static_cast<const T_*>(ph0),
                      static_cast<const T_*>(pg), static_cast<T_*>(pda), static_cast<T_*>(pdb),
                      static_cast<T_*>(pdh0), B, T, D, reverse);
  });
}

}  // namespace

void bind_scan(nb::module_& m) {
  m.def("scan_fwd", &scan_fwd, nb::arg("a"), nb::arg("b"), nb::arg("h0").none(), nb::arg("h"), nb::arg("reverse"),
        nb::arg("stream") = 0, "h[B,T,D] <- scan(a, b, h0); see kernels/cpu/scan.cpp");
  m.def("scan_bwd", &scan_bwd, nb::arg("a"), nb::arg("h"), nb::arg("h0").none(), nb::arg("grad"), nb::arg("da"),
        nb::arg("db"), nb::arg("dh0"), nb::arg("reverse"), nb::arg("stream") = 0,
        "(da, db, dh0) <- backward of scan given dL/dh");
}

}  // namespace mmrec::bind
