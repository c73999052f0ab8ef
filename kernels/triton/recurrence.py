# recurrence: h_t = z_t * s_t + gamma_t * h_{t-1}, s_t = sigmoid(W h_{t-1} + bias), W block-diagonal [H, d, d].
# backward (reverse in time): delta_t = G_t + carry_t; e_t = delta_t z_t s_t (1 - s_t);
#   carry_{t-1} = gamma_t delta_t + W^T e_t; dW += e_t^T h_{t-1}; dbias += sum_b e_t; dh0 = carry_{-1}.
# One program per (batch tile, head) walks all T steps with the head's d x d block of W resident on chip
# (loop-invariant tl.dot operand); the batch tile x d x d products are tl.dot. d is padded to a power of two
# >= 16 (tl.dot's minimum) with zero weights, so padded channels stay 0. s_t is recomputed in the backward
# from the saved h_{t-1} (one extra tl.dot per step instead of a [B, T, D] buffer). dW and dbias are
# accumulated in registers over the program's steps and written per batch tile; the caller sums the tiles.
# PREC "3xtf32" (float32 I/O) splits each float32 operand into a tf32 head and a tail and sums three tf32 tensor-core
# products (error ~2^-22): on an H100 at B=16, D=1024, H=8 "ieee" (FMA) takes 11 ms forward / 115 ms backward and
# plain "tf32" gives 2e-4 relative error; Triton's own "tf32x3" ran out of shared memory.
import triton
import triton.language as tl


@triton.jit
def split_tf32(x):
    """x = head + tail with head exact in tf32 (low 13 mantissa bits cleared)."""
    head = (x.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
    return head, x - head


@triton.jit
def matmul(x, y, PREC: tl.constexpr, ACC: tl.constexpr):
    """x @ y accumulated in ACC, at precision PREC ("ieee", "tf32" or "3xtf32")."""
    if PREC == "3xtf32":
        x_head, x_tail = split_tf32(x)
        y_head, y_tail = split_tf32(y)
        out = tl.dot(x_tail, y_head, input_precision="tf32")
        out = tl.dot(x_head, y_tail, out, input_precision="tf32")
        return tl.dot(x_head, y_head, out, input_precision="tf32")
    else:
        return tl.dot(x, y, input_precision=PREC, out_dtype=ACC)


@triton.jit
def program_tile(bias_ptr, h0_ptr, B, D, d, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, ACC: tl.constexpr,
                 BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """What a program (batch tile, head) owns: head; rows [BLOCK_B]; j [BLOCK_H] (channel in the head) and
    cols = head * d + j; masks ok [BLOCK_B, BLOCK_H] and w_ok [BLOCK_H, BLOCK_H]; bias [BLOCK_H] and
    h0 [BLOCK_B, BLOCK_H] of its channels (zeros when absent)."""
    head = tl.program_id(1)
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    j = tl.arange(0, BLOCK_H)
    cols = head * d + j
    ok = (rows < B)[:, None] & (j < d)[None, :]
    w_ok = (j < d)[:, None] & (j < d)[None, :]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + cols, mask=j < d, other=0.0).to(ACC)
    else:
        bias = tl.zeros([BLOCK_H], ACC)
    if HAS_H0:
        h0 = tl.load(h0_ptr + rows[:, None].to(tl.int64) * D + cols[None, :], mask=ok, other=0.0).to(ACC)
    else:
        h0 = tl.zeros([BLOCK_B, BLOCK_H], ACC)
    return head, rows, j, cols, ok, w_ok, bias, h0


@triton.jit
def recurrence_fwd_kernel(z_ptr, g_ptr, w_ptr, bias_ptr, h0_ptr, h_ptr, B, T, D, d,
                          HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
                          BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr):
    """z, gamma, h: [B, T, D]; w: [H, d, d]; bias: [D]; h0: [B, D]."""
    head, rows, j, cols, ok, w_ok, bias, h = program_tile(bias_ptr, h0_ptr, B, D, d, HAS_BIAS, HAS_H0, ACC, BLOCK_B,
                                                          BLOCK_H)
    w_head = w_ptr + head.to(tl.int64) * d * d
    wt = tl.load(w_head + j[None, :] * d + j[:, None], mask=w_ok, other=0.0).to(ACC)  # [BLOCK_H, BLOCK_H] = W^T
    offs = rows[:, None].to(tl.int64) * T * D + cols[None, :]  # [BLOCK_B, BLOCK_H] at t = 0
    for t in range(T):
        z = tl.load(z_ptr + offs, mask=ok, other=0.0).to(ACC)
        gamma = tl.load(g_ptr + offs, mask=ok, other=0.0).to(ACC)
        p = matmul(h, wt, PREC, ACC) + bias[None, :]
        s = tl.sigmoid(p)
        h = z * s + gamma * h
        tl.store(h_ptr + offs, h.to(h_ptr.dtype.element_ty), mask=ok)
        offs += D


@triton.jit
def recurrence_bwd_kernel(grad_ptr, z_ptr, g_ptr, w_ptr, bias_ptr, h0_ptr, h_ptr,
                          dz_ptr, dg_ptr, dh0_ptr, dw_part_ptr, dbias_part_ptr, B, T, D, d, H,
                          HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr,
                          BLOCK_B: tl.constexpr, BLOCK_H: tl.constexpr, RELOAD_W: tl.constexpr = False):
    """RELOAD_W re-reads W (from L2) every step instead of keeping W and W^T resident, for when their operand copies
    do not fit in shared memory (3xtf32 at d = 128).
    grad, z, gamma, h, dz, dgamma: [B, T, D]; dh0: [B, D];
    dw_part: [n_tiles, H, d, d] and dbias_part: [n_tiles, D] float32/64, one slice per batch tile."""
    head, rows, j, cols, ok, w_ok, bias, h0 = program_tile(bias_ptr, h0_ptr, B, D, d, HAS_BIAS, HAS_H0, ACC, BLOCK_B,
                                                           BLOCK_H)
    tile = tl.program_id(0)
    w_head = w_ptr + head.to(tl.int64) * d * d
    w = tl.load(w_head + j[:, None] * d + j[None, :], mask=w_ok, other=0.0).to(ACC)  # [BLOCK_H, BLOCK_H] = W
    wt = tl.trans(w)
    carry = tl.zeros([BLOCK_B, BLOCK_H], ACC)  # gamma_{t+1} delta_{t+1} + W^T e_{t+1}
    dw = tl.zeros([BLOCK_H, BLOCK_H], ACC)
    dbias = tl.zeros([BLOCK_H], ACC)
    row_offs = rows[:, None].to(tl.int64) * T * D + cols[None, :]
    for step in range(T):
        t = T - 1 - step
        offs = row_offs + t * D
        h_prev = tl.load(h_ptr + offs - D, mask=ok & (t > 0), other=0.0).to(ACC)
        h_prev = tl.where(t > 0, h_prev, h0)
        z = tl.load(z_ptr + offs, mask=ok, other=0.0).to(ACC)
        gamma = tl.load(g_ptr + offs, mask=ok, other=0.0).to(ACC)
        delta = tl.load(grad_ptr + offs, mask=ok, other=0.0).to(ACC) + carry
        if RELOAD_W:
            w = tl.load(w_head + j[:, None] * d + j[None, :], mask=w_ok, other=0.0).to(ACC)
            wt = tl.load(w_head + j[None, :] * d + j[:, None], mask=w_ok, other=0.0).to(ACC)
        s = tl.sigmoid(matmul(h_prev, wt, PREC, ACC) + bias[None, :])
        e = delta * z * s * (1.0 - s)
        tl.store(dz_ptr + offs, (delta * s).to(dz_ptr.dtype.element_ty), mask=ok)
        tl.store(dg_ptr + offs, (delta * h_prev).to(dg_ptr.dtype.element_ty), mask=ok)
        dw += matmul(tl.trans(e), h_prev, PREC, ACC)
        dbias += tl.sum(e, 0)
        carry = gamma * delta + matmul(e, w, PREC, ACC)
    tl.store(dh0_ptr + rows[:, None].to(tl.int64) * D + cols[None, :], carry.to(dh0_ptr.dtype.element_ty), mask=ok)
    dw_offs = (tile * H + head).to(tl.int64) * d * d + j[:, None] * d + j[None, :]
    tl.store(dw_part_ptr + dw_offs, dw, mask=w_ok)
    tl.store(dbias_part_ptr + tile.to(tl.int64) * D + cols, dbias, mask=j < d)
