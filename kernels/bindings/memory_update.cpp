#include "bindings/common.h"
#include "cpu/memory_update.h"

namespace mmrec::bind {

namespace {

// Shapes from M0 [B, S, D] and key [B, NC, D]; a wrong rank is reported before any size is read.
struct MemDims {
  int64_t B, NC, S, D;
};

MemDims mem_dims(const Array& M0, const Array& key) {
  expect(M0.ndim() == 3, "M0: expected 3 dims [B, S, D]");
  expect(key.ndim() == 3, "key: expected 3 dims [B, NC, D]");
  return {int64_t(M0.shape(0)), int64_t(key.shape(1)), int64_t(M0.shape(1)), int64_t(M0.shape(2))};
}

void no_cuda(Dev dev) {
  expect(dev == Dev::cpu, "memory_update: no CUDA kernel in this extension; use the cuda backend's");
}

void memory_update_fwd(const Array& M0, const Array& key, const Array& value, const Array& strength, const Array& Ms,
                       uintptr_t) {
  const DType dt = dtype_of(M0, "M0");
  const Dev dev = device_of(M0, "M0");
  const auto [B, NC, S, D] = mem_dims(M0, key);
  const void* pM0 = checked(M0, "M0", 3, {B, S, D}, dt, dev);
  const void* pk = checked(key, "key", 3, {B, NC, D}, dt, dev);
  const void* pv = checked(value, "value", 3, {B, NC, D}, dt, dev);
  const void* ps = checked(strength, "strength", 2, {B, NC}, dt, dev);
  void* pMs = checked(Ms, "Ms", 4, {B, NC + 1, S, D}, dt, dev);
  no_cuda(dev);
  dispatch_cpu(dt, [&](auto tag) {
    using T_ = decltype(tag);
    nb::gil_scoped_release nogil;
    cpu::memory_update_fwd<T_>(static_cast<const T_*>(pM0), static_cast<const T_*>(pk), static_cast<const T_*>(pv),
                               static_cast<const T_*>(ps), static_cast<T_*>(pMs), B, NC, S, D);
  });
}

void memory_update_bwd(const Array& M0, const Array& key, const Array& value, const Array& strength,
                       const Array& Ms, const Array& grad, const Array& dM0, const Array& dkey, const Array& dvalue,
                       const Array& dstrength, uintptr_t) {
  const DType dt = dtype_of(M0, "M0");
  const Dev dev = device_of(M0, "M0");
  const auto [B, NC, S, D] = mem_dims(M0, key);
  checked(M0, "M0", 3, {B, S, D}, dt, dev);
  const void* pk = checked(key, "key", 3, {B, NC, D}, dt, dev);
  const void* pv = checked(value, "value", 3, {B, NC, D}, dt, dev);
  const void* ps = checked(strength, "strength", 2, {B, NC}, dt, dev);
  const void* pMs = checked(Ms, "Ms", 4, {B, NC + 1, S, D}, dt, dev);
  const void* pg = checked(grad, "grad", 4, {B, NC + 1, S, D}, dt, dev);
  void* pdM0 = checked(dM0, "dM0", 3, {B, S, D}, dt, dev);
  void* pdk = checked(dkey, "dkey", 3, {B, NC, D}, dt, dev);
  void* pdv = checked(dvalue, "dvalue", 3, {B, NC, D}, dt, dev);
  void* pds = checked(dstrength, "dstrength", 2, {B, NC}, dt, dev);
  no_cuda(dev);
  dispatch_cpu(dt, [&](auto tag) {
    using T_ = decltype(tag);
    nb::gil_scoped_release nogil;
    cpu::memory_update_bwd<T_>(static_cast<const T_*>(pk), static_cast<const T_*>(pv), static_cast<const T_*>(ps),
                               static_cast<const T_*>(pMs), static_cast<const T_*>(pg), static_cast<T_*>(pdM0),
                               static_cast<T_*>(pdk), static_cast<T_*>(pdv), static_cast<T_*>(pds), B, NC, S, D);
  });
}

}  // namespace

void bind_memory_update(nb::module_& m) {
  m.def("memory_update_fwd", &memory_update_fwd, nb::arg("M0"), nb::arg("key"), nb::arg("value"),
        nb::arg("strength"), nb::arg("Ms"), nb::arg("stream") = 0,
        "Ms[B,NC+1,S,D] <- memory_update(M0, key, value, strength); see kernels/cpu/memory_update.cpp");
  m.def("memory_update_bwd", &memory_update_bwd, nb::arg("M0"), nb::arg("key"), nb::arg("value"),
        nb::arg("strength"), nb::arg("Ms"), nb::arg("grad"), nb::arg("dM0"), nb::arg("dkey"), nb::arg("dvalue"),
        nb::arg("dstrength"), nb::arg("stream") = 0,
        "(dM0, dkey, dvalue, dstrength) <- backward of memory_update given dL/dMs");
}

}  // namespace mmrec::bind
