# scan: h_t = a_t * h_{t-1} + b_t (h_{-1} = h0); reverse runs t = T-1 .. 0 from h_T = h0.
# backward: delta_t = G_t + a_{t+1} * delta_{t+1}; da_t = delta_t * h_{t-1}; db_t = delta_t; dh0 = a_0 * delta_0.
# One single-pass kernel for both (a chained scan): a program owns one [BLOCK_T, BLOCK_D] tile (BLOCK_T steps of
# BLOCK_D channels of one batch row), scans it with tl.associative_scan from a zero state, then waits for the
# state at the end of the previous tile of its channels (published by that tile's program: value, then a flag),
# publishes its own end state and writes h = a_cum * carry + b_cum. Programs take tiles in ticket order (an atomic
# counter), so every tile's predecessor is already running: the waits cannot deadlock, and only the tiny carry
# hand-off is sequential. Parallel over B, D and T alike, so small B*D with long T is as fast as large B*D;
# a and b are read once and h written once. Steps are counted in processing order (pos); REVERSE maps pos to
# time t = T-1-pos.
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
def wait_for(flag):
    """Spins until the ready flag of the previous tile is set (acquire: its published state is then visible)."""
    while tl.atomic_add(flag, 0, sem="acquire") == 0:
        pass


@triton.jit
def scan_kernel(a_ptr, b_ptr, init_ptr, out_ptr, h_ptr, h0_ptr, da_ptr, dh0_ptr, ends_ptr, flags_ptr, B, T, D,
                REVERSE: tl.constexpr, SHIFT_A: tl.constexpr, HAS_INIT: tl.constexpr, HAS_H0: tl.constexpr,
                BACKWARD: tl.constexpr, ACC: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    """Forward: out = h. Backward (SHIFT_A, multiplier at pos = a at pos - 1): out = db = delta,
    da = delta * h_prev, dh0 = a(first forward step) * delta there.
    a, b, out, h, da: [B, T, D]; init, h0, dh0: [B, D]; ends: [n_tiles_T, B, D] in ACC (end state of each tile);
    flags: int32 [1 + n_tiles_T * B * n_tiles_D], zeroed: ticket counter, then one ready flag per tile."""
    nd = tl.cdiv(D, BLOCK_D)
    ticket = tl.atomic_add(flags_ptr, 1)
    chunk = ticket // (B * nd)  # tile index along processing steps
    lane = ticket % (B * nd)  # (batch row, channel tile)
    bi = (lane // nd).to(tl.int64)
    cols = (lane % nd) * BLOCK_D + tl.arange(0, BLOCK_D)  # [BLOCK_D]
    col_ok = cols < D
    row0 = bi * T * D
    pos = chunk * BLOCK_T + tl.arange(0, BLOCK_T)  # [BLOCK_T]
    ok = (pos < T)[:, None] & col_ok[None, :]
    if REVERSE:
        t = T - 1 - pos
    else:
        t = pos
    offs = row0 + t.to(tl.int64)[:, None] * D + cols[None, :]  # [BLOCK_T, BLOCK_D]
    if SHIFT_A:
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
    last = tl.minimum(T - chunk * BLOCK_T, BLOCK_T) - 1
    if chunk == 0:
        if HAS_INIT:
            carry = tl.load(init_ptr + bi * D + cols, mask=col_ok, other=0.0).to(ACC)
        else:
            carry = tl.zeros([BLOCK_D], ACC)
    else:
        wait_for(flags_ptr + 1 + (chunk - 1) * B * nd + lane)
        carry = tl.load(ends_ptr + ((chunk - 1) * B + bi) * D + cols, mask=col_ok, other=0.0,
                        cache_modifier=".cg")
    end = last_row(a_cum, last, BLOCK_T) * carry + last_row(b_cum, last, BLOCK_T)
    if (chunk + 1) * BLOCK_T < T:
        tl.store(ends_ptr + (chunk * B + bi) * D + cols, end, mask=col_ok)
        tl.debug_barrier()
        tl.atomic_xchg(flags_ptr + 1 + chunk * B * nd + lane, 1, sem="release")
    hs = a_cum * carry[None, :] + b_cum
    tl.store(out_ptr + offs, hs.to(out_ptr.dtype.element_ty), mask=ok)
    if BACKWARD:
        if REVERSE:  # h_prev is h at the time of pos + 1, h0 past the end
            t_h = t - 1
        else:
            t_h = t + 1
        h_prev = tl.load(h_ptr + row0 + t_h.to(tl.int64)[:, None] * D + cols[None, :],
                         mask=ok & (pos + 1 < T)[:, None], other=0.0).to(ACC)
        if HAS_H0:
            h0 = tl.load(h0_ptr + bi * D + cols, mask=col_ok, other=0.0).to(ACC)
            h_prev = tl.where((pos + 1 == T)[:, None], h0[None, :], h_prev)
        tl.store(da_ptr + offs, (hs * h_prev).to(da_ptr.dtype.element_ty), mask=ok)
        if (chunk + 1) * BLOCK_T >= T:
            if REVERSE:
                t_first = 0
            else:
                t_first = T - 1
            a_first = tl.load(a_ptr + row0 + t_first * D + cols, mask=col_ok, other=0.0).to(ACC)
            tl.store(dh0_ptr + bi * D + cols, (a_first * end).to(dh0_ptr.dtype.element_ty), mask=col_ok)
