// memory_update: Ms[B, NC + 1, S, D] <- M0 [B, S, D], key, value [B, NC, D], strength [B, NC]
// (kernels/cpu/memory_update.cpp, kernels/cuda/memory_update.cu).
#include "bindings/common.h"
#include "cpu/memory_update.h"

namespace mmrec::bind {

namespace {

void memory_update_fwd(const Array& M0, const Array& key, const Array& value, const Array& strength, const Array& Ms,
                       uintptr_t stream) {
  const Call c(M0, "M0");
  const int64_t B = c.size(M0, "M0", 3, 0), S = M0.shape(1), D = M0.shape(2), NC = c.size(key, "key", 3, 1);
  const In pM0 = c.in(M0, "M0", {B, S, D}), pk = c.in(key, "key", {B, NC, D}), pv = c.in(value, "value", {B, NC, D}),
           ps = c.in(strength, "strength", {B, NC});
  const Out pMs = c.out(Ms, "Ms", {B, NC + 1, S, D});
  if (c.dev == Dev::cuda)
    return MMREC_RUN_CUDA("memory_update", cuda::memory_update_fwd(c.dt, pM0.p, pk.p, pv.p, ps.p, pMs.p, B, NC, S, D,
                                                                   as_stream(stream)));
  run_cpu(c.dt, [&](auto t) { cpu::memory_update_fwd<decltype(t)>(pM0, pk, pv, ps, pMs, B, NC, S, D); });
}

void memory_update_bwd(const Array& grad, const Array& M0, const Array& key, const Array& value,
                       const Array& strength, const Array& Ms, const Array& dM0, const Array& dkey,
                       const Array& dvalue, const Array& dstrength, uintptr_t stream) {
  const Call c(grad, "grad");
  const int64_t B = c.size(grad, "grad", 4, 0), NC = grad.shape(1) - 1, S = grad.shape(2), D = grad.shape(3);
  const In pG = c.in(grad, "grad", {B, NC + 1, S, D}), pM0 = c.in(M0, "M0", {B, S, D}),
           pk = c.in(key, "key", {B, NC, D}), pv = c.in(value, "value", {B, NC, D}),
           ps = c.in(strength, "strength", {B, NC}), pMs = c.in(Ms, "Ms", {B, NC + 1, S, D});
  const Out pdM0 = c.out(dM0, "dM0", {B, S, D}), pdk = c.out(dkey, "dkey", {B, NC, D}),
            pdv = c.out(dvalue, "dvalue", {B, NC, D}), pds = c.out(dstrength, "dstrength", {B, NC});
  if (c.dev == Dev::cuda)
    return MMREC_RUN_CUDA("memory_update backward",
                          cuda::memory_update_bwd(c.dt, pG.p, pM0.p, pk.p, pv.p, ps.p, pMs.p, pdM0.p, pdk.p, pdv.p,
                                                  pds.p, B, NC, S, D, as_stream(stream)));
  run_cpu(c.dt, [&](auto t) {
    cpu::memory_update_bwd<decltype(t)>(pG, pk, pv, ps, pMs, pdM0, pdk, pdv, pds, B, NC, S, D);
  });
}

}  // namespace

void bind_memory_update(nb::module_& m) {
  m.def("memory_update_fwd", &memory_update_fwd, nb::arg("M0"), nb::arg("key"), nb::arg("value"),
        nb::arg("strength"), nb::arg("Ms"), nb::arg("stream") = 0, "Ms <- memory_update(M0, key, value, strength)");
  m.def("memory_update_bwd", &memory_update_bwd, nb::arg("grad"), nb::arg("M0"), nb::arg("key"), nb::arg("value"),
        nb::arg("strength"), nb::arg("Ms"), nb::arg("dM0"), nb::arg("dkey"), nb::arg("dvalue"), nb::arg("dstrength"),
        nb::arg("stream") = 0, "(dM0, dkey, dvalue, dstrength) <- memory_update backward given grad = dL/dMs");
}

}  // namespace mmrec::bind
