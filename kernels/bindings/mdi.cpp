// mdi: m[B, T, N, D] <- v [B, T, D], mod [B, T, N], base [N, D], m0 [B, N, D], eps
// (kernels/cpu/mdi.cpp, kernels/cuda/mdi.cu).
#include "bindings/common.h"
#include "cpu/mdi.h"

namespace mmrec::bind {

namespace {

void mdi_fwd(const Array& v, const Array& mod, const Array& base, const OptArray& m0, const Array& m, double eps,
             uintptr_t stream) {
  const Call c(v, "v");
  const int64_t B = c.size(v, "v", 3, 0), T = v.shape(1), D = v.shape(2), N = c.size(base, "base", 2, 0);
  const In pv = c.in(v, "v", {B, T, D}), pmod = c.in(mod, "mod", {B, T, N}), pbase = c.in(base, "base", {N, D}),
           pm0 = c.in(m0, "m0", {B, N, D});
  const Out pm = c.out(m, "m", {B, T, N, D});
  if (c.dev == Dev::cuda)
    return MMREC_RUN_CUDA("mdi", cuda::mdi_fwd(c.dt, pv.p, pmod.p, pbase.p, pm0.p, pm.p, B, T, N, D, eps,
                                               as_stream(stream)));
  run_cpu(c.dt, [&](auto t) { cpu::mdi_fwd<decltype(t)>(pv, pmod, pbase, pm0, pm, B, T, N, D, eps); });
}

void mdi_bwd(const Array& grad, const Array& v, const Array& mod, const Array& base, const OptArray& m0,
             const Array& m, const Array& dv, const Array& dmod, const Array& dbase, const Array& dm0, double eps,
             uintptr_t stream) {
  const Call c(grad, "grad");
  const int64_t B = c.size(grad, "grad", 4, 0), T = grad.shape(1), N = grad.shape(2), D = grad.shape(3);
  const In pG = c.in(grad, "grad", {B, T, N, D}), pv = c.in(v, "v", {B, T, D}), pmod = c.in(mod, "mod", {B, T, N}),
           pbase = c.in(base, "base", {N, D}), pm0 = c.in(m0, "m0", {B, N, D}), pm = c.in(m, "m", {B, T, N, D});
  const Out pdv = c.out(dv, "dv", {B, T, D}), pdmod = c.out(dmod, "dmod", {B, T, N}),
            pdbase = c.out(dbase, "dbase", {N, D}), pdm0 = c.out(dm0, "dm0", {B, N, D});
  if (c.dev == Dev::cuda)
    return MMREC_RUN_CUDA("mdi backward", cuda::mdi_bwd(c.dt, pG.p, pv.p, pmod.p, pbase.p, pm0.p, pm.p, pdv.p, pdmod.p,
                                                        pdbase.p, pdm0.p, B, T, N, D, eps, as_stream(stream)));
  run_cpu(c.dt, [&](auto t) {
    cpu::mdi_bwd<decltype(t)>(pG, pv, pmod, pbase, pm0, pm, pdv, pdmod, pdbase, pdm0, B, T, N, D, eps);
  });
}

}  // namespace

void bind_mdi(nb::module_& m) {
  m.def("mdi_fwd", &mdi_fwd, nb::arg("v"), nb::arg("mod"), nb::arg("base"), nb::arg("m0").none(), nb::arg("m"),
        nb::arg("eps"), nb::arg("stream") = 0, "m <- mdi(v, mod, base, m0, eps)");
  m.def("mdi_bwd", &mdi_bwd, nb::arg("grad"), nb::arg("v"), nb::arg("mod"), nb::arg("base"), nb::arg("m0").none(),
        nb::arg("m"), nb::arg("dv"), nb::arg("dmod"), nb::arg("dbase"), nb::arg("dm0"), nb::arg("eps"),
        nb::arg("stream") = 0, "(dv, dmod, dbase, dm0) <- mdi backward given grad = dL/dm");
}

}  // namespace mmrec::bind
