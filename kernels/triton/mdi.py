# mdi: m_t^n = g_t^n m_{t-1}^n + (1 - g_t^n) v_t, g_t^n = clamp(exp(logsig(base^n) + logsig(mod_t^n)), eps, 1-eps).
# backward: delta_t = G_t + g_{t+1} delta_{t+1}; dv_t = sum_n delta_t (1 - g_t); dm0 = g_0 delta_0;
#   dlog g = delta_t (m_{t-1} - v_t) g_t (0 where clamped); dmod = sum_d dlog g sig(-mod); dbase = sum_{b,t} dlog g sig(-base).
# A program owns BLOCK_D channels of one batch row and all N banks, so v is read once per step; it walks T in
# [BLOCK_T, BLOCK_N, BLOCK_D] tiles (tl.associative_scan along time, joined to the carry). The decays are made
# in registers from base (loaded once) and the tile's mod; gamma never reaches memory. dmod is a sum over D:
# each program writes its partial [BLOCK_T, N] per tile and the caller sums the D tiles; dbase is summed over T
# in registers and over B by the caller.
import triton
import triton.language as tl

from .scan import combine, last_row3


@triton.jit
def logsigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def mdi_fwd_kernel(v_ptr, mod_ptr, base_ptr, m0_ptr, m_ptr, bounds_ptr, T, N, D,
                   HAS_M0: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """v: [B, T, D]; mod: [B, T, N]; base: [N, D]; m0: [B, N, D]; m: [B, T, N, D]; bounds: [eps, 1 - eps]."""
    pid_d = tl.program_id(0)
    bi = tl.program_id(1).to(tl.int64)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    nd_ok = (n < N)[:, None] & (cols < D)[None, :]  # [BLOCK_N, BLOCK_D]
    lo = tl.load(bounds_ptr).to(ACC)
    hi = tl.load(bounds_ptr + 1).to(ACC)
    log_sig_base = logsigmoid(tl.load(base_ptr + n[:, None] * D + cols[None, :], mask=nd_ok, other=0.0).to(ACC))
    if HAS_M0:
        carry = tl.load(m0_ptr + bi * N * D + n[:, None] * D + cols[None, :], mask=nd_ok, other=0.0).to(ACC)
    else:
        carry = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    for start in range(0, T, BLOCK_T):
        t = start + tl.arange(0, BLOCK_T)  # [BLOCK_T]
        t_ok = t < T
        v = tl.load(v_ptr + (bi * T + t[:, None]) * D + cols[None, :],
                    mask=t_ok[:, None] & (cols < D)[None, :], other=0.0).to(ACC)  # [BLOCK_T, BLOCK_D]
        mod = tl.load(mod_ptr + (bi * T + t[:, None]) * N + n[None, :],
                      mask=t_ok[:, None] & (n < N)[None, :], other=0.0).to(ACC)  # [BLOCK_T, BLOCK_N]
        gamma = tl.exp(log_sig_base[None, :, :] + logsigmoid(mod)[:, :, None])  # [BLOCK_T, BLOCK_N, BLOCK_D]
        gamma = tl.minimum(tl.maximum(gamma, lo), hi)
        g_cum, x_cum = tl.associative_scan((gamma, (1.0 - gamma) * v[:, None, :]), 0, combine)
        ms = g_cum * carry[None, :, :] + x_cum
        offs = ((bi * T + t[:, None, None]) * N + n[None, :, None]) * D + cols[None, None, :]
        tl.store(m_ptr + offs, ms.to(m_ptr.dtype.element_ty), mask=t_ok[:, None, None] & nd_ok[None, :, :])
        carry = last_row3(ms, tl.minimum(T - start, BLOCK_T) - 1, BLOCK_T)


@triton.jit
def mdi_bwd_kernel(grad_ptr, v_ptr, mod_ptr, base_ptr, m0_ptr, m_ptr, bounds_ptr,
                   dv_ptr, dm0_ptr, dmod_part_ptr, dbase_part_ptr, B, T, N, D,
                   HAS_M0: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """grad, m: [B, T, N, D]; dv: [B, T, D]; dm0: [B, N, D];
    dmod_part: [n_dtiles, B, T, N] and dbase_part: [B, N, D] in the accumulation dtype."""
    pid_d = tl.program_id(0)
    bi = tl.program_id(1).to(tl.int64)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    nd_ok = (n < N)[:, None] & (cols < D)[None, :]
    lo = tl.load(bounds_ptr).to(ACC)
    hi = tl.load(bounds_ptr + 1).to(ACC)
    base = tl.load(base_ptr + n[:, None] * D + cols[None, :], mask=nd_ok, other=0.0).to(ACC)  # [BLOCK_N, BLOCK_D]
    log_sig_base = logsigmoid(base)
    if HAS_M0:
        m0 = tl.load(m0_ptr + bi * N * D + n[:, None] * D + cols[None, :], mask=nd_ok, other=0.0).to(ACC)
    else:
        m0 = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    carry = tl.zeros([BLOCK_N, BLOCK_D], ACC)  # delta of the step after the tile
    dlog_base = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    for start in range(0, T, BLOCK_T):
        pos = start + tl.arange(0, BLOCK_T)
        t = T - 1 - pos  # [BLOCK_T], descending
        t_ok = pos < T
        tn_ok = t_ok[:, None] & (n < N)[None, :]
        mask3 = t_ok[:, None, None] & nd_ok[None, :, :]
        mod = tl.load(mod_ptr + (bi * T + t[:, None]) * N + n[None, :], mask=tn_ok, other=0.0).to(ACC)
        g_raw = tl.exp(log_sig_base[None, :, :] + logsigmoid(mod)[:, :, None])  # [BLOCK_T, BLOCK_N, BLOCK_D]
        gamma = tl.minimum(tl.maximum(g_raw, lo), hi)
        mod_next = tl.load(mod_ptr + (bi * T + t[:, None] + 1) * N + n[None, :],
                           mask=tn_ok & (t + 1 < T)[:, None], other=0.0).to(ACC)
        g_next = tl.exp(log_sig_base[None, :, :] + logsigmoid(mod_next)[:, :, None])
        g_next = tl.where((t + 1 < T)[:, None, None], tl.minimum(tl.maximum(g_next, lo), hi), 0.0)
        offs = ((bi * T + t[:, None, None]) * N + n[None, :, None]) * D + cols[None, None, :]
        grad = tl.load(grad_ptr + offs, mask=mask3, other=0.0).to(ACC)
        g_cum, x_cum = tl.associative_scan((g_next, grad), 0, combine)
        delta = g_cum * carry[None, :, :] + x_cum
        carry = last_row3(delta, tl.minimum(T - start, BLOCK_T) - 1, BLOCK_T)
        m_prev = tl.load(m_ptr + offs - N * D, mask=mask3 & (t >= 1)[:, None, None], other=0.0).to(ACC)
        m_prev = tl.where((t == 0)[:, None, None], m0[None, :, :], m_prev)
        v_offs = (bi * T + t[:, None]) * D + cols[None, :]
        v_ok = t_ok[:, None] & (cols < D)[None, :]
        v = tl.load(v_ptr + v_offs, mask=v_ok, other=0.0).to(ACC)
        tl.store(dv_ptr + v_offs, tl.sum(delta * (1.0 - gamma), 1).to(dv_ptr.dtype.element_ty), mask=v_ok)
        unclamped = (g_raw >= lo) & (g_raw <= hi)
        dlog_gamma = tl.where(unclamped & mask3, delta * (m_prev - v[:, None, :]) * g_raw, 0.0)
        dmod = tl.sum(dlog_gamma, 2) * tl.sigmoid(-mod)  # [BLOCK_T, BLOCK_N]
        tl.store(dmod_part_ptr + ((pid_d * B + bi) * T + t[:, None]) * N + n[None, :], dmod, mask=tn_ok)
        dlog_base += tl.sum(dlog_gamma, 0)
    dbase = dlog_base * tl.sigmoid(-base)
    tl.store(dbase_part_ptr + bi * N * D + n[:, None] * D + cols[None, :], dbase, mask=nd_ok)
    mod0 = tl.load(mod_ptr + bi * T * N + n, mask=n < N, other=0.0).to(ACC)
    gamma0 = tl.minimum(tl.maximum(tl.exp(log_sig_base + logsigmoid(mod0)[:, None]), lo), hi)
    tl.store(dm0_ptr + bi * N * D + n[:, None] * D + cols[None, :], (gamma0 * carry).to(dm0_ptr.dtype.element_ty),
             mask=nd_ok)
