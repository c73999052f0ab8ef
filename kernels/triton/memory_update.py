# memory_update: w_c = softmax_j(<M_c[j], k_c> / sqrt(D)); a_c = s_c w_c; M_{c+1}[j] = M_c[j] + a_c[j] (v_c - M_c[j]).
# backward (reverse over chunks, Dl = dL/dM_{c+1}): da_j = <Dl_j, v_c - M_c[j]>; ds_c = <da, w>;
#   dl = w (s da - <s da, w>) / sqrt(D); dM_c = G_c + (1 - a) Dl + dl k_c^T; dv_c = a^T Dl; dk_c = M_c^T dl.
# One program per batch row walks the chunks in order; per chunk it makes two passes over D in BLOCK_D tiles of
# its [S, D] state (pass 1: the slot logits, a reduction over D; pass 2: the update, or in the backward the
# dM / dv / dk products), so any D fits. The state it re-reads lives in a float32 work buffer [B, S, D]
# (L2-resident) in the accumulation dtype; a barrier separates the passes.
import triton
import triton.language as tl


@triton.jit
def memory_update_fwd_kernel(m0_ptr, key_ptr, value_ptr, strength_ptr, ms_ptr, work_ptr, scale_ptr, NC, S, D,
                             ACC: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """M0, work: [B, S, D]; key, value: [B, NC, D]; strength: [B, NC]; Ms: [B, NC + 1, S, D]."""
    bi = tl.program_id(0).to(tl.int64)
    scale = tl.load(scale_ptr)  # 1 / sqrt(D) in the accumulation dtype
    j = tl.arange(0, BLOCK_S)  # [BLOCK_S] slots
    j_ok = j < S
    state = bi * S * D + j[:, None] * D  # [BLOCK_S, 1] row starts in M0 / work
    out = bi * (NC + 1) * S * D + j[:, None] * D  # rows of Ms[b, 0]
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        ok = j_ok[:, None] & (cols < D)[None, :]
        m = tl.load(m0_ptr + state + cols[None, :], mask=ok, other=0.0)
        tl.store(ms_ptr + out + cols[None, :], m, mask=ok)
        tl.store(work_ptr + state + cols[None, :], m.to(ACC), mask=ok)
    for c in range(NC):
        tl.debug_barrier()
        kv = (bi * NC + c) * D
        logits = tl.zeros([BLOCK_S], ACC)
        for d0 in range(0, D, BLOCK_D):
            cols = d0 + tl.arange(0, BLOCK_D)
            ok = j_ok[:, None] & (cols < D)[None, :]
            m = tl.load(work_ptr + state + cols[None, :], mask=ok, other=0.0)
            k = tl.load(key_ptr + kv + cols, mask=cols < D, other=0.0).to(ACC)
            logits += tl.sum(m * k[None, :], 1)
        logits = tl.where(j_ok, logits * scale, float("-inf"))
        w = tl.exp(logits - tl.max(logits, 0))
        w = w / tl.sum(w, 0)
        alpha = tl.load(strength_ptr + bi * NC + c).to(ACC) * w  # [BLOCK_S]
        tl.debug_barrier()
        out += S * D
        for d0 in range(0, D, BLOCK_D):
            cols = d0 + tl.arange(0, BLOCK_D)
            ok = j_ok[:, None] & (cols < D)[None, :]
            m = tl.load(work_ptr + state + cols[None, :], mask=ok, other=0.0)
            v = tl.load(value_ptr + kv + cols, mask=cols < D, other=0.0).to(ACC)
            m = m + alpha[:, None] * (v[None, :] - m)
            tl.store(work_ptr + state + cols[None, :], m, mask=ok)
            tl.store(ms_ptr + out + cols[None, :], m.to(ms_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _chunk_tile(ms_ptr, work_ptr, key_ptr, at_c, state, kv, j_ok, d0, D, ACC: tl.constexpr, BLOCK_D: tl.constexpr):
    """Columns [d0, d0 + BLOCK_D) of chunk c in the backward: their indices and mask, M_c [BLOCK_S, BLOCK_D],
    dL/dM_{c+1} (the work buffer, same tile) and key_c [BLOCK_D]."""
    cols = d0 + tl.arange(0, BLOCK_D)
    ok = j_ok[:, None] & (cols < D)[None, :]
    m = tl.load(ms_ptr + at_c + cols[None, :], mask=ok, other=0.0).to(ACC)
    dnext = tl.load(work_ptr + state + cols[None, :], mask=ok, other=0.0)
    k = tl.load(key_ptr + kv + cols, mask=cols < D, other=0.0).to(ACC)
    return cols, ok, m, dnext, k


@triton.jit
def memory_update_bwd_kernel(grad_ptr, key_ptr, value_ptr, strength_ptr, ms_ptr, work_ptr,
                             dm0_ptr, dkey_ptr, dvalue_ptr, dstrength_ptr, scale_ptr, NC, S, D,
                             ACC: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr):
    """grad, Ms: [B, NC + 1, S, D]; work: [B, S, D] holds dL/dM_{c+1}; dM0: [B, S, D]; dkey, dvalue: [B, NC, D]."""
    bi = tl.program_id(0).to(tl.int64)
    scale = tl.load(scale_ptr)  # 1 / sqrt(D) in the accumulation dtype
    j = tl.arange(0, BLOCK_S)
    j_ok = j < S
    state = bi * S * D + j[:, None] * D
    rows = bi * (NC + 1) * S * D + j[:, None] * D  # rows of Ms[b, 0] / grad[b, 0]
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        ok = j_ok[:, None] & (cols < D)[None, :]
        g = tl.load(grad_ptr + rows + NC * S * D + cols[None, :], mask=ok, other=0.0).to(ACC)
        tl.store(work_ptr + state + cols[None, :], g, mask=ok)
    for step in range(NC):
        c = NC - 1 - step
        tl.debug_barrier()
        kv = (bi * NC + c) * D
        at_c = rows + c * S * D
        logits = tl.zeros([BLOCK_S], ACC)
        dalpha = tl.zeros([BLOCK_S], ACC)
        for d0 in range(0, D, BLOCK_D):
            cols, ok, m, dnext, k = _chunk_tile(ms_ptr, work_ptr, key_ptr, at_c, state, kv, j_ok, d0, D, ACC, BLOCK_D)
            v = tl.load(value_ptr + kv + cols, mask=cols < D, other=0.0).to(ACC)
            logits += tl.sum(m * k[None, :], 1)
            dalpha += tl.sum(dnext * (v[None, :] - m), 1)
        logits = tl.where(j_ok, logits * scale, float("-inf"))
        w = tl.exp(logits - tl.max(logits, 0))
        w = w / tl.sum(w, 0)
        s = tl.load(strength_ptr + bi * NC + c).to(ACC)
        alpha = s * w
        tl.store(dstrength_ptr + bi * NC + c, tl.sum(dalpha * w, 0).to(dstrength_ptr.dtype.element_ty))
        dw = s * dalpha
        dlogit = w * (dw - tl.sum(dw * w, 0)) * scale  # [BLOCK_S], d/d<M_c[j], k_c>
        tl.debug_barrier()
        for d0 in range(0, D, BLOCK_D):
            cols, ok, m, dnext, k = _chunk_tile(ms_ptr, work_ptr, key_ptr, at_c, state, kv, j_ok, d0, D, ACC, BLOCK_D)
            g = tl.load(grad_ptr + at_c + cols[None, :], mask=ok, other=0.0).to(ACC)
            dm = g + (1.0 - alpha)[:, None] * dnext + dlogit[:, None] * k[None, :]
            tl.store(work_ptr + state + cols[None, :], dm, mask=ok)
            tl.store(dvalue_ptr + kv + cols, tl.sum(alpha[:, None] * dnext, 0).to(dvalue_ptr.dtype.element_ty),
                     mask=cols < D)
            tl.store(dkey_ptr + kv + cols, tl.sum(dlogit[:, None] * m, 0).to(dkey_ptr.dtype.element_ty),
                     mask=cols < D)
    tl.debug_barrier()
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        ok = j_ok[:, None] & (cols < D)[None, :]
        dm = tl.load(work_ptr + state + cols[None, :], mask=ok, other=0.0)
        tl.store(dm0_ptr + state + cols[None, :], dm.to(dm0_ptr.dtype.element_ty), mask=ok)
