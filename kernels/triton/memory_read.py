# memory_read: banks m_t = g_t (m_{t-1} - v_t) + v_t, g = clamp(sig(base) sig(mod), eps, 1-eps); per read head the items
#   {h_t, m_t^1..N, Ms[c(t), 1..S]} are RMS-normalised (n_i = x_i rho_i), w = softmax(<q_t, n_i> / sqrt(dh)), r_t = sum_i w_i n_i.
# backward: a_i = <G, n_i>, ds_i = w_i (a_i - sum_j w_j a_j), dq = sum_i ds_i n_i / sqrt(dh), dn_i = w_i G + ds_i q / sqrt(dh),
#   dx_i = rho_i (dn_i - n_i mean(dn_i n_i)); the banks' dx run mdi's reverse-time backward (delta_t = dx_t + g_{t+1} delta_{t+1}).
# Parallel over time in chunks of BLOCK_L tokens (the [B, T, N, D] bank tensor never exists):
#   chunk_transfer_kernel: per (b, chunk, channel block) the chunk's product of g and the state reached from zero;
#   carry_kernel: per (b, channel block) a scan over the chunks (blocks of BLOCK_NC chunks, carry handed on) giving each
#     chunk's entry state (forward) or the bank gradient entering it from the later chunks (backward);
#   memory_read_fwd_kernel / memory_read_bwd_kernel: per (b, read head, chunk) rebuild the chunk's banks from the entry
#     state with tl.associative_scan along time and do the read (or its backward) for all BLOCK_L tokens at once. The
#     slot items come per slot chunk the tokens read as one [BLOCK_S, BLOCK_DH] tile (tl.dot for scores, read, dq and
#     the slot gradient, the latter summed over the chunk's tokens before the RMS backward). The backward runs twice:
#     FINAL=False leaves each chunk's reverse-time transfer (prod g, delta from zero), FINAL=True writes the gradients.
#     dMs, dmod and dbase leave as per-chunk / per-head partials that the caller sums in a fixed order (dMs through
#     dms_reduce_kernel).
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
def chunk_transfer_kernel(v_ptr, mod_ptr, base_ptr, bounds_ptr, ta_ptr, tx_ptr, T, N, D, NC,
                          ACC: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """v: [B, T, D]; mod: [B, T, N]; base: [N, D]; bounds: [eps, 1 - eps]; ta, tx: [B, NC, N, D] (accumulation dtype):
    the chunk's prod of g and its end state from a zero entry. Grid: (B * NC, cdiv(D, BLOCK_C))."""
    bi = (tl.program_id(0) // NC).to(tl.int64)
    c = tl.program_id(0) % NC
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cols < D
    n = tl.arange(0, BLOCK_N)
    n_ok = n < N
    nd_ok = n_ok[:, None] & c_ok[None, :]
    nd_offs = n[:, None] * D + cols[None, :]
    lo, hi = tl.load(bounds_ptr).to(ACC), tl.load(bounds_ptr + 1).to(ACC)
    sb = _sig(tl.load(base_ptr + nd_offs, mask=nd_ok, other=0.0).to(ACC))
    t = c * BLOCK_L + tl.arange(0, BLOCK_L)
    g, _ = _gate(mod_ptr, sb, bi, t, N, T, n, n_ok, lo, hi, 1.0, ACC)                   # [BLOCK_L, BLOCK_N, BLOCK_C]
    v = tl.load(v_ptr + (bi * T + t[:, None]) * D + cols[None, :], mask=(t < T)[:, None] & c_ok[None, :],
                other=0.0).to(ACC)                                                       # [BLOCK_L, BLOCK_C]
    g_cum, x_cum = tl.associative_scan((g, (1.0 - g) * v[:, None, :]), 0, combine)
    out = (bi * NC + c) * N * D + nd_offs
    tl.store(ta_ptr + out, _row(g_cum, BLOCK_L - 1, BLOCK_L), mask=nd_ok)
    tl.store(tx_ptr + out, _row(x_cum, BLOCK_L - 1, BLOCK_L), mask=nd_ok)


@triton.jit
def carry_kernel(ta_ptr, tx_ptr, init_ptr, entry_ptr, last_ptr, NC, ND,
                 HAS_INIT: tl.constexpr, REVERSE: tl.constexpr, STORE_LAST: tl.constexpr,
                 ACC: tl.constexpr, BLOCK_NC: tl.constexpr, BLOCK: tl.constexpr):
    """ta, tx, entry: [B, NC, N * D] (accumulation dtype); init, last: [B, N * D]. entry[c] = the state before
    chunk c is applied, walking c = 0.. (or NC - 1.. when REVERSE), state <- ta[c] state + tx[c]: a scan over
    BLOCK_NC chunks at a time, the carry handed from block to block. Grid: (B, cdiv(N * D, BLOCK))."""
    bi = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < ND
    rows = tl.arange(0, BLOCK_NC)
    if HAS_INIT:
        state = tl.load(init_ptr + bi * ND + offs, mask=ok, other=0.0).to(ACC)
    else:
        state = tl.zeros([BLOCK], ACC)
    n_blocks = tl.cdiv(NC, BLOCK_NC)
    for ib in range(n_blocks):
        blk = ib
        if REVERSE:
            blk = n_blocks - 1 - ib
        c = blk * BLOCK_NC + rows
        c_ok = c < NC
        at = (bi * NC + c[:, None]) * ND + offs[None, :]                                   # [BLOCK_NC, BLOCK]
        m2 = c_ok[:, None] & ok[None, :]
        a = tl.load(ta_ptr + at, mask=m2, other=1.0)
        x = tl.load(tx_ptr + at, mask=m2, other=0.0)
        if REVERSE:
            a_cum, x_cum = tl.associative_scan((a, x), 0, combine, reverse=True)
            after = a_cum * state[None, :] + x_cum        # the state entering chunk c's predecessor
            tl.store(entry_ptr + at - ND, after, mask=m2 & (rows > 0)[:, None])
            last_c = tl.minimum(NC - 1 - blk * BLOCK_NC, BLOCK_NC - 1)
            tl.store(entry_ptr + (bi * NC + blk * BLOCK_NC + last_c) * ND + offs, state, mask=ok)
            state = tl.sum(tl.where((rows == 0)[:, None], after, 0.0), 0)
        else:
            a_cum, x_cum = tl.associative_scan((a, x), 0, combine)
            after = a_cum * state[None, :] + x_cum            # the state after chunk c
            tl.store(entry_ptr + at + ND, after, mask=m2 & (c + 1 < NC)[:, None] & (rows < BLOCK_NC - 1)[:, None])
            tl.store(entry_ptr + (bi * NC + blk * BLOCK_NC) * ND + offs, state, mask=ok)
            state = tl.sum(tl.where((rows == BLOCK_NC - 1)[:, None], after, 0.0), 0)
    if STORE_LAST:
        tl.store(last_ptr + bi * ND + offs, state.to(last_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _rms(x, dh, ne):
    """x: [L, R, BLOCK_DH] zero-padded -> (x rho, rho [L, R]), rho = rsqrt(mean over the dh real columns + ne)."""
    rho = 1.0 / tl.sqrt(tl.sum(x * x, 2) / dh + ne)
    return x * rho[:, :, None], rho


@triton.jit
def _rms2(x, dh, ne):
    """x: [R, BLOCK_DH] zero-padded -> (x rho, rho [R])."""
    rho = 1.0 / tl.sqrt(tl.sum(x * x, 1) / dh + ne)
    return x * rho[:, None], rho


@triton.jit
def _slot_tile(Ms_ptr, bi, sc, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC: tl.constexpr):
    """Slot chunk sc of the head, Ms[bi, sc, :, cols] normalised: [BLOCK_S, BLOCK_DH] (zero past S, past dh and
    when sc >= NS) and its rho [BLOCK_S]."""
    ok = s_ok[:, None] & d_ok[None, :] & (sc < NS)
    x = tl.load(Ms_ptr + ((bi * NS + sc) * S + j[:, None]) * D + cols[None, :], mask=ok, other=0.0).to(ACC)
    return _rms2(x, dh, ne)


@triton.jit
def _chunk_slots(t, t_ok, k0, C, T, c, BLOCK_L: tl.constexpr):
    """The slot chunk of each token [L] (-1 past T), the time chunk's first slot chunk and how many it reads."""
    sc_tok = tl.where(t_ok, (k0 + t) // C, -1)
    sc0 = (k0 + c * BLOCK_L) // C
    t_last = tl.minimum(c * BLOCK_L + BLOCK_L, T) - 1
    return sc_tok, sc0, (k0 + t_last) // C - sc0 + 1


@triton.jit
def _weights(q, G, nh, nm, n_ok, Ms_ptr, bi, sc_tok, sc0, n_sc, NS, S, D, cols, d_ok, j, s_ok, dh, ne, scale,
             ACC: tl.constexpr, PREC: tl.constexpr, GRAD: tl.constexpr, BLOCK_L: tl.constexpr,
             BLOCK_S: tl.constexpr):
    """q, G, nh: [L, DH]; nm: [L, N, DH] -> softmax weights w_h [L], w_m [L, N], w_M [L, BLOCK_S] (zero on padded
    slots) and, with GRAD, a_M = <G, n_slot> [L, BLOCK_S]. The slot scores come per slot chunk as tl.dot tiles."""
    s_h = tl.sum(nh * q, 1) * scale                                                       # [L]
    s_m = tl.where(n_ok[None, :], tl.sum(nm * q[:, None, :], 2) * scale, float("-inf"))  # [L, N]
    s_M = tl.zeros([BLOCK_L, BLOCK_S], ACC) + float("-inf")                              # [L, S]
    a_M = tl.zeros([BLOCK_L, BLOCK_S], ACC)
    for jj in range(n_sc):
        nM = _slot_tile(Ms_ptr, bi, sc0 + jj, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC)[0]    # [S, DH]
        mine = (sc_tok == sc0 + jj)[:, None] & s_ok[None, :]
        s_M = tl.where(mine, tl.dot(q, tl.trans(nM), input_precision=PREC) * scale, s_M)
        if GRAD:
            a_M = tl.where(mine, tl.dot(G, tl.trans(nM), input_precision=PREC), a_M)
    mx = tl.maximum(s_h, tl.maximum(tl.max(s_m, 1), tl.max(s_M, 1)))                     # [L]
    e_h, e_m, e_M = tl.exp(s_h - mx), tl.exp(s_m - mx[:, None]), tl.exp(s_M - mx[:, None])
    z = e_h + tl.sum(e_m, 1) + tl.sum(e_M, 1)
    return e_h / z, e_m / z[:, None], e_M / z[:, None], a_M


@triton.jit
def memory_read_fwd_kernel(q_ptr, h_ptr, v_ptr, mod_ptr, base_ptr, Ms_ptr, entry_ptr, r_ptr, consts_ptr,
                           T, N, D, NS, S, H, k0, C, NC, ACC: tl.constexpr, PREC: tl.constexpr,
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
    t = c * BLOCK_L + tl.arange(0, BLOCK_L)
    t_ok = t < T
    td_ok = t_ok[:, None] & d_ok[None, :]
    td_offs = (bi * T + t[:, None]) * D + cols[None, :]                                  # [BLOCK_L, BLOCK_DH]
    g, _ = _gate(mod_ptr, sb, bi, t, N, T, n, n_ok, lo, hi, 1.0, ACC)
    v = tl.load(v_ptr + td_offs, mask=td_ok, other=0.0).to(ACC)
    g_cum, x_cum = tl.associative_scan((g, (1.0 - g) * v[:, None, :]), 0, combine)
    entry = tl.load(entry_ptr + (bi * NC + c) * N * D + nd_offs, mask=nd_ok, other=0.0)
    nm, _ = _rms(g_cum * entry[None, :, :] + x_cum, dh, ne)                              # [BLOCK_L, BLOCK_N, BLOCK_DH]
    q = tl.load(q_ptr + td_offs, mask=td_ok, other=0.0).to(ACC)
    nh, _ = _rms2(tl.load(h_ptr + td_offs, mask=td_ok, other=0.0).to(ACC), dh, ne)
    sc_tok, sc0, n_sc = _chunk_slots(t, t_ok, k0, C, T, c, BLOCK_L)
    w_h, w_m, w_M, _ = _weights(q, q, nh, nm, n_ok, Ms_ptr, bi, sc_tok, sc0, n_sc, NS, S, D, cols, d_ok, j, s_ok,
                                dh, ne, scale, ACC, PREC, False, BLOCK_L, BLOCK_S)
    r = w_h[:, None] * nh + tl.sum(w_m[:, :, None] * nm, 1)                               # [L, DH]
    for jj in range(n_sc):
        nM = _slot_tile(Ms_ptr, bi, sc0 + jj, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC)[0]
        r += tl.dot(tl.where((sc_tok == sc0 + jj)[:, None], w_M, 0.0), nM, input_precision=PREC)
    tl.store(r_ptr + td_offs, r.to(r_ptr.dtype.element_ty), mask=td_ok)


@triton.jit
def _dx(w, ds, G, q, nx, rho, dh):
    """Gradient of items x [L, R, DH] from their weights w and score gradients ds [L, R]."""
    dn = w[:, :, None] * G[:, None, :] + ds[:, :, None] * q[:, None, :]
    return rho[:, :, None] * (dn - nx * (tl.sum(dn * nx, 2) / dh)[:, :, None])


@triton.jit
def _dx2(dn, nx, rho, dh):
    """dx = rho (dn - n mean(dn n)) for items [R, DH] with their dn [R, DH] and rho [R]."""
    return rho[:, None] * (dn - nx * (tl.sum(dn * nx, 1) / dh)[:, None])


@triton.jit
def memory_read_bwd_kernel(grad_r_ptr, q_ptr, h_ptr, v_ptr, mod_ptr, base_ptr, Ms_ptr, entry_ptr, consts_ptr,
                           ba_ptr, by_ptr, carry_ptr, dq_ptr, dh_ptr, dv_ptr, dm0_ptr, dms_part_ptr,
                           dmod_part_ptr, dbase_part_ptr, T, N, D, NS, S, H, k0, C, NC, J,
                           FINAL: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr, BLOCK_L: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_DH: tl.constexpr):
    """grad_r, dq, dh, dv: [B, T, D]; dm0: [B, N, D]; accumulation-dtype scratch: entry, ba, by, carry [B, NC, N, D]
    (banks before each chunk; the chunk's reverse transfer prod_{s>t0} g_s (g_T = 1) and delta from a zero carry at
    its first token; delta at the first token of the next chunk, grad m_last for the last), dms_part [B, NC, J, S, D]
    (the chunk's dMs for slot chunks c(t0) + 0..J-1; those it reads are written), dmod_part [B, H, T, N] (before the
    sig'(mod) factor), dbase_part [B, NC, N, D]. FINAL=False writes ba, by only. Grid: (B * H, NC)."""
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
    chunk_offs = (bi * NC + c) * N * D + nd_offs
    lo, hi = tl.load(consts_ptr).to(ACC), tl.load(consts_ptr + 1).to(ACC)
    ne, scale = tl.load(consts_ptr + 2).to(ACC), tl.load(consts_ptr + 3).to(ACC)
    base = tl.load(base_ptr + nd_offs, mask=nd_ok, other=0.0).to(ACC)
    sb = _sig(base)
    l_idx = tl.arange(0, BLOCK_L)
    t = c * BLOCK_L + l_idx
    t_ok = t < T
    td_ok = t_ok[:, None] & d_ok[None, :]
    td_offs = (bi * T + t[:, None]) * D + cols[None, :]
    # m_{t-1}: scan of the previous tokens' steps, the chunk's first row an identity step
    g_prev, _ = _gate(mod_ptr, sb, bi, t - 1, N, T, n, n_ok, lo, hi, 1.0, ACC)
    first = (l_idx == 0)[:, None, None]
    g_prev = tl.where(first, 1.0, g_prev)
    v_prev = tl.load(v_ptr + td_offs - D, mask=td_ok & (l_idx > 0)[:, None], other=0.0).to(ACC)
    gp_cum, xp_cum = tl.associative_scan((g_prev, (1.0 - g_prev) * v_prev[:, None, :]), 0, combine)
    entry = tl.load(entry_ptr + chunk_offs, mask=nd_ok, other=0.0)
    m_prev = gp_cum * entry[None, :, :] + xp_cum                                         # [BLOCK_L, BLOCK_N, BLOCK_DH]
    g, x = _gate(mod_ptr, sb, bi, t, N, T, n, n_ok, lo, hi, 1.0, ACC)
    v = tl.load(v_ptr + td_offs, mask=td_ok, other=0.0).to(ACC)
    nm, rho_m = _rms(g * (m_prev - v[:, None, :]) + v[:, None, :], dh, ne)
    q = tl.load(q_ptr + td_offs, mask=td_ok, other=0.0).to(ACC)
    nh, rho_h = _rms2(tl.load(h_ptr + td_offs, mask=td_ok, other=0.0).to(ACC), dh, ne)     # [L, DH], [L]
    G = tl.load(grad_r_ptr + td_offs, mask=td_ok, other=0.0).to(ACC)
    sc_tok, sc0, n_sc = _chunk_slots(t, t_ok, k0, C, T, c, BLOCK_L)
    w_h, w_m, w_M, a_M = _weights(q, G, nh, nm, n_ok, Ms_ptr, bi, sc_tok, sc0, n_sc, NS, S, D, cols, d_ok, j, s_ok,
                                  dh, ne, scale, ACC, PREC, True, BLOCK_L, BLOCK_S)
    a_h = tl.sum(nh * G, 1)                                                              # [L]
    a_m = tl.sum(nm * G[:, None, :], 2)                                                  # [L, N]
    abar = w_h * a_h + tl.sum(w_m * a_m, 1) + tl.sum(w_M * a_M, 1)                       # [L]
    ds_m = w_m * (a_m - abar[:, None]) * scale
    dx_m = tl.where(nd_ok[None, :, :], _dx(w_m, ds_m, G, q, nm, rho_m, dh), 0.0)         # [L, N, DH]
    g_next, _ = _gate(mod_ptr, sb, bi, t + 1, N, T, n, n_ok, lo, hi, 1.0, ACC)
    a_cum, d_loc = tl.associative_scan((g_next, dx_m), 0, combine, reverse=True)
    if not FINAL:
        tl.store(ba_ptr + chunk_offs, _row(a_cum, 0, BLOCK_L), mask=nd_ok)
        tl.store(by_ptr + chunk_offs, _row(d_loc, 0, BLOCK_L), mask=nd_ok)
    else:
        ds_h = w_h * (a_h - abar) * scale                                                # [L]
        dq = ds_h[:, None] * nh + tl.sum(ds_m[:, :, None] * nm, 1)                       # [L, DH]
        dx_h = _dx2(w_h[:, None] * G + ds_h[:, None] * q, nh, rho_h, dh)
        tl.store(dh_ptr + td_offs, dx_h.to(dh_ptr.dtype.element_ty), mask=td_ok)
        # the banks' gradients before the slot loop: their [L, N, DH] tensors are dead by then (fewer spills)
        carry = tl.load(carry_ptr + chunk_offs, mask=nd_ok, other=0.0)
        delta = d_loc + a_cum * carry[None, :, :]                                        # [L, N, DH]
        ok3 = t_ok[:, None, None] & nd_ok[None, :, :]
        dxg = tl.where((x >= lo) & (x <= hi) & ok3, delta * (m_prev - v[:, None, :]), 0.0)
        tl.store(dbase_part_ptr + chunk_offs, tl.sum(dxg * x, 0) * _sig(-base), mask=nd_ok)
        tl.store(dmod_part_ptr + (pid.to(tl.int64) * T + t[:, None]) * N + n[None, :], tl.sum(dxg * sb[None, :, :], 2),
                 mask=t_ok[:, None] & n_ok[None, :])
        dv = tl.sum(tl.where(ok3, delta * (1.0 - g), 0.0), 1)
        tl.store(dv_ptr + td_offs, dv.to(dv_ptr.dtype.element_ty), mask=td_ok)
        if c == 0:
            tl.store(dm0_ptr + bi * N * D + nd_offs, _row(g * delta, 0, BLOCK_L).to(dm0_ptr.dtype.element_ty),
                     mask=nd_ok)
        ds_M = w_M * (a_M - abar[:, None]) * scale                                       # [L, S]
        sd_ok = s_ok[:, None] & d_ok[None, :]
        for jj in range(n_sc):
            # dx of a slot is linear in its dn (rho, n fixed per slot): sum dn over the chunk's tokens first
            nM, rho_M = _slot_tile(Ms_ptr, bi, sc0 + jj, NS, S, D, cols, d_ok, j, s_ok, dh, ne, ACC)
            mine = (sc_tok == sc0 + jj)[:, None]
            w_j, ds_j = tl.where(mine, w_M, 0.0), tl.where(mine, ds_M, 0.0)              # [L, S]
            dq += tl.dot(ds_j, nM, input_precision=PREC)
            dn = (tl.dot(tl.trans(w_j), G, input_precision=PREC)
                  + tl.dot(tl.trans(ds_j), q, input_precision=PREC))                      # [S, DH]
            tl.store(dms_part_ptr + (((bi * NC + c) * J + jj) * S + j[:, None]) * D + cols[None, :],
                     _dx2(dn, nM, rho_M, dh), mask=sd_ok)
        tl.store(dq_ptr + td_offs, dq.to(dq_ptr.dtype.element_ty), mask=td_ok)


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
