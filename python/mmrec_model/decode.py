"""The one-token step of MMRecLM in plain torch ops, on preallocated state buffers updated in place.

For T = 1 every op of the block is a tiny computation (SPEC.md):
    recurrence   h = z * sigmoid(W h + b) + gamma * h     one batched [H] matvec
    scan         h = gamma * h + z * sigmoid(g)           (linear variant)
    mdi          m = g * m + (1 - g) * v  over N banks
    read         softmax over the 1 + N + S items {h, m^1..N, slots}, per read head
    slots        one memory_update step, only on the token that completes a chunk
so the step calls no custom op (~100 us of dispatch each on CPU) and runs ~25 small torch kernels per layer.
The buffers of one layer sit in one tensor [B, 1 + N + S, D] = (h, banks, slots): the read normalises
and attends over it without a concatenation, and the updates write into its views.

Rows may sit at different stream positions (prompts of different lengths): each row carries its own
position, and a row's slot memory is updated on the step that completes its chunk (a masked update when only
some rows complete). Which rows complete is known on the host (positions advance by one per step), so no
step waits on the device to decide.

On CPU float32/float64 the whole step is one call of a C++ kernel with packed weights (mmrec_ops.decode_step_cpu,
kernels/cpu/decode_step.cpp) on the same buffers; the torch ops below serve other devices and dtypes.

This module takes the model as an argument (blocks, embed, norm, lm_head, config) and imports nothing above
it, so generate.py can use it.
"""
from __future__ import annotations

import math
import weakref
from typing import Dict, List, Optional, Sequence

import mmrec_ops
import torch
import torch.nn.functional as F
from torch import Tensor

from .state import LayerState, MMRecState, acc_dtype


_TRANSPOSED: Dict[int, tuple] = {}      # id(weight) -> (version key, weakref to the weight, transposed copy)


def _t(weight: Tensor) -> Tensor:
    """weight [N, K] -> [K, N] for x @ W^T. On CPU a contiguous copy, cached until the weight changes (its version
    counter or storage) or dies: a [1, K] @ [K, N] GEMM streams the matrix 1.3-3x faster than against the [N, K]
    layout on the 2-core EPYC (small's 25 matrices: 5.3-5.9 ms against 6.8-8.9 ms, 1 thread, loaded machine), at
    the price of a second copy of the matrices. On CUDA the transposed view (cuBLAS reads either layout)."""
    if weight.device.type != "cpu":
        return weight.detach().transpose(-2, -1)
    key = (weight._version, weight.data_ptr(), weight.dtype)
    hit = _TRANSPOSED.get(id(weight))
    if hit is None or hit[0] != key or hit[1]() is not weight:
        ident = id(weight)
        ref = weakref.ref(weight, lambda _: _TRANSPOSED.pop(ident, None))
        hit = (key, ref, weight.detach().transpose(-2, -1).contiguous())
        _TRANSPOSED[ident] = hit
    return hit[2]


class _BlockWeights:
    """The parameters one block step reads, as views (no copies), plus sigmoid(base) of the banks
    (a function of the weights only). Taken when a DecodeState is built: rebuild it after changing weights."""

    def __init__(self, block):
        cfg = block.config
        self.linear = block.linear
        self.D, self.N, self.S, self.H = cfg.d_model, cfg.n_banks, cfg.n_slots, cfg.n_heads
        self.Hr, self.dh, self.C = cfg.n_read_heads, cfg.read_head_dim, cfg.chunk_len
        self.eps, self.mdi_eps = cfg.norm_eps, cfg.mdi_eps
        self.norm_in, self.norm_ffn = block.norm_in.weight, block.norm_ffn.weight
        self.w_in_t, self.b_in = _t(block.in_proj.weight), block.in_proj.bias          # [D, W], [W]
        if not self.linear:
            d = cfg.head_dim
            self.w_g_t = _t(block.w_g)                                                 # [H, d, d]: h @ w^T
            self.b_g = block.b_g.view(self.H, 1, d)                                    # [H, 1, d]
        self.sig_base = torch.sigmoid(block.base)                                      # [N, D]
        self.one = torch.ones((), device=block.base.device, dtype=block.base.dtype)
        self.scale = 1.0 / math.sqrt(self.dh)
        self.w_key_t = _t(block.key_proj.weight)                                       # [D, D]
        self.w_a_t, self.b_a = _t(block.strength_proj.weight), block.strength_proj.bias  # [D, 1], [1]
        self.w_o_t = _t(block.out_proj.weight)                                         # [D, D]
        self.w_up_t, self.w_down_t = _t(block.ffn.up.weight), _t(block.ffn.down.weight)  # [D, 2F], [F, D]
        self.F = block.ffn.down.weight.shape[1]


class DecodeState:
    """Preallocated decode state of B rows: per layer `mem` [B, 1 + N + S, D] = (h, m^1..N, slots) and the
    open chunk's running sum `chunk_sum` [B, D] (float32; float64 for a float64 model), and every row's
    stream position (host list `positions`, device tensor `pos`). `model.step` updates it in place.
    kernel: None = the CPU kernel where it applies (CPU, float32/float64 weights of the state's dtype, a build
    with it), True = require it, False = the torch ops."""

    @torch.no_grad()
    def __init__(self, model, batch_size: int, device=None, dtype=None, kernel: Optional[bool] = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"DecodeState: batch_size must be an int >= 1, got {batch_size!r}")
        cfg = model.config
        ref = model.embed.weight
        self.device = ref.device if device is None else torch.device(device)
        self.dtype = ref.dtype if dtype is None else dtype
        self.config = cfg
        B, D, N, S = batch_size, cfg.d_model, cfg.n_banks, cfg.n_slots
        self.batch_size = B
        kw = dict(device=self.device, dtype=self.dtype)
        self.mem = [torch.zeros(B, 1 + N + S, D, **kw) for _ in model.blocks]
        self.chunk_sum = [torch.zeros(B, D, device=self.device, dtype=acc_dtype(self.dtype)) for _ in model.blocks]
        for mem, block in zip(self.mem, model.blocks):
            mem[:, 1 + N:] = block.M0.detach().to(**kw)                               # a fresh stream: slots = M0
        self.positions: List[int] = [0] * B
        self.pos = torch.zeros(B, dtype=torch.long, device=self.device)
        applies = (self.device.type == "cpu" and self.dtype in (torch.float32, torch.float64)
                   and ref.dtype == self.dtype and mmrec_ops.has_decode_step_cpu())
        if kernel and not applies:
            raise ValueError("DecodeState: kernel=True needs CPU float32/float64 weights of the state's dtype and a "
                             "build of mmrec_ops._C with the decode step")
        self.kernel = _cpu_kernel(model, self) if applies and kernel is not False else None
        if self.kernel is None:                     # the torch ops' weights (transposed copies on CPU)
            self.weights = [_BlockWeights(b) for b in model.blocks]
            self.embed, self.norm_w, self.lm_head_t = model.embed.weight, model.norm.weight, _t(model.lm_head.weight)

    # --------------------------------------------------------------------------------- state transfer
    @torch.no_grad()
    def load(self, state: MMRecState, rows: Optional[Sequence[int]] = None) -> None:
        """Copies `state` (len(rows) rows, one position) into `rows` (default: all rows)."""
        rows = list(range(self.batch_size)) if rows is None else list(rows)
        if not isinstance(state, MMRecState) or len(state.layers) != len(self.mem):
            raise ValueError(f"DecodeState.load: need an MMRecState of {len(self.mem)} layers")
        if state.batch_size != len(rows):
            raise ValueError(f"DecodeState.load: the state has {state.batch_size} rows, {len(rows)} rows were named")
        N = self.config.n_banks
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        for mem, csum, s in zip(self.mem, self.chunk_sum, state.layers):
            mem[index, 0] = s.h.to(mem)
            mem[index, 1:1 + N] = s.m.to(mem)
            mem[index, 1 + N:] = s.slots.to(mem)
            csum[index] = s.chunk_sum.to(csum)
        for r in rows:
            self.positions[r] = state.position
        self.pos[index] = state.position

    @torch.no_grad()
    def export(self, rows: Optional[Sequence[int]] = None) -> MMRecState:
        """An MMRecState (copies) of `rows` (default: all); the rows must share one position."""
        rows = list(range(self.batch_size)) if rows is None else list(rows)
        positions = {self.positions[r] for r in rows}
        if len(positions) != 1:
            raise ValueError(f"DecodeState.export: rows {rows} sit at different positions {sorted(positions)}")
        N = self.config.n_banks
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        layers = [LayerState(mem[index, 0], mem[index, 1:1 + N], mem[index, 1 + N:], csum[index])
                  for mem, csum in zip(self.mem, self.chunk_sum)]
        return MMRecState(layers, positions.pop())

    def completing(self) -> Optional[Tensor]:
        """Which rows complete their chunk with the next token: None (none), True (all) or a [B, 1] mask."""
        C = self.config.chunk_len
        done = [(p + 1) % C == 0 for p in self.positions]
        if not any(done):
            return None
        if all(done):
            return True
        return (torch.remainder(self.pos, C) == C - 1).to(self.dtype)[:, None]    # [B, 1]


_PACKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()     # model -> (weights key, packed weights)


def _cpu_kernel(model, state: DecodeState):
    """The C++ one-token step over `state`'s buffers. The packed weights are built once per model and reused until a
    parameter changes (its version counter or storage): packing `small` takes ~0.1 s, binding a state microseconds."""
    params = list(model.parameters())
    key = tuple((p._version, p.data_ptr(), p.dtype) for p in params)
    hit = _PACKED.get(model)
    if hit is None or hit[0] != key:
        cfg = model.config
        blocks = [dict(norm_in=b.norm_in.weight, w_in=b.in_proj.weight, b_in=b.in_proj.bias,
                       w_g=None if b.linear else b.w_g, b_g=None if b.linear else b.b_g, base=b.base,
                       w_key=b.key_proj.weight, w_a=b.strength_proj.weight, b_a=b.strength_proj.bias,
                       w_o=b.out_proj.weight, norm_ffn=b.norm_ffn.weight, w_up=b.ffn.up.weight,
                       w_down=b.ffn.down.weight)
                  for b in model.blocks]
        packed = mmrec_ops.decode_step_cpu(model.embed.weight, model.norm.weight, model.lm_head.weight, blocks,
                                           n_heads=cfg.n_heads, n_read_heads=cfg.n_read_heads, n_slots=cfg.n_slots,
                                           chunk_len=cfg.chunk_len, eps=cfg.norm_eps, mdi_eps=cfg.mdi_eps,
                                           linear=cfg.recurrence == "linear")
        hit = (key, packed)
        _PACKED[model] = hit
    return hit[1].bind(state.mem, state.chunk_sum, state.pos)


# ------------------------------------------------------------------------------------------- the step
def _inv_rms(x: Tensor, eps: float) -> Tensor:
    """rsqrt(mean(x^2) + eps) over the last dim of a contiguous x [..., n] -> [..., 1], as one batched dot
    (baddbmm: eps + x.x / n) and one rsqrt: 2 kernels where F.rms_norm dispatches ~10 on CPU."""
    n = x.shape[-1]
    flat = x.reshape(-1, 1, n)                                                         # [R, 1, n]
    return torch.baddbmm(_eps(eps, x), flat, flat.transpose(1, 2), alpha=1.0 / n).rsqrt_().view(*x.shape[:-1], 1)


_EPS = {}


def _eps(eps: float, like: Tensor) -> Tensor:
    """A cached [1, 1, 1] tensor holding eps (no allocation per call)."""
    key = (eps, like.dtype, like.device)
    if key not in _EPS:
        _EPS[key] = torch.full((1, 1, 1), eps, dtype=like.dtype, device=like.device)
    return _EPS[key]


def _rms(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm of x [B, D] with its weight (model.RMSNorm)."""
    return (x * _inv_rms(x, eps)).mul_(weight)


def _rms_sum(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """_rms as an elementwise mean: a reduction torch.compile fuses with its neighbours (the baddbmm of _inv_rms
    would stay a separate cuBLAS call)."""
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def block_step(w: _BlockWeights, x: Tensor, mem: Tensor, chunk_sum: Tensor, update,
               for_compile: bool = False) -> Tensor:
    """One token through one block. x: [B, D] -> [B, D]; mem [B, 1 + N + S, D] and chunk_sum [B, D] are
    updated in place. update: None, True or a [B, 1] float mask of the rows whose chunk completes now.
    for_compile: the norms, the recurrence's per-head matvec and the read as elementwise products and sums,
    which torch.compile fuses into a few kernels; the default form calls batched GEMMs (fewest torch calls in
    eager mode, each a separate cuBLAS kernel under compile). Same math."""
    B, D, N = x.shape[0], w.D, w.N
    rms = _rms_sum if for_compile else _rms
    proj = torch.addmm(w.b_in, rms(x, w.norm_in, w.eps), w.w_in_t)                   # [B, 4D (+D) + N]
    z, f, q, v = proj[:, :D], proj[:, D:2 * D], proj[:, 2 * D:3 * D], proj[:, 3 * D:4 * D]
    gamma = torch.sigmoid(f)
    h = mem[:, 0]                                                                     # [B, D] view
    if w.linear:
        h.mul_(gamma).addcmul_(z, torch.sigmoid(proj[:, 4 * D:5 * D]))                # gamma * h + z * sigma(g)
    elif for_compile:
        hd = h.view(B, w.H, 1, -1)                                                    # [B, H, 1, d]
        p = (hd * w.w_g_t.transpose(1, 2)).sum(-1) + w.b_g.transpose(0, 1)           # [B, H, d] = W h + b
        h.mul_(gamma).addcmul_(z, torch.sigmoid(p).reshape(B, D))
    else:
        p = torch.baddbmm(w.b_g, h.view(B, w.H, -1).transpose(0, 1), w.w_g_t)        # [H, B, d] = W h + b
        h.mul_(gamma).addcmul_(z, torch.sigmoid_(p).transpose(0, 1).reshape(B, D))  # gamma * h + z * sigma(p)
    # banks: m = g m + (1 - g) v = lerp(m, v, 1 - g), 1 - g = clamp(1 - sigma(base) sigma(c), eps, 1 - eps)
    one_minus_g = torch.addcmul(w.one, w.sig_base, torch.sigmoid(proj[:, -N:])[:, :, None], value=-1.0)
    mem[:, 1:1 + N].lerp_(v[:, None], one_minus_g.clamp_(w.mdi_eps, 1 - w.mdi_eps))  # [B, N, D]
    chunk_sum.add_(h)

    # read: per read head, softmax_i(<q, n(item_i)> / sqrt(dh)) over the items {h, m^1..N, slots (before this
    # token's update)}, r = sum_i w_i n(item_i); n(item) = item * rho(item), so the normalised items are never
    # formed: scores = <q, item> * rho / sqrt(dh), r = sum_i (w_i rho_i) item_i
    if for_compile:
        items = mem.view(B, -1, w.Hr, w.dh)                                           # [B, I, Hr, dh] view
        rho = torch.rsqrt((items * items).mean(-1) + w.eps)                          # [B, I, Hr]
        raw = (items * q.view(B, 1, w.Hr, w.dh)).sum(-1)                              # [B, I, Hr]
        weights = torch.softmax(raw * rho * w.scale, dim=1) * rho                     # [B, I, Hr]
        r = (weights[..., None] * items).sum(1).reshape(B, D)                         # [B, D]
    else:
        items = mem.view(B, -1, w.Hr, w.dh).transpose(1, 2)                           # [B, Hr, I, dh] view
        rho = _inv_rms(mem.view(B, -1, w.Hr, w.dh), w.eps).view(B, -1, w.Hr).transpose(1, 2)  # [B, Hr, I]
        raw = torch.matmul(items, q.reshape(B, w.Hr, w.dh, 1)).squeeze(-1)           # [B, Hr, I]
        weights = torch.softmax(raw.mul_(rho).mul_(w.scale), dim=-1).mul_(rho)        # [B, Hr, I]
        r = torch.matmul(weights.unsqueeze(-2), items).reshape(B, D)                  # [B, D]
    y = torch.addmm(x, r, w.w_o_t)                                                    # x + r @ W_o^T
    gv = rms(y, w.norm_ffn, w.eps) @ w.w_up_t                                         # [B, 2F]
    out = torch.addmm(y, F.silu(gv[:, :w.F]).mul_(gv[:, w.F:]), w.w_down_t)         # y + SwiGLU

    if update is not None:                                                            # a chunk completes: one
        s_mean = (chunk_sum / w.C).to(x.dtype)                                        # memory_update step [B, D]
        key = s_mean @ w.w_key_t                                                      # [B, D]
        strength = torch.sigmoid(torch.addmm(w.b_a, s_mean, w.w_a_t))                 # [B, 1]
        slots = mem[:, 1 + N:]                                                        # [B, S, D] view
        addr = torch.softmax(torch.bmm(slots, key[:, :, None]).squeeze(-1) / math.sqrt(D), -1)  # [B, S]
        coef = strength * addr if update is True else strength * update * addr
        slots.addcmul_(coef[:, :, None], s_mean[:, None] - slots)                     # M + sw (s - M)
        if update is True:
            chunk_sum.zero_()
        else:
            chunk_sum.mul_(1 - update)
    return out


def completion_mask(state: DecodeState) -> Tensor:
    """[B, 1] float mask of the rows whose next token completes a chunk, computed on the device (CUDA graphs)."""
    C = state.config.chunk_len
    return (torch.remainder(state.pos, C) == C - 1).to(state.dtype)[:, None]


def step_tensors(state: DecodeState, tokens: Tensor, update, for_compile: bool = False) -> Tensor:
    """The device work of one step (no host bookkeeping; what a CUDA graph captures). tokens [B] -> logits
    [B, V]; `update` and `for_compile` as in block_step. The CPU kernel decides the completing rows from
    `state.pos` itself."""
    if state.kernel is not None:
        logits = torch.empty(state.batch_size, state.config.vocab_size, dtype=state.dtype)
        if tokens.dtype != torch.long or not tokens.is_contiguous():
            tokens = tokens.to(torch.long).contiguous()
        state.kernel.step(tokens, logits, torch.get_num_threads())
        return logits
    x = F.embedding(tokens, state.embed)                                              # [B, D]
    for w, mem, csum in zip(state.weights, state.mem, state.chunk_sum):
        x = block_step(w, x, mem, csum, update, for_compile)
    state.pos.add_(1)
    rms = _rms_sum if for_compile else _rms
    return rms(x, state.norm_w, state.config.norm_eps) @ state.lm_head_t              # [B, V]


@torch.no_grad()
def step(state: DecodeState, tokens: Tensor) -> Tensor:
    """tokens [B] (int) -> logits [B, V]; state advances one position in place."""
    logits = step_tensors(state, tokens, None if state.kernel is not None else state.completing())
    state.positions = [p + 1 for p in state.positions]
    return logits
