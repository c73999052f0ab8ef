// scan: h[B, T, D] <- a, b [B, T, D], h0 [B, D] (kernels/cpu/scan.cpp, kernels/cuda/scan.cu).
#include "bindings/common.h"
#include "cpu/scan.h"

namespace mmrec::bind {

namespace {

void scan_fwd(const Array& a, const Array& b, const OptArray& h0, const Array& h, bool reverse, uintptr_t stream) {
  const Call c(a, "a");
  const int64_t B = c.size(a, "a", 3, 0), T = a.shape(1), D = a.shape(2);
  const In pa = c.in(a, "a", {B, T, D}), pb = c.in(b, "b", {B, T, D}), ph0 = c.in(h0, "h0", {B, D});
  const Out ph = c.out(h, "h", {B, T, D});
  if (c.dev == Dev::cuda) return MMREC_RUN_CUDA("scan", cuda::scan_fwd(c.dt, pa.p, pb.p, ph0.p, ph.p, B, T, D, reverse,
                                                                      as_stream(stream)));
  run_cpu(c.dt, [&](auto t) { cpu::scan_fwd<decltype(t)>(pa, pb, ph0, ph, B, T, D, reverse); });
}

void scan_bwd(const Array& grad, const Array& a, const Array& h, const OptArray& h0, const Array& da, const Array& db,
              const Array& dh0, bool reverse, uintptr_t stream) {
  const Call c(grad, "grad");
  const int64_t B = c.size(grad, "grad", 3, 0), T = grad.shape(1), D = grad.shape(2);
  const In pg = c.in(grad, "grad", {B, T, D}), pa = c.in(a, "a", {B, T, D}), ph = c.in(h, "h", {B, T, D}),
           ph0 = c.in(h0, "h0", {B, D});
  const Out pda = c.out(da, "da", {B, T, D}), pdb = c.out(db, "db", {B, T, D}), pdh0 = c.out(dh0, "dh0", {B, D});
  if (c.dev == Dev::cuda)
    return MMREC_RUN_CUDA("scan backward", cuda::scan_bwd(c.dt, pg.p, pa.p, ph.p, ph0.p, pda.p, pdb.p, pdh0.p, B, T, D,
                                                          reverse, as_stream(stream)));
  run_cpu(c.dt, [&](auto t) { cpu::scan_bwd<decltype(t)>(pg, pa, ph, ph0, pda, pdb, pdh0, B, T, D, reverse); });
}

}  // namespace

void bind_scan(nb::module_& m) {
  m.def("scan_fwd", &scan_fwd, nb::arg("a"), nb::arg("b"), nb::arg("h0").none(), nb::arg("h"), nb::arg("reverse"),
        nb::arg("stream") = 0, "h <- scan(a, b, h0, reverse)");
  m.def("scan_bwd", &scan_bwd, nb::arg("grad"), nb::arg("a"), nb::arg("h"), nb::arg("h0").none(), nb::arg("da"),
        nb::arg("db"), nb::arg("dh0"), nb::arg("reverse"), nb::arg("stream") = 0,
        "(da, db, dh0) <- scan backward given grad = dL/dh");
}

}  // namespace mmrec::bind
