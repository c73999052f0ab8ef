# memory_read: banks st_t = g_t (st_{t-1} - v_t) + v_t, g = clamp(sig(base) sig(mod), eps, 1-eps); per read head the items
#   {h_t, m_t^1..N, Ms[c(t), 1..S]} are RMS-normalised (n_i = x_i rho_i), w = softmax(<q_t, n_i> / sqrt(dh)), r_t = sum_i w_i n_i.
# backward: a_i = <G, n_i>, ds_i = w_i (a_i - sum_j w_j a_j), dq = sum_i ds_i n_i / sqrt(dh), dn_i = w_i G + ds_i q / sqrt(dh),
#   dx_i = rho_i (dn_i - n_i mean(dn_i n_i)); the banks' dx run mdi's reverse-time backward (delta_t = dx_t + g_{t+1} delta_{t+1}).
# One program = (batch row, read head) walks time with its [N, dh] banks in registers: the [B, T, N, D] bank tensor
# never exists. The backward sweeps forward once to store a checkpoint of the banks every K steps (scratch
# [programs, blocks, BLOCK_N, BLOCK_DH]), then walks the blocks backwards, recomputing each block's K states into
# a [programs, K, BLOCK_N, BLOCK_DH] scratch that it reads back in reverse. dmod (a sum over heads) and dbase (a
# sum over batch rows) leave as per-program partials that the caller reduces in a fixed order.
import triton
import triton.language as tl


@triton.jit
def _sig(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _rms_rows(x, dh, ne):
    """x: [R, BLOCK_DH] zero-padded -> (x rho, rho) with rho = rsqrt(mean over the dh real columns + ne)."""
    rho = 1.0 / tl.sqrt(tl.sum(x * x, 1) / dh + ne)
    return x * rho[:, None], rho


@triton.jit
def _step(st, sb, mod_ptr, v_ptr, row, n, n_ok, cols, d_ok, N, D, lo, hi, ACC: tl.constexpr):
    """One bank step of the head's channels: st [BLOCK_N, BLOCK_DH]."""
    sm = _sig(tl.load(mod_ptr + row * N + n, mask=n_ok, other=0.0).to(ACC))
    g = tl.minimum(tl.maximum(sb * sm[:, None], lo), hi)
    vt = tl.load(v_ptr + row * D + cols, mask=d_ok, other=0.0).to(ACC)
    return g * (st - vt[None, :]) + vt[None, :]


@triton.jit
def _read(qa, h_ptr, Ms_ptr, st, bi, row, t, k0, C, L, S, D, dh, ne, scale, cols, d_ok, n_ok, j, s_ok,
          ACC: tl.constexpr):
    """Normalised items and softmax weights of one token: (nh, rho_h, w_h), (nm, rho_m, w_m), (nM, rho_M, w_M)."""
    hrow = tl.load(h_ptr + row * D + cols, mask=d_ok, other=0.0).to(ACC)
    nh, rho_h = _rms_rows(hrow[None, :], dh, ne)
    c = (k0 + t) // C
    Mc = tl.load(Ms_ptr + ((bi * L + c) * S + j[:, None]) * D + cols[None, :], mask=s_ok[:, None] & d_ok[None, :],
                 other=0.0).to(ACC)
    nM, rho_M = _rms_rows(Mc, dh, ne)
    nm, rho_m = _rms_rows(st, dh, ne)
    s_h = tl.sum(nh * qa[None, :], 1) * scale                                       # [1]
    s_m = tl.where(n_ok, tl.sum(nm * qa[None, :], 1) * scale, float("-inf"))        # [BLOCK_N]
    s_M = tl.where(s_ok, tl.sum(nM * qa[None, :], 1) * scale, float("-inf"))        # [BLOCK_S]
    mx = tl.maximum(tl.max(s_h, 0), tl.maximum(tl.max(s_m, 0), tl.max(s_M, 0)))
    e_h, e_m, e_M = tl.exp(s_h - mx), tl.exp(s_m - mx), tl.exp(s_M - mx)
    z = tl.sum(e_h, 0) + tl.sum(e_m, 0) + tl.sum(e_M, 0)
    return nh, rho_h, e_h / z, nm, rho_m, e_m / z, nM, rho_M, e_M / z


@triton.jit
def memory_read_fwd_kernel(q_ptr, h_ptr, v_ptr, mod_ptr, base_ptr, Ms_ptr, m0_ptr, r_ptr, mlast_ptr, consts_ptr,
                           T, N, D, L, S, H, k0, C, HAS_M0: tl.constexpr, ACC: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_DH: tl.constexpr):
    """q, h, v, r: [B, T, D]; mod: [B, T, N]; base: [N, D]; Ms: [B, L, S, D]; m0, m_last: [B, N, D];
    consts: [eps, 1 - eps, norm_eps, 1 / sqrt(dh)] in the accumulation dtype. Grid: B * H."""
    pid = tl.program_id(0)
    bi = (pid // H).to(tl.int64)
    dh = D // H
    cols = (pid % H) * dh + tl.arange(0, BLOCK_DH)
    d_ok = tl.arange(0, BLOCK_DH) < dh
    n = tl.arange(0, BLOCK_N)
    n_ok = n < N
    j = tl.arange(0, BLOCK_S)
    s_ok = j < S
    nd_ok = n_ok[:, None] & d_ok[None, :]
    nd_offs = n[:, None] * D + cols[None, :]
    lo, hi = tl.load(consts_ptr).to(ACC), tl.load(consts_ptr + 1).to(ACC)
    ne, scale = tl.load(consts_ptr + 2).to(ACC), tl.load(consts_ptr + 3).to(ACC)
    sb = _sig(tl.load(base_ptr + nd_offs, mask=nd_ok, other=0.0).to(ACC))
    if HAS_M0:
        st = tl.load(m0_ptr + bi * N * D + nd_offs, mask=nd_ok, other=0.0).to(ACC)
    else:
        st = tl.zeros([BLOCK_N, BLOCK_DH], ACC)
    for t in range(T):
        row = bi * T + t
        st = _step(st, sb, mod_ptr, v_ptr, row, n, n_ok, cols, d_ok, N, D, lo, hi, ACC)
        qa = tl.load(q_ptr + row * D + cols, mask=d_ok, other=0.0).to(ACC)
        nh, _, w_h, nm, _, w_m, nM, _, w_M = _read(qa, h_ptr, Ms_ptr, st, bi, row, t, k0, C, L, S, D, dh, ne, scale,
                                                   cols, d_ok, n_ok, j, s_ok, ACC)
        r = tl.sum(w_h[:, None] * nh, 0) + tl.sum(w_m[:, None] * nm, 0) + tl.sum(w_M[:, None] * nM, 0)
        tl.store(r_ptr + row * D + cols, r.to(r_ptr.dtype.element_ty), mask=d_ok)
    tl.store(mlast_ptr + bi * N * D + nd_offs, st.to(mlast_ptr.dtype.element_ty), mask=nd_ok)


@triton.jit
def memory_read_bwd_kernel(grad_r_ptr, grad_m_ptr, q_ptr, h_ptr, v_ptr, mod_ptr, base_ptr, Ms_ptr, m0_ptr,
                           consts_ptr, ckpt_ptr, buf_ptr, dq_ptr, dh_ptr, dv_ptr, dMs_ptr, dm0_ptr, dmod_part_ptr,
                           dbase_part_ptr, T, N, D, L, S, H, k0, C, K, blocks,
                           HAS_M0: tl.constexpr, ACC: tl.constexpr,
                           BLOCK_N: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_DH: tl.constexpr):
    """grad_r, dq, dh, dv: [B, T, D]; grad_m, dm0: [B, N, D]; dMs: [B, L, S, D]; scratch in the accumulation
    dtype: ckpt [B * H, blocks, BLOCK_N, BLOCK_DH], buf [B * H, K, BLOCK_N, BLOCK_DH], dmod_part [B * H, T, N]
    (before the sigmoid'(mod) factor), dbase_part [B, N, D]. Grid: B * H."""
    pid = tl.program_id(0)
    bi = (pid // H).to(tl.int64)
    dh = D // H
    cols = (pid % H) * dh + tl.arange(0, BLOCK_DH)
    d_ok = tl.arange(0, BLOCK_DH) < dh
    n = tl.arange(0, BLOCK_N)
    n_ok = n < N
    j = tl.arange(0, BLOCK_S)
    s_ok = j < S
    nd_ok = n_ok[:, None] & d_ok[None, :]
    nd_offs = n[:, None] * D + cols[None, :]
    tile = n[:, None] * BLOCK_DH + tl.arange(0, BLOCK_DH)[None, :]  # [BLOCK_N, BLOCK_DH] offsets in scratch
    ckpt = ckpt_ptr + pid.to(tl.int64) * blocks * BLOCK_N * BLOCK_DH
    buf = buf_ptr + pid.to(tl.int64) * K * BLOCK_N * BLOCK_DH
    lo, hi = tl.load(consts_ptr).to(ACC), tl.load(consts_ptr + 1).to(ACC)
    ne, scale = tl.load(consts_ptr + 2).to(ACC), tl.load(consts_ptr + 3).to(ACC)
    base = tl.load(base_ptr + nd_offs, mask=nd_ok, other=0.0).to(ACC)
    sb, sbneg = _sig(base), _sig(-base)
    if HAS_M0:
        st = tl.load(m0_ptr + bi * N * D + nd_offs, mask=nd_ok, other=0.0).to(ACC)
    else:
        st = tl.zeros([BLOCK_N, BLOCK_DH], ACC)
    tl.store(ckpt + tile, st)
    for t in range((blocks - 1) * K):
        st = _step(st, sb, mod_ptr, v_ptr, bi * T + t, n, n_ok, cols, d_ok, N, D, lo, hi, ACC)
        if (t + 1) % K == 0:
            tl.store(ckpt + (t + 1) // K * BLOCK_N * BLOCK_DH + tile, st)
    tl.debug_barrier()
    carry = tl.load(grad_m_ptr + bi * N * D + nd_offs, mask=nd_ok, other=0.0).to(ACC)
    dbase_acc = tl.zeros([BLOCK_N, BLOCK_DH], ACC)
    dMs_acc = tl.zeros([BLOCK_S, BLOCK_DH], ACC)
    for bb in range(blocks):
        blk = blocks - 1 - bb
        t0 = blk * K
        nt = tl.minimum(T - t0, K)
        first = tl.load(ckpt + blk * BLOCK_N * BLOCK_DH + tile)
        st = first
        for i in range(nt):
            st = _step(st, sb, mod_ptr, v_ptr, bi * T + t0 + i, n, n_ok, cols, d_ok, N, D, lo, hi, ACC)
            tl.store(buf + i * BLOCK_N * BLOCK_DH + tile, st)
        tl.debug_barrier()
        for i in range(nt):
            li = nt - 1 - i
            t = t0 + li
            row = bi * T + t
            mt = tl.load(buf + li * BLOCK_N * BLOCK_DH + tile)
            mprev = tl.load(buf + tl.maximum(li - 1, 0) * BLOCK_N * BLOCK_DH + tile)
            mprev = tl.where(li > 0, mprev, first)
            qa = tl.load(q_ptr + row * D + cols, mask=d_ok, other=0.0).to(ACC)
            G = tl.load(grad_r_ptr + row * D + cols, mask=d_ok, other=0.0).to(ACC)
            nh, rho_h, w_h, nm, rho_m, w_m, nM, rho_M, w_M = _read(qa, h_ptr, Ms_ptr, mt, bi, row, t, k0, C, L, S,
                                                                   D, dh, ne, scale, cols, d_ok, n_ok, j, s_ok, ACC)
            a_h, a_m, a_M = tl.sum(nh * G[None, :], 1), tl.sum(nm * G[None, :], 1), tl.sum(nM * G[None, :], 1)
            abar = tl.sum(w_h * a_h, 0) + tl.sum(w_m * a_m, 0) + tl.sum(w_M * a_M, 0)
            ds_h, ds_m, ds_M = w_h * (a_h - abar) * scale, w_m * (a_m - abar) * scale, w_M * (a_M - abar) * scale
            dq = tl.sum(ds_h[:, None] * nh, 0) + tl.sum(ds_m[:, None] * nm, 0) + tl.sum(ds_M[:, None] * nM, 0)
            tl.store(dq_ptr + row * D + cols, dq.to(dq_ptr.dtype.element_ty), mask=d_ok)
            dn = w_h[:, None] * G[None, :] + ds_h[:, None] * qa[None, :]
            dx_h = rho_h[:, None] * (dn - nh * (tl.sum(dn * nh, 1) / dh)[:, None])
            tl.store(dh_ptr + row * D + cols[None, :], dx_h.to(dh_ptr.dtype.element_ty), mask=d_ok[None, :])
            dn = w_M[:, None] * G[None, :] + ds_M[:, None] * qa[None, :]
            dMs_acc += rho_M[:, None] * (dn - nM * (tl.sum(dn * nM, 1) / dh)[:, None])
            c = (k0 + t) // C
            chunk_start = ((k0 + t) % C == 0) | (t == 0)  # backwards in time: the chunk's last token visited
            tl.store(dMs_ptr + ((bi * L + c) * S + j[:, None]) * D + cols[None, :],
                     dMs_acc.to(dMs_ptr.dtype.element_ty), mask=s_ok[:, None] & d_ok[None, :] & chunk_start)
            dMs_acc = tl.where(chunk_start, 0.0, dMs_acc)
            dn = w_m[:, None] * G[None, :] + ds_m[:, None] * qa[None, :]
            delta = rho_m[:, None] * (dn - nm * (tl.sum(dn * nm, 1) / dh)[:, None]) + carry
            sm = _sig(tl.load(mod_ptr + row * N + n, mask=n_ok, other=0.0).to(ACC))
            x = sb * sm[:, None]
            g = tl.minimum(tl.maximum(x, lo), hi)
            vt = tl.load(v_ptr + row * D + cols, mask=d_ok, other=0.0).to(ACC)
            dxg = tl.where((x >= lo) & (x <= hi) & nd_ok, delta * (mprev - vt[None, :]), 0.0)
            dbase_acc += dxg * x * sbneg
            tl.store(dmod_part_ptr + (pid.to(tl.int64) * T + t) * N + n, tl.sum(dxg * sb, 1), mask=n_ok)
            dv = tl.sum(tl.where(nd_ok, delta * (1.0 - g), 0.0), 0)
            tl.store(dv_ptr + row * D + cols, dv.to(dv_ptr.dtype.element_ty), mask=d_ok)
            carry = g * delta
        tl.debug_barrier()
    tl.store(dm0_ptr + bi * N * D + nd_offs, carry.to(dm0_ptr.dtype.element_ty), mask=nd_ok)
    tl.store(dbase_part_ptr + bi * N * D + nd_offs, dbase_acc, mask=nd_ok)
