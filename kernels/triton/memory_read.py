# memory_read: banks m_t = g_t (m_{t-1} - v_t) + v_t, g = clamp(sig(base) sig(mod), eps, 1-eps); per read head the items
#   {h_t, m_t^1..N, Ms[c(t), 1..S]} are RMS-normalised (n_i = x_i rho_i), w = softmax(<q_t, n_i> / sqrt(dh)), r_t = sum_i w_i n_i.
# backward: a_i = <G, n_i>, ds_i = w_i (a_i - sum_j w_j a_j), dq = sum_i ds_i n_i / sqrt(dh), dn_i = w_i G + ds_i q / sqrt(dh),
#   dx_i = rho_i (dn_i - n_i mean(dn_i n_i)); the banks: delta_t = dx_t + g_{t+1} delta_{t+1}, dv_t = sum_n (1 - g_t) delta_t,
#   dlog g_t = delta_t (m_{t-1} - v_t) (where unclamped), dm0 = g_0 delta_0.
# Time is cut into chunks of BLOCK_L tokens; a program owns (batch row, read head, chunk) and walks the chunk's tokens
# one by one with the head's N banks [BLOCK_N, BLOCK_DH] and its slot chunk's normalised items [BLOCK_S, BLOCK_DH] in
# registers: per token a handful of row reductions over dh, no layout changes, no tensor over time.
# (H200, bf16 B=8 T=2048 D=768, run s: forward kernel 248 us, backward kernel 1,012 us, bank_bwd_kernel 120 us, the
# op 0.46 / 2.45 ms forward / forward+backward; 1.08 / 5.98 with [16, N, dh] chunk tensors and associative scans, run
# h; 3.15-3.66 with mdi's backward kernel (901 us) in place of the bank backward, runs n and p. Slot items as tl.dot
# tiles over the chunk, run o: a 396 us forward kernel. The backward kernel takes 255 registers and 360 bytes of
# stack per thread at one warp (sm_90); the chunk map added to it left its time unchanged: 1,012 us against 1,005.)
#   chunk_transfer_kernel: per (b, chunk, channel block) the chunk's product of g and the state reached from zero;
#   carry_kernel: per (b, channel block) a scan over the chunks (blocks of BLOCK_NC chunks, carry handed on) giving
#     each chunk's entry banks (and m_last);
#   memory_read_fwd_kernel: rebuilds the banks token by token from the chunk's entry and writes r ([B, T, N, D] never
#     exists);
#   memory_read_bwd_kernel: reads the banks m (written by mdi's forward for the backward alone and freed with it:
#     bank_bwd_kernel needs m_{t-1} in reverse order) and writes dq, dh, the banks' item gradient dx_m (accumulation
#     dtype), the chunk's affine map of the banks' reverse carry (prod g, and the carry it sends left from a zero
#     carry on its right) and the slots' gradient per (chunk, slot chunk), which dms_reduce_kernel sums in a fixed
#     order. dx of a slot is linear in its dn (rho, n fixed per slot chunk), so dn is summed over the chunk's tokens
#     first and the RMS backward runs once per slot chunk.
#   carry_kernel over the maps stored last chunk first gives each chunk the carry entering from its right (and dm0);
#   bank_bwd_kernel: per (b, chunk, channel block) a walk over the chunk's tokens from the last: dv, dmod per token
#     (partial per channel block), dbase per chunk.
import triton
import triton.language as tl

from .scan import combine


@triton.jit
def _sig(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _row(x, i, BLOCK_L: tl.constexpr):
    """Row i of x [BLOCK_L, R, C] as [R, C]."""
    return tl.sum(tl.where((tl.arange(0, BLOCK_L) == i)[:, None, None], x, 0.0), 0)


@triton.jit
def _gate(mod_ptr, sb, bi, t, N, T, n, n_ok, lo, hi, pad, ACC: tl.constexpr):
    """g at tokens t [BLOCK_L] for the channels of sb [BLOCK_N, BLOCK_C]: [BLOCK_L, BLOCK_N, BLOCK_C]; `pad` where
    t is outside [0, T). Also returns x = sig(base) sig(mod) before the clamp."""
    t_ok = (t >= 0) & (t < T)
    mod = tl.load(mod_ptr + (bi * T + t[:, None]) * N + n[None, :], mask=t_ok[:, None] & n_ok[None, :],
                  other=0.0).to(ACC)                                                     # [BLOCK_L, BLOCK_N]
    x = sb[None, :, :] * _sig(mod)[:, :, None]
    g = tl.where(t_ok[:, None, None], tl.minimum(tl.maximum(x, lo), hi), pad)
    return g, x


@triton.jit
def _bank_tile(base_ptr, bounds_ptr, col0, N, D, ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """The [BLOCK_N, BLOCK_C] tile of the banks at channels col0.. : its columns, masks, offsets into an [N, D] row,
    the clamp bounds (bounds: [eps, 1 - eps, ...]) and sig(base) on the tile."""
    cols = col0 + tl.arange(0, BLOCK_C)
    c_ok = cols < D
    n = tl.arange(0, BLOCK_N)
    n_ok = n < N
    nd_ok = n_ok[:, None] & c_ok[None, :]
    nd_offs = n[:, None] * D + cols[None, :]
    lo, hi = tl.load(bounds_ptr).to(ACC), tl.load(bounds_ptr + 1).to(ACC)
    sb = _sig(tl.load(base_ptr + nd_offs, mask=nd_ok, other=0.0).to(ACC))
    return cols, c_ok, n, n_ok, nd_ok, nd_offs, lo, hi, sb


@triton.jit
def chunk_transfer_kernel(v_ptr, mod_ptr, base_ptr, bounds_ptr, ta_ptr, tx_ptr, T, N, D, NC,
                          ACC: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """v: [B, T, D]; mod: [B, T, N]; base: [N, D]; bounds: [eps, 1 - eps]; ta, tx: [B, NC, N, D] (accumulation dtype):
    the chunk's prod of g and its end state from a zero entry. Grid: (B * NC, cdiv(D, BLOCK_C))."""
    bi = (tl.program_id(0) // NC).to(tl.int64)
    c = tl.program_id(0) % NC
    cols, c_ok, n, n_ok, nd_ok, nd_offs, lo, hi, sb = _bank_tile(base_ptr, bounds_ptr, tl.program_id(1) * BLOCK_C, N,
                                                                 D, ACC, BLOCK_N, BLOCK_C)
    t = c * BLOCK_L + tl.arange(0, BLOCK_L)
    g, _ = _gate(mod_ptr, sb, bi, t, N, T, n, n_ok, lo, hi, 1.0, ACC)                   # [BLOCK_L, BLOCK_N, BLOCK_C]
    v = tl.load(v_ptr + (bi * T + t[:, None]) * D + cols[None, :], mask=(t < T)[:, None] & c_ok[None, :],
                other=0.0).to(ACC)                                                       # [BLOCK_L, BLOCK_C]
    g_cum, x_cum = tl.associative_scan((g, (1.0 - g) * v[:, None, :]), 0, combine)
    out = (bi * NC + c) * N * D + nd_offs
    tl.store(ta_ptr + out, _row(g_cum, BLOCK_L - 1, BLOCK_L), mask=nd_ok)
    tl.store(tx_ptr + out, _row(x_cum, BLOCK_L - 1, BLOCK_L), mask=nd_ok)


@triton.jit
def carry_kernel(ta_ptr, tx_ptr, init_ptr, entry_ptr, last_ptr, NC, ND, HAS_INIT: tl.constexpr,
                 ACC: tl.constexpr, BLOCK_NC: tl.constexpr, BLOCK: tl.constexpr):
    """ta, tx, entry: [B, NC, N * D] (accumulation dtype); init, last: [B, N * D]. entry[c] = the state before
    chunk c, state <- ta[c] state + tx[c]: a scan over BLOCK_NC chunks at a time, the carry handed from block to
    block; last = the state after the last chunk. Grid: (B, cdiv(N * D, BLOCK))."""
    bi = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < ND
    rows = tl.arange(0, BLOCK_NC)
    if HAS_INIT:
        state = tl.load(init_ptr + bi * ND + offs, mask=ok, other=0.0).to(ACC)
    else:
        state = tl.zeros([BLOCK], ACC)
    for blk in range(tl.cdiv(NC, BLOCK_NC)):
        c = blk * BLOCK_NC + rows
        c_ok = c < NC
        at = (bi * NC + c[:, None]) * ND + offs[None, :]                                   # [BLOCK_NC, BLOCK]
        m2 = c_ok[:, None] & ok[None, :]
        a = tl.load(ta_ptr + at, mask=m2, other=1.0)
        x = tl.load(tx_ptr + at, mask=m2, other=0.0)
        a_cum, x_cum = tl.associative_scan((a, x), 0, combine)
        after = a_cum * state[None, :] + x_cum            # the state after chunk c
        tl.store(entry_ptr + at + ND, after, mask=m2 & (c + 1 < NC)[:, None] & (rows < BLOCK_NC - 1)[:, None])
        tl.store(entry_ptr + (bi * NC + blk * BLOCK_NC) * ND + offs, state, mask=ok)
        state = tl.sum(tl.where((rows == BLOCK_NC - 1)[:, None], after, 0.0), 0)
    tl.store(last_ptr + bi * ND + offs, state.to(last_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _rms_rows(x, dh, ne):
    """x: [R, BLOCK_DH] zero-padded -> (x rho, rho [R]), rho = rsqrt(mean over the dh real columns + ne)."""
    rho = 1.0 / tl.sqrt(tl.sum(x * x, 1) / dh + ne)
    return x * rho[:, None], rho


@triton.jit
def _slot_tile(Ms_ptr, bi, sc, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC: tl.constexpr):
    """Slot chunk sc of the head, Ms[bi, sc, :, cols] normalised: [BLOCK_S, BLOCK_DH] (zero past S and dh) and its
    rho [BLOCK_S]."""
    ok = s_ok[:, None] & d_ok[None, :] & (sc < NS)
    x = tl.load(Ms_ptr + ((bi * NS + sc) * S + j[:, None]) * D + cols[None, :], mask=ok, other=0.0).to(ACC)
    return _rms_rows(x, dh, ne)


@triton.jit
def _weights(q, nh, nm, nM, n_ok, s_ok, scale):
    """Softmax weights of one token over its items: w_h (scalar), w_m [BLOCK_N], w_M [BLOCK_S] (zero when padded)."""
    s_h = tl.sum(nh * q, 0) * scale
    s_m = tl.where(n_ok, tl.sum(nm * q[None, :], 1) * scale, float("-inf"))
    s_M = tl.where(s_ok, tl.sum(nM * q[None, :], 1) * scale, float("-inf"))
    mx = tl.maximum(s_h, tl.maximum(tl.max(s_m, 0), tl.max(s_M, 0)))
    e_h, e_m, e_M = tl.exp(s_h - mx), tl.exp(s_m - mx), tl.exp(s_M - mx)
    inv = 1.0 / (e_h + tl.sum(e_m, 0) + tl.sum(e_M, 0))
    return e_h * inv, e_m * inv, e_M * inv


@triton.jit
def memory_read_fwd_kernel(q_ptr, h_ptr, v_ptr, mod_ptr, base_ptr, Ms_ptr, entry_ptr, r_ptr, consts_ptr,
                           T, N, D, NS, S, H, k0, C, NC, ACC: tl.constexpr,
                           BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr,
                           BLOCK_DH: tl.constexpr):
    """q, h, v, r: [B, T, D]; mod: [B, T, N]; base: [N, D]; Ms: [B, NS, S, D]; entry: [B, NC, N, D] (the banks
    before each chunk, accumulation dtype); consts: [eps, 1 - eps, norm_eps, 1 / sqrt(dh)]. Grid: (B * H, NC)."""
    pid = tl.program_id(0)
    c = tl.program_id(1)
    bi = (pid // H).to(tl.int64)
    dh = D // H
    dd = tl.arange(0, BLOCK_DH)
    cols = (pid % H) * dh + dd
    d_ok = dd < dh
    n = tl.arange(0, BLOCK_N)
    n_ok = n < N
    j = tl.arange(0, BLOCK_S)
    s_ok = j < S
    nd_ok = n_ok[:, None] & d_ok[None, :]
    nd_offs = n[:, None] * D + cols[None, :]
    lo, hi = tl.load(consts_ptr).to(ACC), tl.load(consts_ptr + 1).to(ACC)
    ne, scale = tl.load(consts_ptr + 2).to(ACC), tl.load(consts_ptr + 3).to(ACC)
    sb = _sig(tl.load(base_ptr + nd_offs, mask=nd_ok, other=0.0).to(ACC))                # [BLOCK_N, BLOCK_DH]
    m = tl.load(entry_ptr + (bi * NC + c) * N * D + nd_offs, mask=nd_ok, other=0.0)      # [BLOCK_N, BLOCK_DH]
    t0 = c * BLOCK_L
    sc_cur = (k0 + t0) // C
    nM = _slot_tile(Ms_ptr, bi, sc_cur, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC)[0]   # [BLOCK_S, BLOCK_DH]
    for t in range(t0, tl.minimum(t0 + BLOCK_L, T)):
        sc = (k0 + t) // C
        if sc != sc_cur:
            nM = _slot_tile(Ms_ptr, bi, sc, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC)[0]
            sc_cur = sc
        row = bi * T + t
        q = tl.load(q_ptr + row * D + cols, mask=d_ok, other=0.0).to(ACC)                 # [BLOCK_DH]
        x_h = tl.load(h_ptr + row * D + cols, mask=d_ok, other=0.0).to(ACC)
        v = tl.load(v_ptr + row * D + cols, mask=d_ok, other=0.0).to(ACC)
        mod = tl.load(mod_ptr + row * N + n, mask=n_ok, other=0.0).to(ACC)                # [BLOCK_N]
        g = tl.minimum(tl.maximum(sb * _sig(mod)[:, None], lo), hi)
        m = g * (m - v[None, :]) + v[None, :]
        nh = x_h / tl.sqrt(tl.sum(x_h * x_h, 0) / dh + ne)
        nm = _rms_rows(m, dh, ne)[0]
        w_h, w_m, w_M = _weights(q, nh, nm, nM, n_ok, s_ok, scale)
        r = w_h * nh + tl.sum(w_m[:, None] * nm, 0) + tl.sum(w_M[:, None] * nM, 0)
        tl.store(r_ptr + row * D + cols, r.to(r_ptr.dtype.element_ty), mask=d_ok)


@triton.jit
def _dx_rows(dn, nx, rho, dh):
    """dx = rho (dn - n mean(dn n)) for items [R, BLOCK_DH] with their dn [R, BLOCK_DH] and rho [R]."""
    return rho[:, None] * (dn - nx * (tl.sum(dn * nx, 1) / dh)[:, None])


@triton.jit
def memory_read_bwd_kernel(grad_r_ptr, grad_m_ptr, q_ptr, h_ptr, mod_ptr, base_ptr, m_ptr, Ms_ptr, consts_ptr,
                           dq_ptr, dh_ptr, dxm_ptr, ta_ptr, tx_ptr, dms_part_ptr, T, N, D, NS, S, H, k0, C, NC, J,
                           HAS_GM: tl.constexpr, ACC: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_S: tl.constexpr, BLOCK_DH: tl.constexpr):
    """grad_r, q, h, dq, dh: [B, T, D]; grad_m: [B, N, D] (dL/dm_last); mod: [B, T, N]; base: [N, D]; m: [B, T, N,
    D]; dxm: [B, T, N, D], ta, tx: [B, NC, N, D] and dms_part: [B, NC, J, S, D] (the chunk's dMs for slot chunks
    c(t0) + 0..J-1; those it reads are written) in the accumulation dtype. dxm at T - 1 includes grad_m. The banks'
    carry c_t = g_t delta_t (delta_t = dx_t + c_{t+1}) crosses the chunk as c_t0 = ta c_t1 + tx, ta = prod g and
    tx = sum_s (prod_{u<=s} g_u) dx_s over the chunk: both stored at chunk NC - 1 - c, so that carry_kernel, which
    scans forward, runs the carry from the end of time. Grid: (B * H, NC)."""
    pid = tl.program_id(0)
    c = tl.program_id(1)
    bi = (pid // H).to(tl.int64)
    dh = D // H
    dd = tl.arange(0, BLOCK_DH)
    cols = (pid % H) * dh + dd
    d_ok = dd < dh
    n = tl.arange(0, BLOCK_N)
    n_ok = n < N
    j = tl.arange(0, BLOCK_S)
    s_ok = j < S
    nd_ok = n_ok[:, None] & d_ok[None, :]
    sd_ok = s_ok[:, None] & d_ok[None, :]
    nd_offs = n[:, None] * D + cols[None, :]
    lo, hi = tl.load(consts_ptr).to(ACC), tl.load(consts_ptr + 1).to(ACC)
    ne, scale = tl.load(consts_ptr + 2).to(ACC), tl.load(consts_ptr + 3).to(ACC)
    sb = _sig(tl.load(base_ptr + nd_offs, mask=nd_ok, other=0.0).to(ACC))                # [BLOCK_N, BLOCK_DH]
    g_prod = tl.full([BLOCK_N, BLOCK_DH], 1.0, ACC)                # prod of g over the chunk's tokens so far
    carry_in = tl.zeros([BLOCK_N, BLOCK_DH], ACC)                  # the carry the chunk sends to its left
    t0 = c * BLOCK_L
    t1 = tl.minimum(t0 + BLOCK_L, T)
    gm = tl.zeros([BLOCK_N, BLOCK_DH], ACC)
    if HAS_GM:
        gm = tl.load(grad_m_ptr + bi * N * D + nd_offs, mask=nd_ok & (t1 == T), other=0.0).to(ACC)
    sc0 = (k0 + t0) // C
    sc_cur = sc0
    nM, rho_M = _slot_tile(Ms_ptr, bi, sc_cur, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC)
    dn_M = tl.zeros([BLOCK_S, BLOCK_DH], ACC)                   # sum over the slot chunk's tokens of dn
    part = dms_part_ptr + ((bi * NC + c) * J * S + j[:, None]) * D + cols[None, :]        # [BLOCK_S, BLOCK_DH]
    for t in range(t0, t1):
        sc = (k0 + t) // C
        if sc != sc_cur:
            tl.store(part + (sc_cur - sc0) * S * D, _dx_rows(dn_M, nM, rho_M, dh), mask=sd_ok)
            nM, rho_M = _slot_tile(Ms_ptr, bi, sc, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC)
            dn_M = tl.zeros([BLOCK_S, BLOCK_DH], ACC)
            sc_cur = sc
        row = bi * T + t
        q = tl.load(q_ptr + row * D + cols, mask=d_ok, other=0.0).to(ACC)                 # [BLOCK_DH]
        x_h = tl.load(h_ptr + row * D + cols, mask=d_ok, other=0.0).to(ACC)
        G = tl.load(grad_r_ptr + row * D + cols, mask=d_ok, other=0.0).to(ACC)
        m = tl.load(m_ptr + row * N * D + nd_offs, mask=nd_ok, other=0.0).to(ACC)         # [BLOCK_N, BLOCK_DH]
        rho_h = 1.0 / tl.sqrt(tl.sum(x_h * x_h, 0) / dh + ne)
        nh = x_h * rho_h
        nm, rho_m = _rms_rows(m, dh, ne)
        w_h, w_m, w_M = _weights(q, nh, nm, nM, n_ok, s_ok, scale)
        a_h = tl.sum(nh * G, 0)
        a_m = tl.sum(nm * G[None, :], 1)                                                  # [BLOCK_N]
        a_M = tl.sum(nM * G[None, :], 1)                                                  # [BLOCK_S]
        abar = w_h * a_h + tl.sum(w_m * a_m, 0) + tl.sum(w_M * a_M, 0)
        ds_h = w_h * (a_h - abar) * scale
        ds_m = w_m * (a_m - abar) * scale
        ds_M = w_M * (a_M - abar) * scale
        dq = ds_h * nh + tl.sum(ds_m[:, None] * nm, 0) + tl.sum(ds_M[:, None] * nM, 0)
        dn_h = w_h * G + ds_h * q
        dx_h = rho_h * (dn_h - nh * (tl.sum(dn_h * nh, 0) / dh))
        dx_m = _dx_rows(w_m[:, None] * G[None, :] + ds_m[:, None] * q[None, :], nm, rho_m, dh)
        dx_m += tl.where(t == T - 1, gm, 0.0)
        dn_M += w_M[:, None] * G[None, :] + ds_M[:, None] * q[None, :]
        mod = tl.load(mod_ptr + row * N + n, mask=n_ok, other=0.0).to(ACC)                # [BLOCK_N]
        g_prod *= tl.minimum(tl.maximum(sb * _sig(mod)[:, None], lo), hi)
        carry_in += g_prod * dx_m
        tl.store(dq_ptr + row * D + cols, dq.to(dq_ptr.dtype.element_ty), mask=d_ok)
        tl.store(dh_ptr + row * D + cols, dx_h.to(dh_ptr.dtype.element_ty), mask=d_ok)
        tl.store(dxm_ptr + row * N * D + nd_offs, dx_m, mask=nd_ok)
    tl.store(part + (sc_cur - sc0) * S * D, _dx_rows(dn_M, nM, rho_M, dh), mask=sd_ok)
    rev = (bi * NC + NC - 1 - c) * N * D + nd_offs
    tl.store(ta_ptr + rev, g_prod, mask=nd_ok)
    tl.store(tx_ptr + rev, carry_in, mask=nd_ok)


@triton.jit
def bank_bwd_kernel(dxm_ptr, v_ptr, mod_ptr, base_ptr, m0_ptr, m_ptr, consts_ptr, carry_ptr, dv_ptr, dmod_part_ptr,
                    dbase_part_ptr, B, T, N, D, NC, HAS_M0: tl.constexpr, ACC: tl.constexpr, BLOCK_L: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """dxm, m: [B, T, N, D]; v, dv: [B, T, D]; mod: [B, T, N]; base: [N, D]; m0: [B, N, D]; carry: [B, NC, N, D],
    the carry entering chunk NC - 1 - c from its right (carry_kernel's entries); dmod_part: [cdiv(D, BLOCK_C), B, T,
    N] and dbase_part: [B, NC, N, D] in the accumulation dtype. Walks the chunk's tokens from the last:
    delta_t = dx_t + c_{t+1}, dv_t = sum_n delta_t (1 - g_t), dlog g_t = delta_t (m_{t-1} - v_t) x_t where
    x = sig(base) sig(mod) is not clamped (else 0), c_t = g_t delta_t. Grid: (B * cdiv(D, BLOCK_C), NC)."""
    nblk = tl.cdiv(D, BLOCK_C)
    blk = tl.program_id(0) % nblk
    bi = (tl.program_id(0) // nblk).to(tl.int64)
    c = tl.program_id(1)
    cols, c_ok, n, n_ok, nd_ok, nd_offs, lo, hi, sb = _bank_tile(base_ptr, consts_ptr, blk * BLOCK_C, N, D, ACC,
                                                                 BLOCK_N, BLOCK_C)
    carry = tl.load(carry_ptr + (bi * NC + NC - 1 - c) * N * D + nd_offs, mask=nd_ok, other=0.0)
    dbase = tl.zeros([BLOCK_N, BLOCK_C], ACC)
    t0 = c * BLOCK_L
    for i in range(0, tl.minimum(BLOCK_L, T - t0)):
        t = tl.minimum(t0 + BLOCK_L, T) - 1 - i
        row = bi * T + t
        delta = tl.load(dxm_ptr + row * N * D + nd_offs, mask=nd_ok, other=0.0) + carry     # [BLOCK_N, BLOCK_C]
        sm = _sig(tl.load(mod_ptr + row * N + n, mask=n_ok, other=0.0).to(ACC))            # [BLOCK_N]
        x = sb * sm[:, None]
        g = tl.minimum(tl.maximum(x, lo), hi)
        v = tl.load(v_ptr + row * D + cols, mask=c_ok, other=0.0).to(ACC)                 # [BLOCK_C]
        m_prev = tl.load(m_ptr + (row - 1) * N * D + nd_offs, mask=nd_ok & (t > 0), other=0.0).to(ACC)
        if HAS_M0:
            m_prev += tl.load(m0_ptr + bi * N * D + nd_offs, mask=nd_ok & (t == 0), other=0.0).to(ACC)
        tl.store(dv_ptr + row * D + cols, tl.sum(delta * (1.0 - g), 0).to(dv_ptr.dtype.element_ty), mask=c_ok)
        dlog = tl.where((x >= lo) & (x <= hi) & nd_ok, delta * (m_prev - v[None, :]) * x, 0.0)
        tl.store(dmod_part_ptr + ((blk * B + bi) * T + t) * N + n, tl.sum(dlog, 1) * (1.0 - sm), mask=n_ok)
        dbase += dlog
        carry = g * delta
    tl.store(dbase_part_ptr + (bi * NC + c) * N * D + nd_offs, dbase * (1.0 - sb), mask=nd_ok)


@triton.jit
def dms_reduce_kernel(part_ptr, dMs_ptr, T, S, D, NS, NC, J, k0, C, BLOCK_L, BLOCK: tl.constexpr):
    """part: [B, NC, J, S, D] (accumulation dtype) -> dMs: [B, NS, S, D]; slot chunk sc sums, in chunk order, the
    parts of the time chunks whose tokens read it (zero when none does). Grid: (B * NS, cdiv(S * D, BLOCK))."""
    bi = (tl.program_id(0) // NS).to(tl.int64)
    sc = tl.program_id(0) % NS
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < S * D
    t_lo = tl.maximum(sc * C - k0, 0)
    t_hi = tl.minimum((sc + 1) * C - k0, T)
    c_lo = t_lo // BLOCK_L
    c_hi = tl.where(t_hi > t_lo, (t_hi - 1) // BLOCK_L + 1, c_lo)
    acc = tl.zeros([BLOCK], part_ptr.dtype.element_ty)
    for c in range(c_lo, c_hi):
        jj = sc - (k0 + c * BLOCK_L) // C
        acc += tl.load(part_ptr + ((bi * NC + c) * J + jj) * S * D + offs, mask=ok, other=0.0)
    tl.store(dMs_ptr + (bi * NS + sc) * S * D + offs, acc.to(dMs_ptr.dtype.element_ty), mask=ok)
