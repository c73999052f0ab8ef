#include "bindings/common.h"
#include "cpu/recurrence.h"

namespace mmrec::bind {

namespace {

struct Dims {
  int64_t B, T, D, H, d;
};

// Sizes from z [B, T, D] and w [H, d, d]; the checks below name the argument that disagrees.
Dims dims_of(const Array& z, const Array& w) {
  expect(z.ndim() == 3, "z: expected 3 dims [B, T, D]");
  expect(w.ndim() == 3, "w: expected 3 dims [H, d, d]");
  const Dims s{int64_t(z.shape(0)), int64_t(z.shape(1)), int64_t(z.shape(2)), int64_t(w.shape(0)),
               int64_t(w.shape(1))};
  expect(int64_t(w.shape(2)) == s.d, "w: blocks must be square [H, d, d]");
  expect(s.H * s.d == s.D, "w: H * d must equal D (the last dim of z)");
  return s;
}

void reject_cuda(Dev dev) {
  if (dev == Dev::cuda) throw nb::value_error("recurrence: this build has no CUDA kernel for recurrence");
}

void recurrence_fwd(const Array& z, const Array& gamma, const Array& w, const OptArray& bias, const OptArray& h0,
                    const Array& h, uintptr_t) {
  const DType dt = dtype_of(z, "z");
  const Dev dev = device_of(z, "z");
  const Dims s = dims_of(z, w);
  const void* pz = checked(z, "z", 3, {s.B, s.T, s.D}, dt, dev);
  const void* pg = checked(gamma, "gamma", 3, {s.B, s.T, s.D}, dt, dev);
  const void* pw = checked(w, "w", 3, {s.H, s.d, s.d}, dt, dev);
  const void* pbias = checked_opt(bias, "bias", 1, {s.D}, dt, dev);
  const void* ph0 = checked_opt(h0, "h0", 2, {s.B, s.D}, dt, dev);
  void* ph = checked(h, "h", 3, {s.B, s.T, s.D}, dt, dev);
  reject_cuda(dev);
  dispatch_cpu(dt, [&](auto tag) {
    using T_ = decltype(tag);
    nb::gil_scoped_release nogil;
    cpu::recurrence_fwd<T_>(static_cast<const T_*>(pz), static_cast<const T_*>(pg), static_cast<const T_*>(pw),
                            static_cast<const T_*>(pbias), static_cast<const T_*>(ph0), static_cast<T_*>(ph), s.B,
                            s.T, s.H, s.d);
  });
}

void recurrence_bwd(const Array& grad, const Array& z, const Array& gamma, const Array& w, const OptArray& bias,
                    const OptArray& h0, const Array& h, const Array& dz, const Array& dgamma, const Array& dw,
                    const Array& dbias, const Array& dh0, uintptr_t) {
  const DType dt = dtype_of(z, "z");
  const Dev dev = device_of(z, "z");
  const Dims s = dims_of(z, w);
  const void* pgrad = checked(grad, "grad", 3, {s.B, s.T, s.D}, dt, dev);
  const void* pz = checked(z, "z", 3, {s.B, s.T, s.D}, dt, dev);
  const void* pg = checked(gamma, "gamma", 3, {s.B, s.T, s.D}, dt, dev);
  const void* pw = checked(w, "w", 3, {s.H, s.d, s.d}, dt, dev);
  const void* pbias = checked_opt(bias, "bias", 1, {s.D}, dt, dev);
  const void* ph0 = checked_opt(h0, "h0", 2, {s.B, s.D}, dt, dev);
  const void* ph = checked(h, "h", 3, {s.B, s.T, s.D}, dt, dev);
  void* pdz = checked(dz, "dz", 3, {s.B, s.T, s.D}, dt, dev);
  void* pdg = checked(dgamma, "dgamma", 3, {s.B, s.T, s.D}, dt, dev);
  void* pdw = checked(dw, "dw", 3, {s.H, s.d, s.d}, dt, dev);
  void* pdbias = checked(dbias, "dbias", 1, {s.D}, dt, dev);
  void* pdh0 = checked(dh0, "dh0", 2, {s.B, s.D}, dt, dev);
  reject_cuda(dev);
  dispatch_cpu(dt, [&](auto tag) {
    using T_ = decltype(tag);
    nb::gil_scoped_release nogil;
    cpu::recurrence_bwd<T_>(static_cast<const T_*>(pz), static_cast<const T_*>(pg), static_cast<const T_*>(pw),
                            static_cast<const T_*>(pbias), static_cast<const T_*>(ph0), static_cast<const T_*>(ph),
                            static_cast<const T_*>(pgrad), static_cast<T_*>(pdz), static_cast<T_*>(pdg),
                            static_cast<T_*>(pdw), static_cast<T_*>(pdbias), static_cast<T_*>(pdh0), s.B, s.T, s.H,
                            s.d);
  });
}

}  // namespace

void bind_recurrence(nb::module_& m) {
  m.def("recurrence_fwd", &recurrence_fwd, nb::arg("z"), nb::arg("gamma"), nb::arg("w"), nb::arg("bias").none(),
        nb::arg("h0").none(), nb::arg("h"), nb::arg("stream") = 0,
        "h[B,T,D] <- recurrence(z, gamma, w, bias, h0); see kernels/cpu/recurrence.cpp");
  m.def("recurrence_bwd", &recurrence_bwd, nb::arg("grad"), nb::arg("z"), nb::arg("gamma"), nb::arg("w"),
        nb::arg("bias").none(), nb::arg("h0").none(), nb::arg("h"), nb::arg("dz"), nb::arg("dgamma"), nb::arg("dw"),
        nb::arg("dbias"), nb::arg("dh0"), nb::arg("stream") = 0,
        "(dz, dgamma, dw, dbias, dh0) <- backward of recurrence given dL/dh");
}

}  // namespace mmrec::bind
