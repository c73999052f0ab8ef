// CUDA bindings of recurrence, mdi and memory_update (scan dispatches on device in scan.cpp): shapes and dtypes
// are checked here, outputs are allocated by the caller (python/mmrec_ops/_cuda.py), kernels run on `stream`.
#include "bindings/common.h"
#include "cuda/runtime.h"

namespace mmrec::bind {

namespace {

Dev cuda_device(const Array& x, const char* name) {
  const Dev dev = device_of(x, name);
  expect(dev == Dev::cuda, std::string(name) + ": the CUDA kernels need CUDA tensors");
  return dev;
}

int64_t dim(const Array& x, size_t i) { return i < x.ndim() ? int64_t(x.shape(i)) : -1; }

void recurrence_fwd_cuda(const Array& z, const Array& gamma, const Array& w, const OptArray& bias,
                         const OptArray& h0, const Array& h, uintptr_t stream) {
  const DType dt = dtype_of(z, "z");
  const Dev dev = cuda_device(z, "z");
  const int64_t B = dim(z, 0), T = dim(z, 1), D = dim(z, 2), H = dim(w, 0), d = dim(w, 1);
  const void* pz = checked(z, "z", 3, {B, T, D}, dt, dev);
  const void* pg = checked(gamma, "gamma", 3, {B, T, D}, dt, dev);
  const void* pw = checked(w, "w", 3, {H, d, d}, dt, dev);
  expect(H * d == D, "w: expected [H, d, d] with H * d = D");
  const void* pb = checked_opt(bias, "bias", 1, {D}, dt, dev);
  const void* ph0 = checked_opt(h0, "h0", 2, {B, D}, dt, dev);
  void* ph = checked(h, "h", 3, {B, T, D}, dt, dev);
  launch_cuda("recurrence", [&] {
    return cuda::recurrence_fwd(dt, pz, pg, pw, pb, ph0, ph, B, T, H, d, as_stream(stream));
  });
}

void recurrence_bwd_cuda(const Array& grad, const Array& z, const Array& gamma, const Array& w, const OptArray& bias,
                         const OptArray& h0, const Array& h, const Array& dz, const Array& dgamma, const Array& dw,
                         const Array& dbias, const Array& dh0, uintptr_t stream) {
  const DType dt = dtype_of(z, "z");
  const Dev dev = cuda_device(z, "z");
  const int64_t B = dim(z, 0), T = dim(z, 1), D = dim(z, 2), H = dim(w, 0), d = dim(w, 1);
  const void* pG = checked(grad, "grad", 3, {B, T, D}, dt, dev);
  const void* pz = checked(z, "z", 3, {B, T, D}, dt, dev);
  const void* pg = checked(gamma, "gamma", 3, {B, T, D}, dt, dev);
  const void* pw = checked(w, "w", 3, {H, d, d}, dt, dev);
  expect(H * d == D, "w: expected [H, d, d] with H * d = D");
  const void* pb = checked_opt(bias, "bias", 1, {D}, dt, dev);
  const void* ph0 = checked_opt(h0, "h0", 2, {B, D}, dt, dev);
  const void* ph = checked(h, "h", 3, {B, T, D}, dt, dev);
  void* pdz = checked(dz, "dz", 3, {B, T, D}, dt, dev);
  void* pdg = checked(dgamma, "dgamma", 3, {B, T, D}, dt, dev);
  void* pdw = checked(dw, "dw", 3, {H, d, d}, dt, dev);
  void* pdb = checked(dbias, "dbias", 1, {D}, dt, dev);
  void* pdh0 = checked(dh0, "dh0", 2, {B, D}, dt, dev);
  launch_cuda("recurrence backward", [&] {
    return cuda::recurrence_bwd(dt, pG, pz, pg, pw, pb, ph0, ph, pdz, pdg, pdw, pdb, pdh0, B, T, H, d,
                                as_stream(stream));
  });
}

void mdi_fwd_cuda(const Array& v, const Array& mod, const Array& base, const OptArray& m0, const Array& m, double eps,
                  uintptr_t stream) {
  const DType dt = dtype_of(v, "v");
  const Dev dev = cuda_device(v, "v");
  const int64_t B = dim(v, 0), T = dim(v, 1), D = dim(v, 2), N = dim(base, 0);
  const void* pv = checked(v, "v", 3, {B, T, D}, dt, dev);
  const void* pmod = checked(mod, "mod", 3, {B, T, N}, dt, dev);
  const void* pbase = checked(base, "base", 2, {N, D}, dt, dev);
  const void* pm0 = checked_opt(m0, "m0", 3, {B, N, D}, dt, dev);
  void* pm = checked(m, "m", 4, {B, T, N, D}, dt, dev);
  launch_cuda("mdi", [&] { return cuda::mdi_fwd(dt, pv, pmod, pbase, pm0, pm, B, T, N, D, eps, as_stream(stream)); });
}

void mdi_bwd_cuda(const Array& grad, const Array& v, const Array& mod, const Array& base, const OptArray& m0,
                  const Array& m, const Array& dv, const Array& dmod, const Array& dbase, const Array& dm0, double eps,
                  uintptr_t stream) {
  const DType dt = dtype_of(v, "v");
  const Dev dev = cuda_device(v, "v");
  const int64_t B = dim(v, 0), T = dim(v, 1), D = dim(v, 2), N = dim(base, 0);
  const void* pG = checked(grad, "grad", 4, {B, T, N, D}, dt, dev);
  const void* pv = checked(v, "v", 3, {B, T, D}, dt, dev);
  const void* pmod = checked(mod, "mod", 3, {B, T, N}, dt, dev);
  const void* pbase = checked(base, "base", 2, {N, D}, dt, dev);
  const void* pm0 = checked_opt(m0, "m0", 3, {B, N, D}, dt, dev);
  const void* pm = checked(m, "m", 4, {B, T, N, D}, dt, dev);
  void* pdv = checked(dv, "dv", 3, {B, T, D}, dt, dev);
  void* pdmod = checked(dmod, "dmod", 3, {B, T, N}, dt, dev);
  void* pdbase = checked(dbase, "dbase", 2, {N, D}, dt, dev);
  void* pdm0 = checked(dm0, "dm0", 3, {B, N, D}, dt, dev);
  launch_cuda("mdi backward", [&] {
    return cuda::mdi_bwd(dt, pG, pv, pmod, pbase, pm0, pm, pdv, pdmod, pdbase, pdm0, B, T, N, D, eps,
                         as_stream(stream));
  });
}

void memory_update_fwd_cuda(const Array& M0, const Array& key, const Array& value, const Array& strength,
                            const Array& Ms, uintptr_t stream) {
  const DType dt = dtype_of(M0, "M0");
  const Dev dev = cuda_device(M0, "M0");
  const int64_t B = dim(M0, 0), S = dim(M0, 1), D = dim(M0, 2), NC = dim(key, 1);
  const void* pM0 = checked(M0, "M0", 3, {B, S, D}, dt, dev);
  const void* pk = checked(key, "key", 3, {B, NC, D}, dt, dev);
  const void* pv = checked(value, "value", 3, {B, NC, D}, dt, dev);
  const void* ps = checked(strength, "strength", 2, {B, NC}, dt, dev);
  void* pMs = checked(Ms, "Ms", 4, {B, NC + 1, S, D}, dt, dev);
  launch_cuda("memory_update", [&] {
    return cuda::memory_update_fwd(dt, pM0, pk, pv, ps, pMs, B, NC, S, D, as_stream(stream));
  });
}

void memory_update_bwd_cuda(const Array& grad, const Array& M0, const Array& key, const Array& value,
                            const Array& strength, const Array& Ms, const Array& dM0, const Array& dkey,
                            const Array& dvalue, const Array& dstrength, uintptr_t stream) {
  const DType dt = dtype_of(M0, "M0");
  const Dev dev = cuda_device(M0, "M0");
  const int64_t B = dim(M0, 0), S = dim(M0, 1), D = dim(M0, 2), NC = dim(key, 1);
  const void* pG = checked(grad, "grad", 4, {B, NC + 1, S, D}, dt, dev);
  const void* pM0 = checked(M0, "M0", 3, {B, S, D}, dt, dev);
  const void* pk = checked(key, "key", 3, {B, NC, D}, dt, dev);
  const void* pv = checked(value, "value", 3, {B, NC, D}, dt, dev);
  const void* ps = checked(strength, "strength", 2, {B, NC}, dt, dev);
  const void* pMs = checked(Ms, "Ms", 4, {B, NC + 1, S, D}, dt, dev);
  void* pdM0 = checked(dM0, "dM0", 3, {B, S, D}, dt, dev);
  void* pdk = checked(dkey, "dkey", 3, {B, NC, D}, dt, dev);
  void* pdv = checked(dvalue, "dvalue", 3, {B, NC, D}, dt, dev);
  void* pds = checked(dstrength, "dstrength", 2, {B, NC}, dt, dev);
  launch_cuda("memory_update backward", [&] {
    return cuda::memory_update_bwd(dt, pG, pM0, pk, pv, ps, pMs, pdM0, pdk, pdv, pds, B, NC, S, D,
                                   as_stream(stream));
  });
}

}  // namespace

void bind_cuda_ops(nb::module_& m) {
  m.def("recurrence_fwd_cuda", &recurrence_fwd_cuda, nb::arg("z"), nb::arg("gamma"), nb::arg("w"),
        nb::arg("bias").none(), nb::arg("h0").none(), nb::arg("h"), nb::arg("stream"),
        "h[B,T,D] <- recurrence(z, gamma, w, bias, h0) on CUDA; see kernels/cuda/recurrence.cu");
  m.def("recurrence_bwd_cuda", &recurrence_bwd_cuda, nb::arg("grad"), nb::arg("z"), nb::arg("gamma"), nb::arg("w"),
        nb::arg("bias").none(), nb::arg("h0").none(), nb::arg("h"), nb::arg("dz"), nb::arg("dgamma"), nb::arg("dw"),
        nb::arg("dbias"), nb::arg("dh0"), nb::arg("stream"), "(dz, dgamma, dw, dbias, dh0) <- recurrence backward");
  m.def("mdi_fwd_cuda", &mdi_fwd_cuda, nb::arg("v"), nb::arg("mod"), nb::arg("base"), nb::arg("m0").none(),
        nb::arg("m"), nb::arg("eps"), nb::arg("stream"), "m[B,T,N,D] <- mdi(v, mod, base, m0, eps) on CUDA");
  m.def("mdi_bwd_cuda", &mdi_bwd_cuda, nb::arg("grad"), nb::arg("v"), nb::arg("mod"), nb::arg("base"),
        nb::arg("m0").none(), nb::arg("m"), nb::arg("dv"), nb::arg("dmod"), nb::arg("dbase"), nb::arg("dm0"),
        nb::arg("eps"), nb::arg("stream"), "(dv, dmod, dbase, dm0) <- mdi backward");
  m.def("memory_update_fwd_cuda", &memory_update_fwd_cuda, nb::arg("M0"), nb::arg("key"), nb::arg("value"),
        nb::arg("strength"), nb::arg("Ms"), nb::arg("stream"),
        "Ms[B,NC+1,S,D] <- memory_update(M0, key, value, strength) on CUDA");
  m.def("memory_update_bwd_cuda", &memory_update_bwd_cuda, nb::arg("grad"), nb::arg("M0"), nb::arg("key"),
        nb::arg("value"), nb::arg("strength"), nb::arg("Ms"), nb::arg("dM0"), nb::arg("dkey"), nb::arg("dvalue"),
        nb::arg("dstrength"), nb::arg("stream"), "(dM0, dkey, dvalue, dstrength) <- memory_update backward");
}

}  // namespace mmrec::bind
