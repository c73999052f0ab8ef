# memory_read: banks m_t = g_t (m_{t-1} - v_t) + v_t, g = clamp(sig(base) sig(mod), eps, 1-eps); per read head the items
#   {h_t, m_t^1..N, Ms[c(t), 1..S]} are RMS-normalised (n_i = x_i rho_i), w = softmax(<q_t, n_i> / sqrt(dh)), r_t = sum_i w_i n_i.
# backward: a_i = <G, n_i>, ds_i = w_i (a_i - sum_j w_j a_j), dq = sum_i ds_i n_i / sqrt(dh), dn_i = w_i G + ds_i q / sqrt(dh),
#   dx_i = rho_i (dn_i - n_i mean(dn_i n_i)); the banks: delta_t = dx_t + g_{t+1} delta_{t+1}, dv_t = sum_n (1 - g_t) delta_t,
#   dlog g_t = delta_t (m_{t-1} - v_t) (where unclamped), dm0 = g_0 delta_0.
# The forward cuts time into chunks of BLOCK_L tokens; a program owns (batch row, read head, chunk) and walks the
# chunk's tokens one by one with the head's N banks [BLOCK_N, BLOCK_DH] and its slot chunk's normalised items
# [BLOCK_S, BLOCK_DH] in registers: per token a handful of row reductions over dh, no tensor over time; token t + 1's
# inputs are loaded while token t is computed. The backward reads the banks (written by mdi's forward), so its tokens
# are independent: a program takes a chunk's tokens as [L, dh] tiles, its banks as one [L, N, dh] tile, the slots
# as tl.dot tiles. dh is a kernel argument: a multiple of 16 lets Triton prove the head's
# columns aligned and load 8-element vectors (rows of [L, dh] over 8 lanes: 3 shuffles per row reduction).
# (H200, bf16 B=8 T=2048 D=768 N=4 S=16, run 2026-12-04 a: forward kernel 183 us, backward kernel 487 us,
# carry_map_kernel 64, bank_bwd_kernel 118; the op ~0.34 / 1.92 ms forward / forward+backward. Before: the
# backward as a token loop at one warp, unaligned columns, 1,012 us, 255 registers and 360 bytes of stack; the
# forward 248 us (run 2026-12-02 s). The backward at (tokens, warps) (16, 2) 1.93 ms, (32, 4) 1.92, (32, 8) 2.17,
# (64, 8) 1.92; the forward's token loop at 2 warps 0.73 ms against 0.34-0.46 at 1 (a barrier per reduction).
# The forward as token tiles (the chunk's banks [L, N, dh] by tl.associative_scan from its entry, the slots as
# tl.dot tiles; 128-228 registers, no stack) took 0.40-0.94 ms over (16, 2) .. (64, 8) against 0.30 / 0.46 for
# this loop at 16 / 32 tokens in run 2026-12-04 g, one call each. H100 run 2026-12-06 q, profiled kernels: loading
# token t + 1's inputs during token t took the forward kernel from 190 to 139 us; the backward reading the banks
# once as an [L, N, dh] tile, not per bank twice, from 470 to 293 us; the same prefetch in carry_map_kernel and
# bank_bwd_kernel changed nothing (55.7 / 114.9 us against 55.5 / 116.6) and was not kept.)
#   chunk_transfer_kernel: per (b, chunk, channel block) the chunk's product of g and the state reached from zero;
#   carry_kernel: per (b, channel block) a scan over the chunks (blocks of BLOCK_NC chunks, carry handed on) giving
#     each chunk's entry banks (and m_last);
#   memory_read_fwd_kernel: rebuilds the banks token by token from the chunk's entry and writes r ([B, T, N, D] never
#     exists);
#   memory_read_bwd_kernel: reads the banks m (mdi's forward, for the backward alone and freed with it: bank_bwd_kernel
#     needs m_{t-1}) and writes dq, dh, the banks' item gradient dx_m (the inputs' dtype) and the slots' gradient
#     per (chunk, slot chunk), which dms_reduce_kernel sums in a fixed order. dx of a slot is linear in its dn (rho,
#     n fixed per slot chunk), so dn is summed over the chunk's tokens (a tl.dot) before the RMS backward;
#   carry_map_kernel: each chunk's affine map of the banks' reverse carry (prod g, and the carry it sends left from
#     a zero carry on its right), stored last chunk first, so that carry_kernel runs the carry from the end of time
#     (and gives dm0);
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
def chunk_transfer_kernel(v_ptr, mod_ptr, base_ptr, bounds_ptr, ta_ptr, tx_ptr, T, N, D, NC, SV,
                          ACC: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """v: [B, T, D] (token stride SV); mod: [B, T, N]; base: [N, D]; bounds: [eps, 1 - eps]; ta, tx: [B, NC, N, D]
    (accumulation dtype): the chunk's prod of g and its end state from a zero entry.
    Grid: (B * NC, cdiv(D, BLOCK_C))."""
    bi = (tl.program_id(0) // NC).to(tl.int64)
    c = tl.program_id(0) % NC
    cols, c_ok, n, n_ok, nd_ok, nd_offs, lo, hi, sb = _bank_tile(base_ptr, bounds_ptr, tl.program_id(1) * BLOCK_C, N,
                                                                 D, ACC, BLOCK_N, BLOCK_C)
    t = c * BLOCK_L + tl.arange(0, BLOCK_L)
    g, _ = _gate(mod_ptr, sb, bi, t, N, T, n, n_ok, lo, hi, 1.0, ACC)                   # [BLOCK_L, BLOCK_N, BLOCK_C]
    v = tl.load(v_ptr + (bi * T + t[:, None]) * SV + cols[None, :], mask=(t < T)[:, None] & c_ok[None, :],
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
def _slot_tile(Ms_row, sc, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC: tl.constexpr):
    """Slot chunk sc of the head, Ms_row[sc, :, cols] normalised (Ms_row: the batch row's [NS, S, D]):
    [BLOCK_S, BLOCK_DH] (zero past S and dh) and its rho [BLOCK_S]."""
    ok = s_ok[:, None] & d_ok[None, :] & (sc < NS)
    x = tl.load(Ms_row + (sc * S + j[:, None]) * D + cols[None, :], mask=ok, other=0.0).to(ACC)
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
def _token_inputs(q_ptr, h_ptr, v_ptr, mod_ptr, row, ok, cols, d_ok, n, n_ok, N, D, SQ, SV, ACC: tl.constexpr):
    """q, h, v [BLOCK_DH] and mod [BLOCK_N] of one token (zeros where not ok): the forward loads token t + 1's while
    it computes token t's."""
    q = tl.load(q_ptr + row * SQ + cols, mask=d_ok & ok, other=0.0).to(ACC)
    x_h = tl.load(h_ptr + row * D + cols, mask=d_ok & ok, other=0.0).to(ACC)
    v = tl.load(v_ptr + row * SV + cols, mask=d_ok & ok, other=0.0).to(ACC)
    mod = tl.load(mod_ptr + row * N + n, mask=n_ok & ok, other=0.0).to(ACC)
    return q, x_h, v, mod


@triton.jit
def memory_read_fwd_kernel(q_ptr, h_ptr, v_ptr, mod_ptr, base_ptr, Ms_ptr, entry_ptr, r_ptr, consts_ptr,
                           T, N, D, dh, NS, S, H, k0, C, NC, SQ, SV, SMB, ACC: tl.constexpr,
                           BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr,
                           BLOCK_DH: tl.constexpr):
    """q, h, v, r: [B, T, D] (q and v with token strides SQ, SV); mod: [B, T, N]; base: [N, D]; Ms: [B, NS, S, D]
    (batch stride SMB); entry: [B, NC, N, D] (the banks before each chunk, accumulation dtype); consts: [eps, 1 - eps,
    norm_eps, 1 / sqrt(dh)]; dh = D / H (an argument, as in the backward). Grid: (B * H, NC)."""
    pid = tl.program_id(0)
    c = tl.program_id(1)
    bi = (pid // H).to(tl.int64)
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
    Ms_row = Ms_ptr + bi * SMB
    t0 = c * BLOCK_L
    sc_cur = (k0 + t0) // C
    nM = _slot_tile(Ms_row, sc_cur, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC)[0]   # [BLOCK_S, BLOCK_DH]
    t_end = tl.minimum(t0 + BLOCK_L, T)
    q, x_h, v, mod = _token_inputs(q_ptr, h_ptr, v_ptr, mod_ptr, bi * T + t0, True, cols, d_ok, n, n_ok, N, D, SQ,
                                   SV, ACC)
    for t in range(t0, t_end):
        sc = (k0 + t) // C
        if sc != sc_cur:
            nM = _slot_tile(Ms_row, sc, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC)[0]
            sc_cur = sc
        row = bi * T + t
        q_next, h_next, v_next, mod_next = _token_inputs(q_ptr, h_ptr, v_ptr, mod_ptr, row + 1, t + 1 < t_end, cols,
                                                         d_ok, n, n_ok, N, D, SQ, SV, ACC)
        g = tl.minimum(tl.maximum(sb * _sig(mod)[:, None], lo), hi)
        m = g * (m - v[None, :]) + v[None, :]
        nh = x_h / tl.sqrt(tl.sum(x_h * x_h, 0) / dh + ne)
        nm = _rms_rows(m, dh, ne)[0]
        w_h, w_m, w_M = _weights(q, nh, nm, nM, n_ok, s_ok, scale)
        r = w_h * nh + tl.sum(w_m[:, None] * nm, 0) + tl.sum(w_M[:, None] * nM, 0)
        tl.store(r_ptr + row * D + cols, r.to(r_ptr.dtype.element_ty), mask=d_ok)
        q, x_h, v, mod = q_next, h_next, v_next, mod_next


@triton.jit
def _dx_rows(dn, nx, rho, dh):
    """dx = rho (dn - n mean(dn n)) for items [R, BLOCK_DH] with their dn [R, BLOCK_DH] and rho [R]."""
    return rho[:, None] * (dn - nx * (tl.sum(dn * nx, 1) / dh)[:, None])


@triton.jit
def _chunk_slots(t, t_ok, k0, C, T, c, BLOCK_L: tl.constexpr):
    """The slot chunk of each token [L] (-1 past T), the time chunk's first slot chunk and how many it reads."""
    sc_tok = tl.where(t_ok, (k0 + t) // C, -1)
    sc0 = (k0 + c * BLOCK_L) // C
    t_last = tl.minimum(c * BLOCK_L + BLOCK_L, T) - 1
    return sc_tok, sc0, (k0 + t_last) // C - sc0 + 1


@triton.jit
def memory_read_bwd_kernel(grad_r_ptr, grad_m_ptr, q_ptr, h_ptr, m_ptr, Ms_ptr, consts_ptr, dq_ptr, dh_ptr, dxm_ptr,
                           dms_part_ptr, T, N, D, dh, NS, S, H, k0, C, NC, J, SQ, SMB, HAS_GM: tl.constexpr,
                           ACC: tl.constexpr, PREC: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_S: tl.constexpr, BLOCK_DH: tl.constexpr):
    """grad_r, q, h, dq, dh: [B, T, D] (q with token stride SQ); Ms: [B, NS, S, D] (batch stride SMB); grad_m:
    [B, N, D] (dL/dm_last); m: [B, T, N, D]; dxm [B, T, N, D] (incl. grad_m at T - 1; the inputs' dtype) and, in
    the accumulation dtype, dms_part [B, NC, J, S, D] (the chunk's dMs for slot chunks c(t0) + 0..J-1; those it
    reads are written).
    With the banks given, the tokens are independent: the program takes its BLOCK_L tokens as [L, DH] tiles, the
    banks as one [L, N, DH] tile, and the slots' scores, dq part and gradient as tl.dot tiles per slot chunk the
    tokens read. dh = D / H is an argument: when it is a multiple of 16 Triton knows
    the head's columns aligned and loads them as vectors.
    Grid: (B * H, NC)."""
    pid = tl.program_id(0)
    c = tl.program_id(1)
    bi = (pid // H).to(tl.int64)
    dd = tl.arange(0, BLOCK_DH)
    cols = (pid % H) * dh + dd
    d_ok = dd < dh
    n = tl.arange(0, BLOCK_N)
    n_ok = n < N
    j = tl.arange(0, BLOCK_S)
    s_ok = j < S
    ne, scale = tl.load(consts_ptr + 2).to(ACC), tl.load(consts_ptr + 3).to(ACC)
    t = c * BLOCK_L + tl.arange(0, BLOCK_L)
    t_ok = t < T
    td_ok = t_ok[:, None] & d_ok[None, :]
    rows = bi * T + t[:, None]                                                            # [L, 1]
    td_offs = rows * D + cols[None, :]                                                    # [L, DH]
    Q = tl.load(q_ptr + rows * SQ + cols[None, :], mask=td_ok, other=0.0).to(ACC)
    Ms_row = Ms_ptr + bi * SMB
    G = tl.load(grad_r_ptr + td_offs, mask=td_ok, other=0.0).to(ACC)
    nh, rho_h = _rms_rows(tl.load(h_ptr + td_offs, mask=td_ok, other=0.0).to(ACC), dh, ne)
    s_h = tl.sum(nh * Q, 1) * scale                                                       # [L]
    a_h = tl.sum(nh * G, 1)
    tnd_offs = (rows * N + n[None, :])[:, :, None] * D + cols[None, None, :]                # [L, N, DH]
    tnd_ok = t_ok[:, None, None] & n_ok[None, :, None] & d_ok[None, None, :]
    x_m = tl.load(m_ptr + tnd_offs, mask=tnd_ok, other=0.0).to(ACC)                      # the banks [L, N, DH]
    rho_m = 1.0 / tl.sqrt(tl.sum(x_m * x_m, 2) / dh + ne)                                 # [L, N]
    nm = x_m * rho_m[:, :, None]
    s_m = tl.where(n_ok[None, :], tl.sum(nm * Q[:, None, :], 2) * scale, float("-inf"))   # [L, N]
    a_m = tl.sum(nm * G[:, None, :], 2)
    sc_tok, sc0, n_sc = _chunk_slots(t, t_ok, k0, C, T, c, BLOCK_L)
    s_M = tl.full([BLOCK_L, BLOCK_S], float("-inf"), ACC)                                # [L, S]
    a_M = tl.zeros([BLOCK_L, BLOCK_S], ACC)
    for jj in range(n_sc):
        nM = _slot_tile(Ms_row, sc0 + jj, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC)[0]   # [S, DH]
        mine = (sc_tok == sc0 + jj)[:, None] & s_ok[None, :]
        s_M = tl.where(mine, tl.dot(Q, tl.trans(nM), input_precision=PREC) * scale, s_M)
        a_M = tl.where(mine, tl.dot(G, tl.trans(nM), input_precision=PREC), a_M)
    mx = tl.maximum(s_h, tl.maximum(tl.max(s_m, 1), tl.max(s_M, 1)))                    # [L]
    e_h, e_m, e_M = tl.exp(s_h - mx), tl.exp(s_m - mx[:, None]), tl.exp(s_M - mx[:, None])
    inv = 1.0 / (e_h + tl.sum(e_m, 1) + tl.sum(e_M, 1))
    w_h, w_m, w_M = e_h * inv, e_m * inv[:, None], e_M * inv[:, None]
    abar = w_h * a_h + tl.sum(w_m * a_m, 1) + tl.sum(w_M * a_M, 1)                       # [L]
    ds_h = w_h * (a_h - abar) * scale
    ds_m = w_m * (a_m - abar[:, None]) * scale                                            # [L, N]
    ds_M = w_M * (a_M - abar[:, None]) * scale                                            # [L, S]
    dq = ds_h[:, None] * nh                                                               # [L, DH]
    dn_h = w_h[:, None] * G + ds_h[:, None] * Q
    tl.store(dh_ptr + td_offs, _dx_rows(dn_h, nh, rho_h, dh).to(dh_ptr.dtype.element_ty), mask=td_ok)
    dq += tl.sum(ds_m[:, :, None] * nm, 1)
    dn_m = w_m[:, :, None] * G[:, None, :] + ds_m[:, :, None] * Q[:, None, :]             # [L, N, DH]
    dx_m = rho_m[:, :, None] * (dn_m - nm * (tl.sum(dn_m * nm, 2) / dh)[:, :, None])
    if HAS_GM:
        gm = tl.load(grad_m_ptr + (bi * N + n[:, None]) * D + cols[None, :], mask=n_ok[:, None] & d_ok[None, :],
                     other=0.0).to(ACC)                                                   # [N, DH]
        dx_m += tl.where((t == T - 1)[:, None, None], gm[None, :, :], 0.0)
    tl.store(dxm_ptr + tnd_offs, dx_m.to(dxm_ptr.dtype.element_ty), mask=tnd_ok)
    part = dms_part_ptr + ((bi * NC + c) * J * S + j[:, None]) * D + cols[None, :]       # [S, DH]
    for jj in range(n_sc):
        nM, rho_M = _slot_tile(Ms_row, sc0 + jj, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC)
        mine = (sc_tok == sc0 + jj)[:, None]
        w_j, ds_j = tl.where(mine, w_M, 0.0), tl.where(mine, ds_M, 0.0)                  # [L, S]
        dq += tl.dot(ds_j, nM, input_precision=PREC)
        dn = (tl.dot(tl.trans(w_j), G, input_precision=PREC)
              + tl.dot(tl.trans(ds_j), Q, input_precision=PREC))                          # [S, DH]
        tl.store(part + jj * S * D, _dx_rows(dn, nM, rho_M, dh), mask=s_ok[:, None] & d_ok[None, :])
    tl.store(dq_ptr + td_offs, dq.to(dq_ptr.dtype.element_ty), mask=td_ok)


@triton.jit
def carry_map_kernel(dxm_ptr, mod_ptr, base_ptr, consts_ptr, ta_ptr, tx_ptr, T, N, D, NC, ACC: tl.constexpr,
                     BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """dxm: [B, T, N, D]; mod: [B, T, N]; base: [N, D]; ta, tx: [B, NC, N, D] (accumulation dtype). The banks'
    reverse carry c_t = g_t (dx_t + c_{t+1}) crosses chunk c as c_t0 = ta c_t1 + tx, ta = prod g and
    tx = sum_s (prod_{u<=s} g_u) dx_s over its tokens: both stored at chunk NC - 1 - c, so that carry_kernel, which
    scans forward, runs the carry from the end of time. Grid: (B * NC, cdiv(D, BLOCK_C))."""
    bi = (tl.program_id(0) // NC).to(tl.int64)
    c = tl.program_id(0) % NC
    cols, c_ok, n, n_ok, nd_ok, nd_offs, lo, hi, sb = _bank_tile(base_ptr, consts_ptr, tl.program_id(1) * BLOCK_C, N,
                                                                 D, ACC, BLOCK_N, BLOCK_C)
    g_prod = tl.full([BLOCK_N, BLOCK_C], 1.0, ACC)
    carry = tl.zeros([BLOCK_N, BLOCK_C], ACC)
    for t in range(c * BLOCK_L, tl.minimum(c * BLOCK_L + BLOCK_L, T)):
        row = bi * T + t
        mod = tl.load(mod_ptr + row * N + n, mask=n_ok, other=0.0).to(ACC)                # [BLOCK_N]
        g_prod *= tl.minimum(tl.maximum(sb * _sig(mod)[:, None], lo), hi)
        carry += g_prod * tl.load(dxm_ptr + row * N * D + nd_offs, mask=nd_ok, other=0.0).to(ACC)
    rev = (bi * NC + NC - 1 - c) * N * D + nd_offs
    tl.store(ta_ptr + rev, g_prod, mask=nd_ok)
    tl.store(tx_ptr + rev, carry, mask=nd_ok)


@triton.jit
def bank_bwd_kernel(dxm_ptr, v_ptr, mod_ptr, base_ptr, m0_ptr, m_ptr, consts_ptr, carry_ptr, dv_ptr, dmod_part_ptr,
                    dbase_part_ptr, B, T, N, D, NC, SV, HAS_M0: tl.constexpr, ACC: tl.constexpr, BLOCK_L: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """dxm, m: [B, T, N, D]; v, dv: [B, T, D] (v with token stride SV); mod: [B, T, N]; base: [N, D]; m0: [B, N, D];
    carry: [B, NC, N, D], the carry entering chunk NC - 1 - c from its right (carry_kernel's entries); dmod_part:
    [cdiv(D, BLOCK_C), B, T, N] and dbase_part: [B, NC, N, D] in the accumulation dtype. Walks the chunk's tokens
    from the last: delta_t = dx_t + c_{t+1}, dv_t = sum_n delta_t (1 - g_t), dlog g_t = delta_t (m_{t-1} - v_t) x_t
    where x = sig(base) sig(mod) is not clamped (else 0), c_t = g_t delta_t. Grid: (B * cdiv(D, BLOCK_C), NC)."""
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
        delta = tl.load(dxm_ptr + row * N * D + nd_offs, mask=nd_ok, other=0.0).to(ACC) + carry  # [BLOCK_N, BLOCK_C]
        sm = _sig(tl.load(mod_ptr + row * N + n, mask=n_ok, other=0.0).to(ACC))            # [BLOCK_N]
        x = sb * sm[:, None]
        g = tl.minimum(tl.maximum(x, lo), hi)
        v = tl.load(v_ptr + row * SV + cols, mask=c_ok, other=0.0).to(ACC)                # [BLOCK_C]
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
