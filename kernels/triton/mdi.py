# mdi: m_t^n = g_t^n m_{t-1}^n + (1 - g_t^n) v_t, g_t^n = clamp(exp(logsig(base^n) + logsig(mod_t^n)), eps, 1-eps).
# backward: delta_t = G_t + g_{t+1} delta_{t+1}; dv_t = sum_n delta_t (1 - g_t); dm0 = g_0 delta_0;
#   dlog g = delta_t (m_{t-1} - v_t) g_t (0 where clamped); dmod = sum_d dlog g sig(-mod); dbase = sum_{b,t} dlog g sig(-base).
# A program owns one [BLOCK_T, BLOCK_N, BLOCK_D] tile: BLOCK_T steps of BLOCK_D channels of one batch row, all N
# banks (v is read once per step). It scans the tile with tl.associative_scan from a zero state and joins it to the
# state the previous tile of its channels published (chained scan in ticket order, as in scan.py). The decays are
# made in registers from base and the tile's mod; gamma never reaches memory. dmod is a sum over D: each program
# writes its [BLOCK_T, N] partial and the caller sums the D tiles; dbase partials are per (T tile, batch row).
import triton
import triton.language as tl

from .scan import combine, last_row3, wait_for


@triton.jit
def logsigmoid(x):
    return tl.minimum(x, 0.0) - tl.log(1.0 + tl.exp(-tl.abs(x)))


@triton.jit
def mdi_fwd_kernel(v_ptr, mod_ptr, base_ptr, m0_ptr, m_ptr, bounds_ptr, ends_ptr, flags_ptr, B, T, N, D, SV,
                   HAS_M0: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """v: [B, T, D] (token stride SV); mod: [B, T, N]; base: [N, D]; m0: [B, N, D]; m: [B, T, N, D]; bounds:
    [eps, 1 - eps]; ends: [n_tiles_T, B, N, D] (state after each T tile); flags: int32 [1 + tiles] zeroed (ticket,
    ready flags)."""
    nd = tl.cdiv(D, BLOCK_D)
    ticket = tl.atomic_add(flags_ptr, 1)
    chunk = ticket // (B * nd)
    lane = ticket % (B * nd)
    bi = (lane // nd).to(tl.int64)
    cols = (lane % nd) * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    nd_ok = (n < N)[:, None] & (cols < D)[None, :]  # [BLOCK_N, BLOCK_D]
    nd_offs = n[:, None] * D + cols[None, :]
    lo = tl.load(bounds_ptr).to(ACC)
    hi = tl.load(bounds_ptr + 1).to(ACC)
    log_sig_base = logsigmoid(tl.load(base_ptr + nd_offs, mask=nd_ok, other=0.0).to(ACC))
    t = chunk * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T]
    t_ok = t < T
    v = tl.load(v_ptr + (bi * T + t[:, None]) * SV + cols[None, :],
                mask=t_ok[:, None] & (cols < D)[None, :], other=0.0).to(ACC)  # [BLOCK_T, BLOCK_D]
    mod = tl.load(mod_ptr + (bi * T + t[:, None]) * N + n[None, :],
                  mask=t_ok[:, None] & (n < N)[None, :], other=0.0).to(ACC)  # [BLOCK_T, BLOCK_N]
    gamma = tl.exp(log_sig_base[None, :, :] + logsigmoid(mod)[:, :, None])  # [BLOCK_T, BLOCK_N, BLOCK_D]
    gamma = tl.minimum(tl.maximum(gamma, lo), hi)
    g_cum, x_cum = tl.associative_scan((gamma, (1.0 - gamma) * v[:, None, :]), 0, combine)
    last = tl.minimum(T - chunk * BLOCK_T, BLOCK_T) - 1
    if chunk == 0:
        if HAS_M0:
            carry = tl.load(m0_ptr + bi * N * D + nd_offs, mask=nd_ok, other=0.0).to(ACC)
        else:
            carry = tl.zeros([BLOCK_N, BLOCK_D], ACC)
    else:
        wait_for(flags_ptr + 1 + (chunk - 1) * B * nd + lane)
        carry = tl.load(ends_ptr + ((chunk - 1) * B + bi) * N * D + nd_offs, mask=nd_ok, other=0.0,
                        cache_modifier=".cg")
    if (chunk + 1) * BLOCK_T < T:
        end = last_row3(g_cum, last, BLOCK_T) * carry + last_row3(x_cum, last, BLOCK_T)
        tl.store(ends_ptr + (chunk * B + bi) * N * D + nd_offs, end, mask=nd_ok)
        tl.debug_barrier()
        tl.atomic_xchg(flags_ptr + 1 + chunk * B * nd + lane, 1, sem="release")
    ms = g_cum * carry[None, :, :] + x_cum
    offs = ((bi * T + t[:, None, None]) * N + n[None, :, None]) * D + cols[None, None, :]
    tl.store(m_ptr + offs, ms.to(m_ptr.dtype.element_ty), mask=t_ok[:, None, None] & nd_ok[None, :, :])


@triton.jit
def mdi_bwd_kernel(grad_ptr, v_ptr, mod_ptr, base_ptr, m0_ptr, m_ptr, bounds_ptr, ends_ptr, flags_ptr,
                   dv_ptr, dm0_ptr, dmod_part_ptr, dbase_part_ptr, B, T, N, D,
                   HAS_M0: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """grad, m: [B, T, N, D]; dv: [B, T, D]; dm0: [B, N, D]; ends, flags as in the forward (tiles taken from the
    end of time); dmod_part: [n_tiles_D, B, T, N]; dbase_part: [n_tiles_T, B, N, D] in the accumulation dtype."""
    nd = tl.cdiv(D, BLOCK_D)
    ticket = tl.atomic_add(flags_ptr, 1)
    chunk = ticket // (B * nd)
    lane = ticket % (B * nd)
    bi = (lane // nd).to(tl.int64)
    pid_d = lane % nd
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    nd_ok = (n < N)[:, None] & (cols < D)[None, :]
    nd_offs = n[:, None] * D + cols[None, :]
    lo = tl.load(bounds_ptr).to(ACC)
    hi = tl.load(bounds_ptr + 1).to(ACC)
    base = tl.load(base_ptr + nd_offs, mask=nd_ok, other=0.0).to(ACC)  # [BLOCK_N, BLOCK_D]
    log_sig_base = logsigmoid(base)
    pos = chunk * BLOCK_T + tl.arange(0, BLOCK_T)
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
    last = tl.minimum(T - chunk * BLOCK_T, BLOCK_T) - 1
    if chunk == 0:
        carry = tl.zeros([BLOCK_N, BLOCK_D], ACC)  # delta of the step after the tile
    else:
        wait_for(flags_ptr + 1 + (chunk - 1) * B * nd + lane)
        carry = tl.load(ends_ptr + ((chunk - 1) * B + bi) * N * D + nd_offs, mask=nd_ok, other=0.0,
                        cache_modifier=".cg")
    end = last_row3(g_cum, last, BLOCK_T) * carry + last_row3(x_cum, last, BLOCK_T)
    if (chunk + 1) * BLOCK_T < T:
        tl.store(ends_ptr + (chunk * B + bi) * N * D + nd_offs, end, mask=nd_ok)
        tl.debug_barrier()
        tl.atomic_xchg(flags_ptr + 1 + chunk * B * nd + lane, 1, sem="release")
    delta = g_cum * carry[None, :, :] + x_cum
    m_prev = tl.load(m_ptr + offs - N * D, mask=mask3 & (t >= 1)[:, None, None], other=0.0).to(ACC)
    if HAS_M0:
        m0 = tl.load(m0_ptr + bi * N * D + nd_offs, mask=nd_ok, other=0.0).to(ACC)
        m_prev = tl.where((t == 0)[:, None, None], m0[None, :, :], m_prev)
    v_offs = (bi * T + t[:, None]) * D + cols[None, :]
    v_ok = t_ok[:, None] & (cols < D)[None, :]
    v = tl.load(v_ptr + v_offs, mask=v_ok, other=0.0).to(ACC)
    tl.store(dv_ptr + v_offs, tl.sum(delta * (1.0 - gamma), 1).to(dv_ptr.dtype.element_ty), mask=v_ok)
    unclamped = (g_raw >= lo) & (g_raw <= hi)
    dlog_gamma = tl.where(unclamped & mask3, delta * (m_prev - v[:, None, :]) * g_raw, 0.0)
    dmod = tl.sum(dlog_gamma, 2) * tl.sigmoid(-mod)  # [BLOCK_T, BLOCK_N]
    tl.store(dmod_part_ptr + ((pid_d * B + bi) * T + t[:, None]) * N + n[None, :], dmod, mask=tn_ok)
    dbase = tl.sum(dlog_gamma, 0) * tl.sigmoid(-base)
    tl.store(dbase_part_ptr + (chunk * B + bi) * N * D + nd_offs, dbase, mask=nd_ok)
    if (chunk + 1) * BLOCK_T >= T:  # this tile holds t = 0: dm0 = g_0 delta_0
        mod0 = tl.load(mod_ptr + bi * T * N + n, mask=n < N, other=0.0).to(ACC)
        gamma0 = tl.minimum(tl.maximum(tl.exp(log_sig_base + logsigmoid(mod0)[:, None]), lo), hi)
        tl.store(dm0_ptr + bi * N * D + nd_offs, (gamma0 * end).to(dm0_ptr.dtype.element_ty), mask=nd_ok)
