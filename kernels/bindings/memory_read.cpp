// memory_read: (r [B, T, D], m_last [B, N, D]) <- q, h, v [B, T, D], mod [B, T, N], base [N, D], Ms [B, L, S, D],
// m0 [B, N, D] (kernels/cpu/memory_read.cpp, kernels/cuda/memory_read.cu). Backward arguments are gradient-first.
#include "bindings/common.h"
#include "cpu/memory_read.h"
#include "cuda/memory_read.h"

namespace mmrec::bind {

namespace {

// Sizes from q [B, T, D], base [N, D] and Ms [B, L, S, D]; L is what the chunk arithmetic needs, so a shorter
// Ms fails the shape check instead of being read out of bounds.
cpu::ReadDims read_dims(const Call& c, const Array& q, const Array& base, const Array& Ms, int64_t k0, int64_t C,
                        int64_t H) {
  const int64_t B = c.size(q, "q", 3, 0), T = q.shape(1), D = q.shape(2);
  const int64_t N = c.size(base, "base", 2, 0), S = c.size(Ms, "Ms", 4, 2);
  if (C < 1 || k0 < 0 || k0 >= C) throw nb::value_error("k0, chunk_len: need 0 <= k0 < chunk_len");
  if (H < 1 || D % H) throw nb::value_error("n_heads: must divide D");
  return {B, T, N, D, (k0 + T + C - 1) / C, S, H, k0, C};
}

void memory_read_fwd(const Array& q, const Array& h, const Array& v, const Array& mod, const Array& base,
                     const Array& Ms, const OptArray& m0, const Array& r, const Array& m_last, int64_t k0,
                     int64_t chunk_len, int64_t n_heads, double eps, double norm_eps, uintptr_t stream) {
  const Call c(q, "q");
  const cpu::ReadDims d = read_dims(c, q, base, Ms, k0, chunk_len, n_heads);
  const In pq = c.in(q, "q", {d.B, d.T, d.D}), ph = c.in(h, "h", {d.B, d.T, d.D}), pv = c.in(v, "v", {d.B, d.T, d.D}),
           pmod = c.in(mod, "mod", {d.B, d.T, d.N}), pbase = c.in(base, "base", {d.N, d.D}),
           pMs = c.in(Ms, "Ms", {d.B, d.L, d.S, d.D}), pm0 = c.in(m0, "m0", {d.B, d.N, d.D});
  const Out pr = c.out(r, "r", {d.B, d.T, d.D}), pml = c.out(m_last, "m_last", {d.B, d.N, d.D});
  if (c.dev == Dev::cuda)
    return MMREC_RUN_CUDA("memory_read",
                          cuda::memory_read_fwd(c.dt, pq.p, ph.p, pv.p, pmod.p, pbase.p, pMs.p, pm0.p, pr.p, pml.p, d.B,
                                                d.T, d.N, d.D, d.L, d.S, d.H, d.k0, d.C, eps, norm_eps,
                                                as_stream(stream)));
  run_cpu(c.dt, [&](auto t) {
    cpu::memory_read_fwd<decltype(t)>(pq, ph, pv, pmod, pbase, pMs, pm0, pr, pml, d, eps, norm_eps);
  });
}

void memory_read_bwd(const Array& grad_r, const Array& grad_m, const Array& q, const Array& h, const Array& v,
                     const Array& mod, const Array& base, const Array& Ms, const OptArray& m0, const Array& dq,
                     const Array& dh, const Array& dv, const Array& dmod, const Array& dbase, const Array& dMs,
                     const Array& dm0, int64_t k0, int64_t chunk_len, int64_t n_heads, double eps, double norm_eps,
                     uintptr_t stream) {
  const Call c(grad_r, "grad_r");
  const cpu::ReadDims d = read_dims(c, q, base, Ms, k0, chunk_len, n_heads);
  const In pgr = c.in(grad_r, "grad_r", {d.B, d.T, d.D}), pgm = c.in(grad_m, "grad_m", {d.B, d.N, d.D}),
           pq = c.in(q, "q", {d.B, d.T, d.D}), ph = c.in(h, "h", {d.B, d.T, d.D}), pv = c.in(v, "v", {d.B, d.T, d.D}),
           pmod = c.in(mod, "mod", {d.B, d.T, d.N}), pbase = c.in(base, "base", {d.N, d.D}),
           pMs = c.in(Ms, "Ms", {d.B, d.L, d.S, d.D}), pm0 = c.in(m0, "m0", {d.B, d.N, d.D});
  const Out pdq = c.out(dq, "dq", {d.B, d.T, d.D}), pdh = c.out(dh, "dh", {d.B, d.T, d.D}),
            pdv = c.out(dv, "dv", {d.B, d.T, d.D}), pdmod = c.out(dmod, "dmod", {d.B, d.T, d.N}),
            pdbase = c.out(dbase, "dbase", {d.N, d.D}), pdMs = c.out(dMs, "dMs", {d.B, d.L, d.S, d.D}),
            pdm0 = c.out(dm0, "dm0", {d.B, d.N, d.D});
  if (c.dev == Dev::cuda)
    return MMREC_RUN_CUDA("memory_read backward",
                          cuda::memory_read_bwd(c.dt, pgr.p, pgm.p, pq.p, ph.p, pv.p, pmod.p, pbase.p, pMs.p, pm0.p,
                                                pdq.p, pdh.p, pdv.p, pdmod.p, pdbase.p, pdMs.p, pdm0.p, d.B, d.T, d.N,
                                                d.D, d.L, d.S, d.H, d.k0, d.C, eps, norm_eps, as_stream(stream)));
  run_cpu(c.dt, [&](auto t) {
    cpu::memory_read_bwd<decltype(t)>(pgr, pgm, pq, ph, pv, pmod, pbase, pMs, pm0, pdq, pdh, pdv, pdmod, pdbase, pdMs,
                                      pdm0, d, eps, norm_eps);
  });
}

}  // namespace

void bind_memory_read(nb::module_& m) {
  m.def("memory_read_fwd", &memory_read_fwd, nb::arg("q"), nb::arg("h"), nb::arg("v"), nb::arg("mod"),
        nb::arg("base"), nb::arg("Ms"), nb::arg("m0").none(), nb::arg("r"), nb::arg("m_last"), nb::arg("k0"),
        nb::arg("chunk_len"), nb::arg("n_heads"), nb::arg("eps"), nb::arg("norm_eps"), nb::arg("stream") = 0,
        "(r, m_last) <- memory_read(q, h, v, mod, base, Ms, m0, k0, chunk_len, n_heads, eps, norm_eps)");
  m.def("memory_read_bwd", &memory_read_bwd, nb::arg("grad_r"), nb::arg("grad_m"), nb::arg("q"), nb::arg("h"),
        nb::arg("v"), nb::arg("mod"), nb::arg("base"), nb::arg("Ms"), nb::arg("m0").none(), nb::arg("dq"),
        nb::arg("dh"), nb::arg("dv"), nb::arg("dmod"), nb::arg("dbase"), nb::arg("dMs"), nb::arg("dm0"),
        nb::arg("k0"), nb::arg("chunk_len"), nb::arg("n_heads"), nb::arg("eps"), nb::arg("norm_eps"),
        nb::arg("stream") = 0, "(dq, dh, dv, dmod, dbase, dMs, dm0) <- memory_read backward given (dL/dr, dL/dm_last)");
}

}  // namespace mmrec::bind
