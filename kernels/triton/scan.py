# scan: h_t = a_t * h_{t-1} + b_t (h_{-1} = h0); reverse runs t = T-1 .. 0 from h_T = h0.
# backward: delta_t = G_t + a_{t+1} * delta_{t+1}; da_t = delta_t * h_{t-1}; db_t = delta_t; dh0 = a_0 * delta_0.
# One kernel for both: a program owns BLOCK_D channels of one batch row and walks its span of steps in
# [BLOCK_T, BLOCK_D] tiles, each tile a tl.associative_scan along time joined to the carry. Steps are counted in
# processing order (pos); REVERSE maps pos to time t = T-1-pos. When B*D gives too few programs, the steps are cut
# into NCH chunks: MODE 1 writes each chunk's (prod a, end state from 0), a short scan over chunks gives every
# chunk's carry-in, and MODE 0/2 runs all chunks in parallel from those carries.
import triton
import triton.language as tl


@triton.jit
def combine(a_left, b_left, a_right, b_right):
    """(a, b) pairs of h -> a h + b, `left` applied first."""
    return a_left * a_right, b_left * a_right + b_right


@triton.jit
def last_row(x, last, BLOCK_T: tl.constexpr):
    """Row `last` of x [BLOCK_T, C] as [C]: the carry after a tile."""
    return tl.sum(tl.where((tl.arange(0, BLOCK_T) == last)[:, None], x, 0.0), 0)


@triton.jit
def last_row3(x, last, BLOCK_T: tl.constexpr):
    """Row `last` of x [BLOCK_T, N, C] as [N, C]."""
    return tl.sum(tl.where((tl.arange(0, BLOCK_T) == last)[:, None, None], x, 0.0), 0)


@triton.jit
def scan_kernel(a_ptr, b_ptr, init_ptr, out_ptr, h_ptr, h0_ptr, da_ptr, dh0_ptr, agg_a_ptr, agg_b_ptr,
                T, D, L, NCH,
                REVERSE: tl.constexpr, SHIFT_A: tl.constexpr, HAS_INIT: tl.constexpr, HAS_H0: tl.constexpr,
                MODE: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """MODE 0: out = scan. MODE 1: per-chunk aggregates only. MODE 2 (backward, SHIFT_A): out = db = delta,
    da = delta * h_prev, dh0 = a(first forward step) * delta there.
    a, b, out, h, da: [B, T, D]; init: [B, NCH, D] (carry into each chunk); h0, dh0: [B, D]; agg_*: [B, NCH, D]."""
    pid_d = tl.program_id(0)
    bi = tl.program_id(1).to(tl.int64)
    chunk = tl.program_id(2)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # [BLOCK_D]
    col_ok = cols < D
    row0 = bi * T * D
    if HAS_INIT:
        carry = tl.load(init_ptr + (bi * NCH + chunk) * D + cols, mask=col_ok, other=0.0).to(ACC)
    else:
        carry = tl.zeros([BLOCK_D], ACC)
    prod = tl.full([BLOCK_D], 1.0, ACC)
    if MODE == 2:
        if HAS_H0:
            h0 = tl.load(h0_ptr + bi * D + cols, mask=col_ok, other=0.0).to(ACC)
        else:
            h0 = tl.zeros([BLOCK_D], ACC)
    lo = chunk * L
    hi = tl.minimum(lo + L, T)
    for start in range(lo, hi, BLOCK_T):
        pos = start + tl.arange(0, BLOCK_T)  # [BLOCK_T]
        ok = (pos < hi)[:, None] & col_ok[None, :]
        if REVERSE:
            t = T - 1 - pos
        else:
            t = pos
        offs = row0 + t.to(tl.int64)[:, None] * D + cols[None, :]  # [BLOCK_T, BLOCK_D]
        if SHIFT_A:  # multiplier at pos is a at the time of pos - 1 (0 at pos 0)
            if REVERSE:
                t_a = t + 1
            else:
                t_a = t - 1
            a = tl.load(a_ptr + row0 + t_a.to(tl.int64)[:, None] * D + cols[None, :],
                        mask=ok & (pos >= 1)[:, None], other=0.0).to(ACC)
        else:
            a = tl.load(a_ptr + offs, mask=ok, other=0.0).to(ACC)
        b = tl.load(b_ptr + offs, mask=ok, other=0.0).to(ACC)
        a_cum, b_cum = tl.associative_scan((a, b), 0, combine)
        hs = a_cum * carry[None, :] + b_cum  # [BLOCK_T, BLOCK_D]
        last = tl.minimum(hi - start, BLOCK_T) - 1
        carry = last_row(hs, last, BLOCK_T)
        if MODE == 1:
            prod = prod * last_row(a_cum, last, BLOCK_T)
        if MODE == 0:
            tl.store(out_ptr + offs, hs.to(out_ptr.dtype.element_ty), mask=ok)
        if MODE == 2:
            tl.store(out_ptr + offs, hs.to(out_ptr.dtype.element_ty), mask=ok)
            if REVERSE:  # h_prev is h at the time of pos + 1, h0 past the end
                t_h = t - 1
            else:
                t_h = t + 1
            h_prev = tl.load(h_ptr + row0 + t_h.to(tl.int64)[:, None] * D + cols[None, :],
                             mask=ok & (pos + 1 < T)[:, None], other=0.0).to(ACC)
            h_prev = tl.where((pos + 1 == T)[:, None], h0[None, :], h_prev)
            tl.store(da_ptr + offs, (hs * h_prev).to(da_ptr.dtype.element_ty), mask=ok)
    if MODE == 1:
        agg = (bi * NCH + chunk) * D + cols
        tl.store(agg_a_ptr + agg, prod, mask=col_ok)
        tl.store(agg_b_ptr + agg, carry, mask=col_ok)
    if MODE == 2:
        if chunk == NCH - 1:
            if REVERSE:
                t_first = 0
            else:
                t_first = T - 1
            a_first = tl.load(a_ptr + row0 + t_first * D + cols, mask=col_ok, other=0.0).to(ACC)
            tl.store(dh0_ptr + bi * D + cols, (a_first * carry).to(dh0_ptr.dtype.element_ty), mask=col_ok)
