"""Baselines for the model-level comparison (issue 8): a GPT-style Transformer and an LSTM language model.

Both share MMRecLM's interface, so the trainer (`python -m mmrec_model.train`, through
bench/train_baseline.py) and the benchmarks (bench/compare_models.py) drive all three the same way:

    logits, state = model(ids, state=None, last_only=False)    # ids [B, T] -> logits [B, T, V]
    model.init_state(B, device) / model.generate(...) / model.num_parameters()
    model.save_pretrained(dir) / Class.from_pretrained(dir) / Class.from_preset(name, **overrides)

- GPTLM: pre-norm decoder (RMSNorm), causal attention through F.scaled_dot_product_attention, rotary or
  learned positions, SwiGLU (or GELU) MLP, tied embeddings. Its state is a KV cache (`KVCache`), filled in
  place; without a state, forward builds none (training).
- LSTMLM: embedding -> multi-layer nn.LSTM (cuDNN on GPU) -> projection to D -> RMSNorm -> tied head. Its
  state is (h, c) per layer (`LSTMState`), constant in size like MM-Rec's.

`matched(arch, preset, vocab_size)` sizes either to the parameter count of an MM-Rec preset: depth and width
of the preset are kept and the free width (GPT: the MLP's hidden size; LSTM: the hidden size) is solved for.
These are benchmark baselines, not part of the mmrec API.
"""
from __future__ import annotations

import dataclasses
import math
import copy
import os
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrec_model import MMRecConfig, MMRecLM
from mmrec_model.config import checked_fields, load_json, save_json
from mmrec_model.generate import check_generate_args, generate_tokens
from mmrec_model.model import RMSNorm, SwiGLU

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
ARCHS = ("gpt", "lstm")


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ValueError(msg)


def _check_ints(obj, names) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{type(obj).__name__}: {name} must be an int, got {type(value).__name__}")
        _need(value >= 1, f"{type(obj).__name__}: {name} must be >= 1, got {value}")


class _ConfigIO:
    """to_dict / from_dict / save / load shared by both configs; config.json records the arch."""
    arch = ""

    def to_dict(self) -> Dict[str, Any]:
        return {"arch": self.arch, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: Dict[str, Any]):
        values = dict(values)
        arch = values.pop("arch", cls.arch)
        values.pop("chunk_len", None)    # configs saved by earlier versions carry the trainer's padding; unused
        if arch != cls.arch:
            raise ValueError(f"{cls.__name__}.from_dict: config is for arch {arch!r}, not {cls.arch!r}")
        return cls(**checked_fields(cls, values))

    def save(self, path: str) -> None:
        save_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str):
        return cls.from_dict(load_json(path))


# ------------------------------------------------------------------------------------------ configs
@dataclass
class GPTConfig(_ConfigIO):
    vocab_size: int = 32000
    d_model: int = 768                 # D
    n_layers: int = 12                 # L
    n_heads: int = 12                  # H, head size D / H
    d_ffn: int = 2048                  # MLP hidden width
    mlp: str = "swiglu"                # "swiglu" (3 matrices) or "gelu" (2 matrices)
    positions: str = "rope"            # "rope" (no parameters) or "learned" (max_seq_len x D table)
    max_seq_len: int = 2048            # learned positions only: table size (counted in the parameters)
    rope_base: float = 10000.0
    tie_embeddings: bool = True
    norm_eps: float = 1e-6
    init_std: float = 0.02
    arch = "gpt"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        _check_ints(self, ("vocab_size", "d_model", "n_layers", "n_heads", "d_ffn", "max_seq_len"))
        _need(self.d_model % self.n_heads == 0,
              f"GPTConfig: d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        _need(self.head_dim % 2 == 0 or self.positions != "rope",
              f"GPTConfig: rotary positions need an even head size, got {self.head_dim}")
        _need(self.mlp in ("swiglu", "gelu"), f"GPTConfig: mlp must be 'swiglu' or 'gelu', got {self.mlp!r}")
        _need(self.positions in ("rope", "learned"),
              f"GPTConfig: positions must be 'rope' or 'learned', got {self.positions!r}")
        _need(self.rope_base > 1.0, f"GPTConfig: rope_base must be > 1, got {self.rope_base}")
        _need(0.0 < self.norm_eps < 1.0, f"GPTConfig: norm_eps must be in (0, 1), got {self.norm_eps}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def num_parameters(self) -> int:
        """Closed form of GPTLM(self).num_parameters() (tied weights once)."""
        D, L, V, F_ = self.d_model, self.n_layers, self.vocab_size, self.d_ffn
        mlp = 3 * D * F_ if self.mlp == "swiglu" else 2 * D * F_ + F_ + D
        per_layer = 4 * D * D + mlp + 2 * D              # qkv + out, MLP, two norms
        table = self.max_seq_len * D if self.positions == "learned" else 0
        return V * D * (1 if self.tie_embeddings else 2) + table + L * per_layer + D


@dataclass
class LSTMConfig(_ConfigIO):
    vocab_size: int = 32000
    d_model: int = 768                 # D: embedding width (and the tied head's)
    hidden_size: int = 2048            # H: LSTM width
    n_layers: int = 2
    tie_embeddings: bool = True
    norm_eps: float = 1e-6
    init_std: float = 0.02
    arch = "lstm"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        _check_ints(self, ("vocab_size", "d_model", "hidden_size", "n_layers"))
        _need(0.0 < self.norm_eps < 1.0, f"LSTMConfig: norm_eps must be in (0, 1), got {self.norm_eps}")

    def num_parameters(self) -> int:
        """Closed form of LSTMLM(self).num_parameters() (tied weights once)."""
        D, H, L, V = self.d_model, self.hidden_size, self.n_layers, self.vocab_size
        lstm = 4 * H * (D + H) + 8 * H + (L - 1) * (4 * H * 2 * H + 8 * H)
        proj = H * D if H != D else 0
        return V * D * (1 if self.tie_embeddings else 2) + lstm + proj + D


CONFIGS = {"gpt": GPTConfig, "lstm": LSTMConfig}


def mmrec_parameters(preset: str, vocab_size: int, **overrides) -> int:
    """Parameter count of MMRecLM(MMRecConfig.preset(preset, vocab_size=..., **overrides)), built on meta."""
    with torch.device("meta"):
        return MMRecLM(MMRecConfig.preset(preset, vocab_size=vocab_size, **overrides)).num_parameters()


def matched(arch: str, preset: str, vocab_size: Optional[int] = None, multiple: int = 8,
            **fixed: Any) -> Union[GPTConfig, LSTMConfig]:
    """A GPT/LSTM config whose parameter count is the closest to MM-Rec preset `preset` at `vocab_size`.

    The preset's D (and for GPT its L and heads) are kept, and
    the free width -- GPT: d_ffn, LSTM: hidden_size -- is the multiple of `multiple` that comes closest.
    `fixed` overrides any other field first (e.g. n_layers=3); passing the free width itself skips the match.
    """
    if arch not in CONFIGS:
        raise ValueError(f"matched: arch must be one of {ARCHS}, got {arch!r}")
    cls = CONFIGS[arch]
    unknown = set(fixed) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"matched: unknown {cls.__name__} fields {sorted(unknown)}")
    ref = MMRecConfig.preset(preset, **({} if vocab_size is None else {"vocab_size": vocab_size}))
    values: Dict[str, Any] = dict(vocab_size=ref.vocab_size, d_model=ref.d_model,
                                  tie_embeddings=ref.tie_embeddings)
    if arch == "gpt":
        values.update(n_layers=ref.n_layers, n_heads=ref.n_heads)
    values.update(fixed)
    free = "d_ffn" if arch == "gpt" else "hidden_size"
    if free in fixed:
        return cls(**values)
    target = mmrec_parameters(preset, ref.vocab_size)
    # the count grows monotonically with the free width: walk up until it passes the target
    best, width = None, multiple
    while True:
        cfg = cls(**{**values, free: width})
        err = abs(cfg.num_parameters() - target)
        if best is None or err < best[0]:
            best = (err, cfg)
        if cfg.num_parameters() >= target:
            break
        width += multiple
    return best[1]


# ------------------------------------------------------------------------------------------ GPT
@dataclass
class KVCache:
    """Keys and values of every layer, [B, H, capacity, hd] each, filled up to `position` (in place)."""
    k: List[Tensor]
    v: List[Tensor]
    position: int

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def detach(self) -> "KVCache":
        return KVCache([t.detach() for t in self.k], [t.detach() for t in self.v], self.position)

    def reserve(self, length: int) -> None:
        """Grows every buffer (doubling) so that `length` positions fit."""
        if length <= self.capacity:
            return
        new = max(length, 2 * self.capacity)
        for buffers in (self.k, self.v):
            for i, t in enumerate(buffers):
                grown = t.new_zeros(t.shape[0], t.shape[1], new, t.shape[3])
                grown[:, :, :self.position] = t[:, :, :self.position]
                buffers[i] = grown


class Attention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: Tensor, rope: Optional[tuple], cache: Optional[KVCache], layer: int) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x [B, H, T, hd]
        if rope is not None:
            q, k = _apply_rope(q, *rope), _apply_rope(k, *rope)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)                    # [B, H, T, hd]
        else:
            p = cache.position
            cache.k[layer][:, :, p:p + T] = k
            cache.v[layer][:, :, p:p + T] = v
            keys, values = cache.k[layer][:, :, :p + T], cache.v[layer][:, :, :p + T]      # [B, H, p + T, hd]
            if keys.dtype != q.dtype:
                keys, values = keys.to(q.dtype), values.to(q.dtype)
            if T == 1:
                y = F.scaled_dot_product_attention(q, keys, values)
            elif p == 0:
                y = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
            else:                                # a chunk after cached tokens: causal, aligned bottom-right
                from torch.nn.attention.bias import causal_lower_right
                y = F.scaled_dot_product_attention(q, keys, values, attn_mask=causal_lower_right(T, p + T))
        return self.out(y.transpose(1, 2).reshape(B, T, D))


def _apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, T, hd]; cos, sin [T, hd/2]: rotates the pairs (i, i + hd/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class GELUMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up = nn.Linear(dim, hidden, bias=True)
        self.down = nn.Linear(hidden, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class GPTBlock(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.norm_attn = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.norm_ffn = RMSNorm(config.d_model, config.norm_eps)
        self.ffn = SwiGLU(config.d_model, config.d_ffn) if config.mlp == "swiglu" else GELUMLP(config.d_model,
                                                                                              config.d_ffn)

    def forward(self, x: Tensor, rope: Optional[tuple], cache: Optional[KVCache], layer: int) -> Tensor:
        x = x + self.attn(self.norm_attn(x), rope, cache, layer)                         # [B, T, D]
        return x + self.ffn(self.norm_ffn(x))


class _LMBase(nn.Module):
    """What GPTLM and LSTMLM share: the interface MMRecLM offers to the trainer and the benchmarks."""
    config_class: type = None

    num_parameters = MMRecLM.num_parameters

    def _check(self, ids: Tensor) -> None:
        name = type(self).__name__
        if not isinstance(ids, Tensor) or ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise TypeError(f"{name}: ids must be an integer tensor [B, T], got "
                            f"{ids.dtype if isinstance(ids, Tensor) else type(ids).__name__}")
        if ids.dim() != 2 or ids.shape[0] < 1 or ids.shape[1] < 1:
            raise ValueError(f"{name}: ids must have shape [B, T] with B, T >= 1, got {tuple(ids.shape)}")

    @classmethod
    def from_preset(cls, preset: str, **overrides: Any):
        """The baseline matched to MM-Rec preset `preset` (see `matched`); overrides as in MMRecConfig.preset."""
        return cls(matched(cls.config_class.arch, preset, **overrides))

    @torch.no_grad()
    def generate(self, ids: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, eos: Optional[Union[int, Iterable[int]]] = None, *,
                 generator: Optional[torch.Generator] = None, seed: Optional[int] = None, state=None,
                 return_logits: bool = False):
        """As MMRecLM.generate (the same sampling loop), with the KV cache sized for prompt + new tokens."""
        check_generate_args(max_new_tokens, temperature, top_k, top_p, generator, seed)
        if state is None:
            rows = ids.unsqueeze(0) if isinstance(ids, Tensor) and ids.dim() == 1 else ids
            self._check(rows)
            state = self.init_state(rows.shape[0], device=self.embed.weight.device,
                                    capacity=rows.shape[1] + max_new_tokens)
        return generate_tokens(self, ids, max_new_tokens, temperature, top_k, top_p, eos, generator=generator,
                               seed=seed, state=state, return_logits=return_logits)

    def save_pretrained(self, directory: Union[str, os.PathLike]) -> None:
        """Writes config.json (with its arch) and model.safetensors (tied weights stored once)."""
        from safetensors.torch import save_model
        os.makedirs(directory, exist_ok=True)
        self.config.save(os.path.join(directory, CONFIG_NAME))
        model = self
        if any(p.is_cuda for p in self.parameters()):
            # cuDNN keeps an LSTM's weights as views of one flat buffer, which safetensors refuses to save (seen on
            # the H100); a CPU copy has one storage per weight and keeps the tied embedding tied
            model = copy.deepcopy(self).cpu()
        save_model(model, os.path.join(directory, WEIGHTS_NAME), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike], device: Union[str, torch.device] = "cpu",
                        dtype: Optional[torch.dtype] = None):
        """Loads a save_pretrained directory; the model comes back in eval mode."""
        from safetensors.torch import load_model
        config_path, weights_path = os.path.join(directory, CONFIG_NAME), os.path.join(directory, WEIGHTS_NAME)
        for path in (config_path, weights_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{cls.__name__}.from_pretrained: {path} does not exist")
        model = cls(cls.config_class.load(config_path))
        load_model(model, weights_path, strict=True, device=str(device))
        model.to(device)
        if dtype is not None:
            model.to(dtype)
        return model.eval()


class GPTLM(_LMBase):
    """GPT-style Transformer LM. ``model(ids, cache=None) -> (logits, cache)``; no cache is built in training."""
    config_class = GPTConfig

    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"GPTLM: config must be a GPTConfig, got {type(config).__name__}")
        config.validate()
        self.config = config
        D = config.d_model
        self.embed = nn.Embedding(config.vocab_size, D)
        self.pos = nn.Embedding(config.max_seq_len, D) if config.positions == "learned" else None
        self.blocks = nn.ModuleList(GPTBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(D, config.norm_eps)
        self.lm_head = nn.Linear(D, config.vocab_size, bias=False)
        half = config.head_dim // 2
        self.register_buffer("inv_freq", 1.0 / config.rope_base ** (torch.arange(half, dtype=torch.float32) / half),
                             persistent=False)
        self.reset_parameters()
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self.config
        std, residual_std = cfg.init_std, cfg.init_std / math.sqrt(2 * cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm_attn.weight") or name.endswith("norm_ffn.weight") or name == "norm.weight":
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith("attn.out.weight") or name.endswith("ffn.down.weight"):
                nn.init.normal_(p, std=residual_std)
            else:
                nn.init.normal_(p, std=std)

    def init_state(self, batch_size: int, device=None, dtype=None, capacity: int = 256) -> KVCache:
        """An empty KV cache for `capacity` positions (it grows by doubling when a call needs more)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"GPTLM.init_state: batch_size must be an int >= 1, got {batch_size!r}")
        cfg = self.config
        device = self.embed.weight.device if device is None else device
        dtype = self.embed.weight.dtype if dtype is None else dtype
        shape = (batch_size, cfg.n_heads, max(1, capacity), cfg.head_dim)
        return KVCache([torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)],
                       [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)], 0)

    def forward(self, ids: Tensor, state: Optional[KVCache] = None, *, last_only: bool = False):
        """ids [B, T] -> logits [B, T, V] ([B, 1, V] with last_only) and the cache (None without one).
        With a cache, the new keys/values are written into it in place and it is returned."""
        self._check(ids)
        B, T = ids.shape
        p = 0
        if state is not None:
            if not isinstance(state, KVCache):
                raise TypeError(f"GPTLM: state must be a KVCache or None, got {type(state).__name__}")
            if state.batch_size != B:
                raise ValueError(f"GPTLM: cache is for batch {state.batch_size}, ids have batch {B}")
            p = state.position
            state.reserve(p + T)
        x = self.embed(ids)                                                   # [B, T, D]
        rope = None
        if self.pos is not None:
            if p + T > self.config.max_seq_len:
                raise ValueError(f"GPTLM: position {p + T} exceeds max_seq_len={self.config.max_seq_len} "
                                 f"of the learned position table")
            x = x + self.pos(torch.arange(p, p + T, device=ids.device))
        else:
            t = torch.arange(p, p + T, device=ids.device, dtype=torch.float32)
            freqs = torch.outer(t, self.inv_freq.to(ids.device))              # [T, hd/2]
            rope = (freqs.cos(), freqs.sin())
        for i, block in enumerate(self.blocks):
            x = block(x, rope, state, i)
        if state is not None:
            state.position = p + T
        x = self.norm(x)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(x), state


# ------------------------------------------------------------------------------------------ LSTM
@dataclass
class LSTMState:
    h: Tensor          # [L, B, H]
    c: Tensor          # [L, B, H]
    position: int

    @property
    def batch_size(self) -> int:
        return self.h.shape[1]

    def nbytes(self) -> int:
        return self.h.numel() * self.h.element_size() + self.c.numel() * self.c.element_size()

    def detach(self) -> "LSTMState":
        return LSTMState(self.h.detach(), self.c.detach(), self.position)


class LSTMLM(_LMBase):
    """LSTM LM: embedding -> nn.LSTM (cuDNN on GPU) -> Linear(H, D) -> RMSNorm -> tied head.

    Under bf16 autocast the LSTM runs in bf16 where cuDNN supports it (cuDNN >= 9.13); where it raises, the
    model falls back to a float32 LSTM for the rest of its life and warns once. `lstm_dtype` says which dtype
    the LSTM's output had in the last call."""
    config_class = LSTMConfig

    def __init__(self, config: LSTMConfig):
        super().__init__()
        if not isinstance(config, LSTMConfig):
            raise TypeError(f"LSTMLM: config must be an LSTMConfig, got {type(config).__name__}")
        config.validate()
        self.config = config
        D, H = config.d_model, config.hidden_size
        self.embed = nn.Embedding(config.vocab_size, D)
        self.lstm = nn.LSTM(D, H, num_layers=config.n_layers, batch_first=True)
        self.proj = nn.Linear(H, D, bias=False) if H != D else None
        self.norm = RMSNorm(D, config.norm_eps)
        self.lm_head = nn.Linear(D, config.vocab_size, bias=False)
        self.lstm_fp32_fallback = False
        self.lstm_dtype: Optional[str] = None
        self.reset_parameters()
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @torch.no_grad()
    def reset_parameters(self) -> None:
        cfg = self.config
        nn.init.normal_(self.embed.weight, std=cfg.init_std)
        nn.init.normal_(self.lm_head.weight, std=cfg.init_std)
        bound = 1.0 / math.sqrt(cfg.hidden_size)                     # nn.LSTM's own init
        for name, p in self.lstm.named_parameters():
            nn.init.uniform_(p, -bound, bound)
            if name.startswith("bias_ih"):                           # forget gate bias 1 (Jozefowicz et al.)
                p[cfg.hidden_size:2 * cfg.hidden_size] = 1.0
            elif name.startswith("bias_hh"):
                p[cfg.hidden_size:2 * cfg.hidden_size] = 0.0
        if self.proj is not None:
            nn.init.normal_(self.proj.weight, std=cfg.init_std)
        self.norm.weight.fill_(1.0)

    def init_state(self, batch_size: int, device=None, dtype=None, capacity: Optional[int] = None) -> LSTMState:
        """h = c = 0 (`capacity` is accepted for a common interface with GPTLM and ignored)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"LSTMLM.init_state: batch_size must be an int >= 1, got {batch_size!r}")
        cfg = self.config
        device = self.embed.weight.device if device is None else device
        dtype = self.embed.weight.dtype if dtype is None else dtype
        zeros = torch.zeros(cfg.n_layers, batch_size, cfg.hidden_size, device=device, dtype=dtype)
        return LSTMState(zeros, zeros.clone(), 0)

    def _run_lstm(self, x: Tensor, hx: Optional[tuple]):
        autocast_on = torch.is_autocast_enabled(x.device.type)
        if autocast_on and not self.lstm_fp32_fallback:
            try:
                return self.lstm(x, hx)
            except RuntimeError as e:
                warnings.warn(f"LSTMLM: the LSTM cannot run under autocast here ({str(e).splitlines()[0]}); "
                              f"running it in float32 from now on")
                self.lstm_fp32_fallback = True
        if autocast_on:
            with torch.autocast(x.device.type, enabled=False):
                hx = None if hx is None else tuple(t.float() for t in hx)
                return self.lstm(x.float(), hx)
        dtype = self.lstm.weight_ih_l0.dtype           # float32 LSTM layers in a bf16 model: see generation
        hx = None if hx is None else tuple(t.to(dtype) for t in hx)
        return self.lstm(x.to(dtype), hx)

    def forward(self, ids: Tensor, state: Optional[LSTMState] = None, *, last_only: bool = False):
        """ids [B, T] -> logits [B, T, V] ([B, 1, V] with last_only) and the state after the segment."""
        self._check(ids)
        B, T = ids.shape
        hx, p = None, 0
        if state is not None:
            if not isinstance(state, LSTMState):
                raise TypeError(f"LSTMLM: state must be an LSTMState or None, got {type(state).__name__}")
            if state.batch_size != B:
                raise ValueError(f"LSTMLM: state is for batch {state.batch_size}, ids have batch {B}")
            hx, p = (state.h, state.c), state.position
        x = self.embed(ids)                                                   # [B, T, D]
        y, (h, c) = self._run_lstm(x, hx)                                     # [B, T, H], 2 x [L, B, H]
        self.lstm_dtype = str(y.dtype).replace("torch.", "")
        if last_only:
            y = y[:, -1:]
        y = y.to(x.dtype)                                                     # [B, T, H]
        if self.proj is not None:
            y = self.proj(y)                                                  # [B, T, D]
        return self.lm_head(self.norm(y)), LSTMState(h, c, p + T)


MODELS = {"gpt": GPTLM, "lstm": LSTMLM}


def model_class(arch: str):
    """The class the trainer builds for `arch`: MMRecLM for 'mmrec', else GPTLM or LSTMLM."""
    if arch == "mmrec":
        return MMRecLM
    if arch not in MODELS:
        raise ValueError(f"arch must be one of {('mmrec',) + ARCHS}, got {arch!r}")
    return MODELS[arch]
