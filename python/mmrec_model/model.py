"""The MM-Rec language model: embedding -> L MM-Rec blocks -> RMSNorm -> LM head.

Every recurrence runs in one of the mmrec ops (recurrence or scan, memory_read, memory_update); the rest is
GEMMs and elementwise work, parallel over time. The per-layer state (h, m, slots, open-chunk sum)
has a constant size, so a stream can be fed in segments of any length, or one token at a time,
with the same logits as one pass over the whole stream.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

import mmrec_ops
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import MMRecConfig
from .decode import DecodeState
from .decode import step as decode_step
from .errors import CheckpointError
from .generate import generate_tokens
from .state import LayerState, MMRecState, acc_dtype

# The block's read on CUDA tensors: "fused" = the memory_read op (the [B, T, N, D] banks never stored), "unfused" = mdi
# + the read in torch ops (kept for comparisons). Both compute SPEC's math. Measured on the H200 (base, bf16, B=16
# T=1,024, compiled): the unfused read trains the linear variant at 183K tokens/s with 20.1 GB peak
# (bench/results/device/run-2026-12-02-h200-o), the fused read at 189K with 15.6 GB (run p).
CUDA_READ = "fused"

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CONFIG_FINGERPRINT = "mmrec_config_sha256"


def _unfused_read_on_cuda() -> bool:
    if CUDA_READ not in ("fused", "unfused"):
        raise ValueError(f"mmrec_model.model.CUDA_READ must be 'fused' or 'unfused', got {CUDA_READ!r}")
    return CUDA_READ == "unfused"


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _rms(x: Tensor, eps: float) -> Tensor:
    """x / rms(x) over the last dim, computed in float32 (float64 for float64 input)."""
    xf = x.to(acc_dtype(x.dtype))
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
            chunk_sum=torch.zeros(B, D, device=device, dtype=acc_dtype(dtype)),
        )

    def forward(self, x: Tensor, state: Optional[LayerState], position: int) -> Tuple[Tensor, LayerState]:
        cfg = self.config
        B, T, D = x.shape
        C, N, S = cfg.chunk_len, cfg.n_banks, cfg.n_slots
        k0 = position % C                         # tokens of the open chunk already consumed

        u = self.norm_in(x)                                                   # [B, T, D]
        # in_proj as two GEMMs over its rows: z, f, q, v (, g) share a [B, T, 4D or 5D] buffer whose rows stay
        # 16-element aligned, so the Triton ops read q and v in place as strided views; the rows of one
        # [B, T, 5D + N] buffer are not (N = 4), and the ops would copy each view. c gets its own [B, T, N]
        rows = [self.in_proj.out_features - N, N]
        (w_main, w_c), (b_main, b_c) = self.in_proj.weight.split(rows), self.in_proj.bias.split(rows)
        parts = F.linear(u, w_main, b_main).split(D, dim=-1)
        c = F.linear(u, w_c, b_c)                                             # [B, T, N]
        z, f, q, v = parts[:4]                                                # 4 x [B, T, D]
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
        acc = acc_dtype(dt)
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

        if x.is_cuda and _unfused_read_on_cuda():
            m = mmrec_ops.mdi(v, c, self.base.to(dt), m0, cfg.mdi_eps)                       # [B, T, N, D]
            r, m_last = self._read(q, h, m, Ms[:, :n_local], k0), m[:, -1].clone()
        else:
            # the N banks (mdi) and the multi-memory read in one op: the [B, T, N, D] banks never reach memory
            r, m_last = mmrec_ops.memory_read(q, h, v, c, self.base.to(dt), Ms[:, :n_local], m0, k0, C,
                                              cfg.n_read_heads, cfg.mdi_eps, cfg.norm_eps)  # [B, T, D], [B, N, D]
        y = x + self.drop(self.out_proj(r))
        out = y + self.drop(self.ffn(self.norm_ffn(y)))
        # copies, not views: a view would keep the segment's [B, T, ...] buffers alive as long as the state (84 MiB
        # behind a 0.05 MiB state for a 4,096-token prefill of `small`)
        return out, LayerState(h[:, -1].clone(), m_last, Ms[:, -1].clone(), chunk_sum.clone())


    def _read(self, q: Tensor, h: Tensor, m: Tensor, Ms: Tensor, k0: int) -> Tensor:
        """Token t of local chunk c attends per read head over {h_t, m_t^1..N, Ms[:, c, 1..S]}."""
        cfg = self.config
        B, T, D = q.shape
        N, S, Hr, dh, C = cfg.n_banks, cfg.n_slots, cfg.n_read_heads, cfg.read_head_dim, cfg.chunk_len
        eps = cfg.norm_eps
        n_local = Ms.shape[1]
        dt = torch.promote_types(q.dtype, h.dtype)
        qh = q.to(dt).view(B, T, Hr, dh)
        nh = _rms(h.to(dt).view(B, T, Hr, dh), eps)                           # [B, T, Hr, dh]
        nm = _rms(m.to(dt).view(B, T, N, Hr, dh), eps)                        # [B, T, N, Hr, dh]
        nM = _rms(Ms.to(dt).view(B, n_local, S, Hr, dh), eps)                 # [B, n_local, S, Hr, dh]

        score_h = (qh * nh).sum(-1, keepdim=True)                            # [B, T, Hr, 1]
        score_m = torch.einsum("bthd,btnhd->bthn", qh, nm)                   # [B, T, Hr, N]
        if n_local == 1:                                                      # every token reads the same slots
            score_M = torch.einsum("bthd,bshd->bths", qh, nM[:, 0])          # [B, T, Hr, S]
        else:
            q_chunks = _to_chunks(qh, k0, n_local, C)                         # [B, n_local, C, Hr, dh]
            score_M = _from_chunks(torch.einsum("bnchd,bnshd->bnchs", q_chunks, nM), k0, T)
        weights = torch.softmax(torch.cat([score_h, score_m, score_M], -1) / math.sqrt(dh), dim=-1)
        w_h, w_m, w_M = weights.split([1, N, S], dim=-1)

        r = w_h * nh + torch.einsum("bthn,btnhd->bthd", w_m, nm)            # [B, T, Hr, dh]
        if n_local == 1:
            r = r + torch.einsum("bths,bshd->bthd", w_M, nM[:, 0])
        else:
            w_chunks = _to_chunks(w_M, k0, n_local, C)                        # [B, n_local, C, Hr, S]
            r = r + _from_chunks(torch.einsum("bnchs,bnshd->bnchd", w_chunks, nM), k0, T)
        return r.reshape(B, T, D)


def _to_chunks(x: Tensor, k0: int, n_chunks: int, C: int) -> Tensor:
    """[B, T, ...] -> [B, n_chunks, C, ...], zero-padded by k0 steps in front (the open chunk's
    consumed tokens) and at the end up to a whole chunk."""
    B, T = x.shape[:2]
    pad = (0, 0) * (x.dim() - 2) + (k0, n_chunks * C - k0 - T)
    return F.pad(x, pad).view(B, n_chunks, C, *x.shape[2:])


def _from_chunks(x: Tensor, k0: int, T: int) -> Tensor:
    """Inverse of _to_chunks: [B, n_chunks, C, ...] -> [B, T, ...]."""
    B, n_chunks, C = x.shape[:3]
    return x.reshape(B, n_chunks * C, *x.shape[3:])[:, k0:k0 + T]


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

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any) -> "MMRecLM":
        """A fresh model of a preset (``tiny``, ``small``, ``base``) with field overrides."""
        return cls(MMRecConfig.preset(preset, **overrides))

    @property
    def length_multiple(self) -> int:
        """Rows padded to a multiple of chunk_len fill whole chunks of the slot memory."""
        return self.config.chunk_len

    def param_groups(self, weight_decay: float) -> List[Dict[str, Any]]:
        """AdamW groups: weight decay on the matrices, none on vectors and on the initial slots M0."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (decay if p.dim() >= 2 and not name.endswith("M0") else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

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
    def generate(self, ids, max_new_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, eos: Optional[Union[int, Iterable[int]]] = None, *,
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None,
                 state: Optional[MMRecState] = None, return_logits: bool = False, stop_strings=None, decode=None,
                 on_token=None, cuda_graph: Union[bool, str, None] = None):
        """Prefill each prompt in one forward call, then sample one token at a time through the one-token step
        (constant time and memory per token; a CUDA graph on GPU). ids: [B, T], [T], or a list of B id lists
        of different lengths (each row prefilled from its own prompt). temperature 0 = greedy. A row finishes on
        an eos token or a stop string (decode: tokenizer or ids -> str); a finished row of a [B, T] batch is
        padded with its last token; generation stops when every row has. on_token(row, token) streams.
        Runs in eval mode (no dropout) and restores the mode afterwards.
        Returns ids [B, T + n] (and, with return_logits, the logits [B, n, V] the n tokens were drawn from);
        for ragged prompts a list of 1-D tensors."""
        return generate_tokens(self, ids, max_new_tokens, temperature, top_k, top_p, eos, generator=generator,
                               seed=seed, state=state, return_logits=return_logits, stop_strings=stop_strings,
                               decode=decode, on_token=on_token, cuda_graph=cuda_graph)

    def decode_state(self, state: Optional[MMRecState] = None, batch_size: Optional[int] = None) -> DecodeState:
        """Preallocated buffers for `step`: a copy of `state` (None: fresh streams of batch_size rows)."""
        if state is None:
            return DecodeState(self, 1 if batch_size is None else batch_size)
        self._check(torch.zeros(state.batch_size, 1, dtype=torch.long), state)
        out = DecodeState(self, state.batch_size)
        out.load(state)
        return out

    def step(self, token_ids: Tensor, state: DecodeState) -> Tensor:
        """One token per row, token_ids [B] -> logits [B, V] (float of the model's dtype), the same logits as
        ``self(token_ids[:, None], state)``; `state` (a DecodeState) advances in place. Plain torch ops on
        preallocated buffers, no custom-op dispatch (decode.py). Eval-mode semantics: no dropout. Ids are checked
        against the vocabulary on CPU (on CUDA the check would cost a device sync per token)."""
        if not isinstance(state, DecodeState):
            raise TypeError(f"MMRecLM.step: state must be a DecodeState (model.decode_state(...)), got "
                            f"{type(state).__name__}")
        if not isinstance(token_ids, Tensor) or token_ids.dim() != 1 or token_ids.dtype.is_floating_point \
                or token_ids.dtype == torch.bool or token_ids.shape[0] != state.batch_size:
            raise ValueError(f"MMRecLM.step: token_ids must be an integer tensor [{state.batch_size}], got "
                             f"{tuple(token_ids.shape) if isinstance(token_ids, Tensor) else type(token_ids).__name__}")
        V = self.config.vocab_size
        if token_ids.device.type == "cpu" and (int(token_ids.min()) < 0 or int(token_ids.max()) >= V):
            raise ValueError(f"MMRecLM.step: token ids must be in [0, {V}), got {token_ids.tolist()}")
        return decode_step(state, token_ids.to(state.device))

    # ---------------------------------------------------------------------------------- checkpoints
    def save_pretrained(self, directory: Union[str, os.PathLike]) -> None:
        """Writes config.json and model.safetensors (tied weights stored once, the config's fingerprint in the
        weights' metadata)."""
        from safetensors.torch import save_model
        os.makedirs(directory, exist_ok=True)
        self.config.save(os.path.join(directory, CONFIG_NAME))
        save_model(self, os.path.join(directory, WEIGHTS_NAME),
                   metadata={"format": "pt", CONFIG_FINGERPRINT: self.config.fingerprint()})

    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                        dtype: Optional[torch.dtype] = None) -> "MMRecLM":
        """Loads a save_pretrained directory; the model comes back in eval mode. A config that does not match
        the weights (shapes, or the fingerprint saved with them) raises CheckpointError naming the file."""
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_model
        config_path, weights_path = os.path.join(directory, CONFIG_NAME), os.path.join(directory, WEIGHTS_NAME)
        for path in (config_path, weights_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"MMRecLM.from_pretrained: {path} does not exist")
        config = MMRecConfig.load(config_path)
        try:
            with safe_open(weights_path, framework="pt") as f:
                saved = (f.metadata() or {}).get(CONFIG_FINGERPRINT)
            model = cls(config)
            load_model(model, weights_path, strict=True, device=str(device))
        except (SafetensorError, RuntimeError, OSError) as e:
            raise CheckpointError(f"{weights_path}: cannot load the weights with {config_path} "
                                  f"({str(e).strip().splitlines()[0]})") from None
        if saved is not None and saved != config.fingerprint():
            raise CheckpointError(f"{config_path} does not match the config the weights in {weights_path} were "
                                  f"saved with (was it edited?)")
        model.to(device)
        if dtype is not None:
            model.to(dtype)
        return model.eval()
