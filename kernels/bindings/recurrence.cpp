// recurrence: h[B, T, D] <- z, gamma [B, T, D], w [H, d, d] (D = H d), bias [D], h0 [B, D]
// (kernels/cpu/recurrence.cpp, kernels/cuda/recurrence.cu).
#include "bindings/common.h"
#include "cpu/recurrence.h"

namespace mmrec::bind {

namespace {

void recurrence_fwd(const Array& z, const Array& gamma, const Array& w, const OptArray& bias, const OptArray& h0,
                    const Array& h, uintptr_t stream) {
  const Call c(z, "z");
  const int64_t B = c.size(z, "z", 3, 0), T = z.shape(1), H = c.size(w, "w", 3, 0), d = w.shape(1), D = H * d;
  const In pz = c.in(z, "z", {B, T, D}), pg = c.in(gamma, "gamma", {B, T, D}), pw = c.in(w, "w", {H, d, d}),
           pb = c.in(bias, "bias", {D}), ph0 = c.in(h0, "h0", {B, D});
  const Out ph = c.out(h, "h", {B, T, D});
  if (c.dev == Dev::cuda)
    return MMREC_RUN_CUDA("recurrence", cuda::recurrence_fwd(c.dt, pz.p, pg.p, pw.p, pb.p, ph0.p, ph.p, B, T, H, d,
                                                             as_stream(stream)));
  run_cpu(c.dt, [&](auto t) { cpu::recurrence_fwd<decltype(t)>(pz, pg, pw, pb, ph0, ph, B, T, H, d); });
}

void recurrence_bwd(const Array& grad, const Array& z, const Array& gamma, const Array& w, const OptArray& bias,
                    const OptArray& h0, const Array& h, const Array& dz, const Array& dgamma, const Array& dw,
                    const Array& dbias, const Array& dh0, uintptr_t stream) {
  const Call c(grad, "grad");
  const int64_t B = c.size(grad, "grad", 3, 0), T = grad.shape(1), H = c.size(w, "w", 3, 0), d = w.shape(1), D = H * d;
  const In pG = c.in(grad, "grad", {B, T, D}), pz = c.in(z, "z", {B, T, D}), pg = c.in(gamma, "gamma", {B, T, D}),
           pw = c.in(w, "w", {H, d, d}), pb = c.in(bias, "bias", {D}), ph0 = c.in(h0, "h0", {B, D}),
           ph = c.in(h, "h", {B, T, D});
  const Out pdz = c.out(dz, "dz", {B, T, D}), pdg = c.out(dgamma, "dgamma", {B, T, D}), pdw = c.out(dw, "dw", {H, d, d}),
            pdb = c.out(dbias, "dbias", {D}), pdh0 = c.out(dh0, "dh0", {B, D});
  if (c.dev == Dev::cuda)
    return MMREC_RUN_CUDA("recurrence backward",
                          cuda::recurrence_bwd(c.dt, pG.p, pz.p, pg.p, pw.p, pb.p, ph0.p, ph.p, pdz.p, pdg.p, pdw.p,
                                               pdb.p, pdh0.p, B, T, H, d, as_stream(stream)));
  run_cpu(c.dt, [&](auto t) {
    cpu::recurrence_bwd<decltype(t)>(pG, pz, pg, pw, pb, ph0, ph, pdz, pdg, pdw, pdb, pdh0, B, T, H, d);
  });
}

}  // namespace

void bind_recurrence(nb::module_& m) {
  m.def("recurrence_fwd", &recurrence_fwd, nb::arg("z"), nb::arg("gamma"), nb::arg("w"), nb::arg("bias").none(),
        nb::arg("h0").none(), nb::arg("h"), nb::arg("stream") = 0, "h <- recurrence(z, gamma, w, bias, h0)");
  m.def("recurrence_bwd", &recurrence_bwd, nb::arg("grad"), nb::arg("z"), nb::arg("gamma"), nb::arg("w"),
        nb::arg("bias").none(), nb::arg("h0").none(), nb::arg("h"), nb::arg("dz"), nb::arg("dgamma"), nb::arg("dw"),
        nb::arg("dbias"), nb::arg("dh0"), nb::arg("stream") = 0,
        "(dz, dgamma, dw, dbias, dh0) <- recurrence backward given grad = dL/dh");
}

}  // namespace mmrec::bind
