"""The MM-Rec language model: embedding -> L MM-Rec blocks -> RMSNorm -> LM head.

Every recurrence runs in one of the mmrec ops (recurrence or scan, memory_read, memory_update); the rest is
GEMMs and elementwise work, parallel over time. The per-layer state (h, m, slots, open-chunk sum)
has a constant size, so a stream can be fed in segments of any length, or one token at a time,
with the same logits as one pass over the whole stream.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple, Union

import mmrec_ops
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MMRecConfig

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _rms(x: Tensor, eps: float) -> Tensor:
    """x / rms(x) over the last dim, computed in float32 (float64 for float64 input)."""
    xf = x.to(_acc_dtype(x.dtype))
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return _rms(x, self.eps) * self.weight.to(x.dtype)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, 2 * hidden, bias=False)    # gate and value in one GEMM
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * value)


# ------------------------------------------------------------------------------------------ state
@dataclass
class LayerState:
    """What one block carries between segments; constant size whatever the context length."""
    h: Tensor          # [B, D]     last output of the core recurrence
    m: Tensor          # [B, N, D]  the N bank memories
    slots: Tensor      # [B, S, D]  long-term slots after the last complete chunk
    chunk_sum: Tensor  # [B, D]     sum of h over the open chunk (float32; float64 for a float64 model)

    def map(self, fn) -> "LayerState":
        return LayerState(fn(self.h), fn(self.m), fn(self.slots), fn(self.chunk_sum))


@dataclass
class MMRecState:
    layers: List[LayerState]
    position: int      # tokens consumed so far; the open chunk holds position % chunk_len of them

    @property
    def batch_size(self) -> int:
        return self.layers[0].h.shape[0]

    def detach(self) -> "MMRecState":
        """The same state cut from the autograd graph (truncated BPTT between training segments)."""
        return MMRecState([s.map(Tensor.detach) for s in self.layers], self.position)

    def to(self, *args, **kwargs) -> "MMRecState":
        """Tensor.to on every tensor; chunk sums keep their float32/float64 accumulation dtype."""
        def move(x: Tensor) -> Tensor:
            return x.to(*args, **kwargs)
        layers = []
        for s in self.layers:
            moved = s.map(move)
            moved.chunk_sum = s.chunk_sum.to(device=moved.h.device, dtype=_acc_dtype(moved.h.dtype))
            layers.append(moved)
        return MMRecState(layers, self.position)

    def select(self, index: Union[Tensor, List[int]]) -> "MMRecState":
        """The state of a subset (or reordering) of the batch rows."""
        return MMRecState([s.map(lambda x: x[index]) for s in self.layers], self.position)


# ------------------------------------------------------------------------------------------ block
class MMRecBlock(nn.Module):
    """Pre-norm MM-Rec block (SPEC.md): recurrence + MDI banks + chunked slot memory, a multi-memory
    read over 1 + N + S items per token, then a SwiGLU feed-forward."""

    def __init__(self, config: MMRecConfig):
        super().__init__()
        self.config = config
        D, N, S, H = config.d_model, config.n_banks, config.n_slots, config.n_heads
        self.linear = config.recurrence == "linear"
        # one GEMM for z, f, q, v (+ g for the linear variant) and the bank modulation c
        self.widths = [D, D, D, D] + ([D] if self.linear else []) + [N]
        self.norm_in = RMSNorm(D, config.norm_eps)
        self.in_proj = nn.Linear(D, sum(self.widths), bias=True)
        if not self.linear:
            self.w_g = nn.Parameter(torch.empty(H, D // H, D // H))   # [H, d, d] block-diagonal W_g
            self.b_g = nn.Parameter(torch.empty(D))
        self.base = nn.Parameter(torch.empty(N, D))                   # bank base-decay logits
        self.key_proj = nn.Linear(D, D, bias=False)                    # W_key
        self.strength_proj = nn.Linear(D, 1, bias=True)                # w_a, b_a
        self.M0 = nn.Parameter(torch.empty(S, D))                      # initial long-term slots
        self.out_proj = nn.Linear(D, D, bias=False)                    # W_o
        self.norm_ffn = RMSNorm(D, config.norm_eps)
        self.ffn = SwiGLU(D, config.d_ffn)
        self.drop = nn.Dropout(config.dropout)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self.config
        D, std = cfg.d_model, cfg.init_std
        residual_std = std / math.sqrt(2 * cfg.n_layers)
        nn.init.normal_(self.in_proj.weight, std=std)
        bias = self.in_proj.bias.split(self.widths)
        for part in bias:
            part.zero_()
        bias[1].fill_(_logit(cfg.core_decay_init))                    # gamma = sigmoid(f) starts near 0.9
        # bank decay = sigmoid(base) * sigmoid(c): split each target decay evenly between the two factors
        half = torch.tensor([_logit(math.sqrt(d)) for d in cfg.bank_decays])
        bias[-1].copy_(half)
        self.base.copy_(half[:, None].expand_as(self.base))
        if not self.linear:
            nn.init.normal_(self.w_g, std=cfg.recurrent_init_scale / math.sqrt(cfg.head_dim))
            self.b_g.zero_()
        nn.init.normal_(self.key_proj.weight, std=std)
        nn.init.normal_(self.strength_proj.weight, std=std)
        self.strength_proj.bias.zero_()
        nn.init.normal_(self.M0, std=cfg.slot_init_std)
        nn.init.normal_(self.out_proj.weight, std=residual_std)
        nn.init.normal_(self.ffn.up.weight, std=std)
        nn.init.normal_(self.ffn.down.weight, std=residual_std)

    def init_state(self, batch_size: int, device=None, dtype=None) -> LayerState:
        cfg = self.config
        device = self.M0.device if device is None else device
        dtype = self.M0.dtype if dtype is None else dtype
        B, D = batch_size, cfg.d_model
        return LayerState(
            h=torch.zeros(B, D, device=device, dtype=dtype),
            m=torch.zeros(B, cfg.n_banks, D, device=device, dtype=dtype),
            slots=self.M0.to(device=device, dtype=dtype).unsqueeze(0).expand(B, -1, -1),
            chunk_sum=torch.zeros(B, D, device=device, dtype=_acc_dtype(dtype)),
        )

    def forward(self, x: Tensor, state: Optional[LayerState], position: int) -> Tuple[Tensor, LayerState]:
        cfg = self.config
        B, T, D = x.shape
        C, N, S = cfg.chunk_len, cfg.n_banks, cfg.n_slots
        k0 = position % C                         # tokens of the open chunk already consumed

        u = self.norm_in(x)                                                   # [B, T, D]
        parts = self.in_proj(u).split(self.widths, dim=-1)
        z, f, q, v, c = parts[0], parts[1], parts[2], parts[3], parts[-1]     # 4 x [B, T, D], [B, T, N]
        dt = z.dtype                              # ops take one dtype (bf16 under autocast)
        h0 = None if state is None else state.h.to(dt)                       # [B, D]
        m0 = None if state is None else state.m.to(dt)                       # [B, N, D]
        gamma = torch.sigmoid(f)                                              # [B, T, D]
        if self.linear:
            h = mmrec_ops.scan(gamma, z * torch.sigmoid(parts[4]), h0)       # [B, T, D]
        else:
            h = mmrec_ops.recurrence(z, gamma, self.w_g.to(dt), self.b_g.to(dt), h0)

        # chunk summaries, aligned to absolute stream positions: local chunk 0 completes the open chunk
        n_complete = (k0 + T) // C                # chunks completed inside this segment
        n_local = -(-(k0 + T) // C)               # chunks this segment touches
        acc = _acc_dtype(dt)
        sums = _to_chunks(h.to(acc), k0, n_local, C).sum(2)                  # [B, n_local, D]
        if state is not None:
            sums = torch.cat([sums[:, :1] + state.chunk_sum.unsqueeze(1), sums[:, 1:]], 1)
        chunk_sum = sums[:, n_complete] if n_local > n_complete else sums.new_zeros(B, D)
        slots0 = (self.M0.unsqueeze(0).expand(B, S, D) if state is None else state.slots).to(dt)
        if n_complete > 0:
            s = (sums[:, :n_complete] / C).to(dt)                             # [B, NC, D] chunk means
            strength = torch.sigmoid(self.strength_proj(s)).squeeze(-1).to(dt)  # [B, NC]
            Ms = mmrec_ops.memory_update(slots0, self.key_proj(s).to(dt), s, strength)  # [B, NC + 1, S, D]
        else:
            Ms = slots0.unsqueeze(1)                                          # [B, 1, S, D]

        # the N banks (mdi) and the multi-memory read in one op: the [B, T, N, D] banks never reach memory
        r, m_last = mmrec_ops.memory_read(q, h, v, c, self.base.to(dt), Ms[:, :n_local], m0, k0, C,
                                          cfg.n_read_heads, cfg.mdi_eps, cfg.norm_eps)  # [B, T, D], [B, N, D]
        y = x + self.drop(self.out_proj(r))
        out = y + self.drop(self.ffn(self.norm_ffn(y)))
        # copies, not views: a view would keep the segment's [B, T, ...] buffers alive as long as the state (84 MiB
        # behind a 0.05 MiB state for a 4,096-token prefill of `small`)
        return out, LayerState(h[:, -1].clone(), m_last, Ms[:, -1].clone(), chunk_sum.clone())


def _to_chunks(x: Tensor, k0: int, n_chunks: int, C: int) -> Tensor:
    """[B, T, ...] -> [B, n_chunks, C, ...], zero-padded by k0 steps in front (the open chunk's
    consumed tokens) and at the end up to a whole chunk."""
    B, T = x.shape[:2]
    pad = (0, 0) * (x.dim() - 2) + (k0, n_chunks * C - k0 - T)
    return F.pad(x, pad).view(B, n_chunks, C, *x.shape[2:])


# ------------------------------------------------------------------------------------------ model
class MMRecLM(nn.Module):
    """MM-Rec language model. ``model(ids, state=None) -> (logits, state)``."""

    def __init__(self, config: MMRecConfig):
        super().__init__()
        if not isinstance(config, MMRecConfig):
            raise TypeError(f"MMRecLM: config must be an MMRecConfig, got {type(config).__name__}")
        config.validate()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(MMRecBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        nn.init.normal_(self.embed.weight, std=config.init_std)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=config.init_std)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        params = {id(p): p for p in self.parameters()}         # tied weights once
        if exclude_embeddings:
            params.pop(id(self.embed.weight), None)
            params.pop(id(self.lm_head.weight), None)
        return sum(p.numel() for p in params.values())

    def init_state(self, batch_size: int, device=None, dtype=None) -> MMRecState:
        """The state of a fresh stream: h = 0, m = 0, slots = M0, empty open chunk."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"MMRecLM.init_state: batch_size must be an int >= 1, got {batch_size!r}")
        return MMRecState([b.init_state(batch_size, device, dtype) for b in self.blocks], 0)

    def _check(self, ids: Tensor, state: Optional[MMRecState]) -> None:
        if not isinstance(ids, Tensor) or ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"MMRecLM: ids must be an integer tensor [B, T], got "
                            f"{ids.dtype if isinstance(ids, Tensor) else type(ids).__name__}")
        if ids.dim() != 2 or ids.shape[0] < 1 or ids.shape[1] < 1:
            raise ValueError(f"MMRecLM: ids must have shape [B, T] with B, T >= 1, got {tuple(ids.shape)}")
        if state is not None:
            if not isinstance(state, MMRecState):
                raise TypeError(f"MMRecLM: state must be an MMRecState or None, got {type(state).__name__}")
            if len(state.layers) != len(self.blocks):
                raise ValueError(f"MMRecLM: state has {len(state.layers)} layers, the model {len(self.blocks)}")
            if state.batch_size != ids.shape[0]:
                raise ValueError(f"MMRecLM: state is for batch {state.batch_size}, ids have batch {ids.shape[0]}")

    def hidden(self, ids: Tensor, state: Optional[MMRecState] = None) -> Tuple[Tensor, MMRecState]:
        """Final normed hidden states [B, T, D] and the new state."""
        self._check(ids, state)
        position = 0 if state is None else state.position
        x = self.drop(self.embed(ids))                                       # [B, T, D]
        layers = []
        for i, block in enumerate(self.blocks):
            x, layer_state = block(x, None if state is None else state.layers[i], position)
            layers.append(layer_state)
        return self.norm(x), MMRecState(layers, position + ids.shape[1])

    def forward(self, ids: Tensor, state: Optional[MMRecState] = None, *, last_only: bool = False
                ) -> Tuple[Tensor, MMRecState]:
        """ids: [B, T] -> logits [B, T, V] ([B, 1, V] with last_only) and the state after the segment."""
        x, new_state = self.hidden(ids, state)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(x), new_state

    # ----------------------------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(self, ids: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, eos: Optional[Union[int, Iterable[int]]] = None, *,
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None,
                 state: Optional[MMRecState] = None, return_logits: bool = False):
        """Prefill the prompt in one forward call, then sample one token at a time from the carried state
        (constant time and memory per token). ids: [B, T] or [T]. temperature 0 = greedy.
        A row that emits an eos token is padded with that token afterwards; generation stops when every
        row has. Runs in eval mode (no dropout) and restores the mode afterwards.
        Returns ids [B, T + n] (and, with return_logits, the logits [B, n, V] the n tokens were drawn from)."""
        return generate_tokens(self, ids, max_new_tokens, temperature, top_k, top_p, eos, generator=generator,
                               seed=seed, state=state, return_logits=return_logits)

    # ---------------------------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory: Union[str, os.PathLike]) -> None:
        """Writes config.json and model.safetensors (tied weights stored once)."""
        from safetensors.torch import save_model
        os.makedirs(directory, exist_ok=True)
        self.config.save(os.path.join(directory, CONFIG_NAME))
        save_model(self, os.path.join(directory, WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                        dtype: Optional[torch.dtype] = None) -> "MMRecLM":
        """Loads a save_pretrained directory; the model comes back in eval mode."""
        from safetensors.torch import load_model
        config_path, weights_path = os.path.join(directory, CONFIG_NAME), os.path.join(directory, WEIGHTS_NAME)
        for path in (config_path, weights_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"MMRecLM.from_pretrained: {path} does not exist")
        model = cls(MMRecConfig.load(config_path))
        load_model(model, weights_path, strict=True, device=str(device))
        model.to(device)
        if dtype is not None:
            model.to(dtype)
        return model.eval()



def check_generate_args(max_new_tokens, temperature, top_k, top_p, generator, seed) -> None:
    """The argument checks of generate_tokens, for callers that need them before preparing a state."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"generate: temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"generate: top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
        raise ValueError(f"generate: top_p must be None or in (0, 1], got {top_p!r}")
    if generator is not None and seed is not None:
        raise ValueError("generate: pass generator or seed, not both")


@torch.no_grad()
def generate_tokens(model: nn.Module, ids: Tensor, max_new_tokens: int, temperature: float = 1.0,
                    top_k: Optional[int] = None, top_p: Optional[float] = None,
                    eos: Optional[Union[int, Iterable[int]]] = None, *, generator: Optional[torch.Generator] = None,
                    seed: Optional[int] = None, state=None, return_logits: bool = False):
    """The sampling loop of MMRecLM.generate, for any model called as model(ids, state, last_only=True) ->
    (logits [B, T', V], state) (the benchmark baselines use it too)."""
    check_generate_args(max_new_tokens, temperature, top_k, top_p, generator, seed)
    squeeze = isinstance(ids, Tensor) and ids.dim() == 1
    if squeeze:
        ids = ids.unsqueeze(0)
    device = next(model.parameters()).device
    ids = ids.to(device)
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    eos_ids = None
    if eos is not None:
        eos_ids = torch.tensor([eos] if isinstance(eos, int) else list(eos), device=device, dtype=torch.long)

    was_training = model.training
    model.eval()                                   # no dropout while sampling
    try:
        logits, state = model(ids, state, last_only=True)                   # prefill: one call
        out, drawn = [ids], []
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            step_logits = logits[:, -1].float()                          # [B, V]
            if return_logits:
                drawn.append(step_logits)
            token = _sample(step_logits, temperature, top_k, top_p, generator)  # [B]
            if eos_ids is not None:
                token = torch.where(done, out[-1][:, -1], token)
                done = done | torch.isin(token, eos_ids)
            out.append(token[:, None].to(ids.dtype))
            if (eos_ids is not None and bool(done.all())) or step == max_new_tokens - 1:
                break
            logits, state = model(out[-1], state)
    finally:
        model.train(was_training)
    result = torch.cat(out, 1)
    if squeeze:
        result = result[0]
    if return_logits:
        V = logits.shape[-1]
        return result, (torch.stack(drawn, 1) if drawn else torch.empty(ids.shape[0], 0, V, device=device))
    return result


def _sample(logits: Tensor, temperature: float, top_k: Optional[int], top_p: Optional[float],
            generator: Optional[torch.Generator]) -> Tensor:
    """One token per row of logits [B, V]."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        outside = (probs.cumsum(-1) - probs) > top_p                        # the top token always stays
        sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
