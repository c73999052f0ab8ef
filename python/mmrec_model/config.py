"""MMRecConfig: every hyper-parameter of the MM-Rec language model, with presets and validation."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

RECURRENCES = ("nonlinear", "linear")
MODEL_TYPE = "mmrec"
# keys a Hugging Face config.json (mmrec_model.hf) holds around the MMRecConfig fields: bookkeeping of the hub, and
# tie_word_embeddings, which must repeat tie_embeddings
HUB_KEYS = frozenset({"model_type", "architectures", "auto_map", "transformers_version", "dtype", "torch_dtype",
                      "tie_word_embeddings"})


def _ffn_default(d_model: int) -> int:
    """SwiGLU width 8/3 * D rounded up to a multiple of 64 (the same parameter count as a 4 * D GELU MLP)."""
    return 64 * math.ceil(8 * d_model / 3 / 64)

from .errors import CheckpointError


def checked_fields(cls, values: Dict[str, Any]) -> Dict[str, Any]:
    """`values` if every key is a field of dataclass `cls`, else ValueError naming the unknown keys."""
    unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__}.from_dict: unknown fields {sorted(unknown)}")
    return dict(values)


def save_json(values: Dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(values, f, indent=2, sort_keys=True)
        f.write("\n")


def load_json(path: str) -> Dict[str, Any]:
    """The mapping in a config.json (`path` or `path`/config.json); CheckpointError names a bad file."""
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not a usable config ({e})") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{path}: not a usable config (the top level is a {type(values).__name__}, "
                              f"not a mapping)")
    return values


@dataclass
class MMRecConfig:
    vocab_size: int = 32000
    d_model: int = 768                     # D
    n_layers: int = 12                     # L
    n_heads: int = 12                      # H: blocks of the recurrent matrix W_g ([H, D/H, D/H])
    n_read_heads: int = 12                 # heads of the multi-memory read
    n_banks: int = 4                       # N: MDI memories
    n_slots: int = 16                      # S: long-term memory slots
    chunk_len: int = 64                    # C: tokens per chunk summary written into the slots
    recurrence: str = "nonlinear"          # "nonlinear" (core formula, op recurrence) or "linear" (op scan)
    d_ffn: Optional[int] = None            # SwiGLU hidden width; None = 8/3 * D rounded up to 64
    dropout: float = 0.0
    tie_embeddings: bool = True
    norm_eps: float = 1e-6
    mdi_eps: float = 1e-6
    init_std: float = 0.02                 # embeddings and input projections
    recurrent_init_scale: float = 0.1      # W_g ~ N(0, (scale / sqrt(d))^2): small recurrent matrices
    core_decay_init: float = 0.9           # initial sigmoid(f) of the core recurrence
    bank_decays: Optional[Tuple[float, ...]] = None  # initial bank decays; None = 1 - 4^-(n+1), n = 0..N-1
    slot_init_std: float = 1.0             # M0 ~ N(0, slot_init_std^2): the slots must differ from the start

    def __post_init__(self):
        if self.d_ffn is None:
            self.d_ffn = _ffn_default(self.d_model)
        if self.bank_decays is None:
            self.bank_decays = tuple(1.0 - 4.0 ** -(n + 1) for n in range(self.n_banks))
        else:
            self.bank_decays = tuple(float(x) for x in self.bank_decays)
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"MMRecConfig: {msg}")

        ints = ("vocab_size", "d_model", "n_layers", "n_heads", "n_read_heads", "n_banks", "n_slots", "chunk_len",
                "d_ffn")
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"MMRecConfig: {name} must be an int, got {type(value).__name__}")
            need(value >= 1, f"{name} must be >= 1, got {value}")
        need(self.d_model % self.n_heads == 0,
             f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        need(self.d_model % self.n_read_heads == 0,
             f"d_model={self.d_model} is not divisible by n_read_heads={self.n_read_heads}")
        need(self.recurrence in RECURRENCES, f"recurrence must be one of {RECURRENCES}, got {self.recurrence!r}")
        need(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        need(0.0 < self.norm_eps < 1.0, f"norm_eps must be in (0, 1), got {self.norm_eps}")
        need(0.0 < self.mdi_eps < 0.5, f"mdi_eps must be in (0, 0.5), got {self.mdi_eps}")
        for name in ("init_std", "recurrent_init_scale", "slot_init_std"):
            value = getattr(self, name)
            need(math.isfinite(value) and value >= 0.0, f"{name} must be finite and >= 0, got {value}")
        need(0.0 < self.core_decay_init < 1.0, f"core_decay_init must be in (0, 1), got {self.core_decay_init}")
        need(len(self.bank_decays) == self.n_banks,
             f"bank_decays has {len(self.bank_decays)} values but n_banks={self.n_banks}")
        for decay in self.bank_decays:
            need(self.mdi_eps < decay < 1.0 - self.mdi_eps,
                 f"every bank decay must lie in (mdi_eps, 1 - mdi_eps), got {decay}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def read_head_dim(self) -> int:
        return self.d_model // self.n_read_heads

    # presets ---------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "MMRecConfig":
        """``tiny`` (tests), ``small`` (CPU demo) or ``base`` (GPU, ~125M parameters at a 32K vocabulary)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        values = dict(PRESETS[name])
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"MMRecConfig.preset: unknown fields {sorted(unknown)}")
        values.update(overrides)
        if "n_banks" in overrides and "bank_decays" not in overrides:
            values["bank_decays"] = None
        return cls(**values)

    # serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        out = dataclasses.asdict(self)
        out["bank_decays"] = list(self.bank_decays)
        return out

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "MMRecConfig":
        return cls(**checked_fields(cls, values))

    def save(self, path: str) -> None:
        save_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str) -> "MMRecConfig":
        values = load_json(path)
        try:
            return cls.from_dict(_strip_hub_keys(values))
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: not a usable MM-Rec config ({e})") from None

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the config (stored with the weights: an edited config.json is caught
        on load even where the weights' shapes cannot tell, e.g. chunk_len)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _strip_hub_keys(values: Dict[str, Any]) -> Dict[str, Any]:
    """The MMRecConfig fields of a config.json, which may be a Hugging Face one of model_type "mmrec"; a config of
    another model_type is refused."""
    if "model_type" not in values:
        return values
    if values["model_type"] != MODEL_TYPE:
        raise ValueError(f"model_type is {values['model_type']!r}, not {MODEL_TYPE!r}: a config of another "
                         f"architecture")
    fields = {k: v for k, v in values.items() if k not in HUB_KEYS}
    tie = values.get("tie_word_embeddings", fields.get("tie_embeddings", True))
    if tie != fields.get("tie_embeddings", True):
        raise ValueError(f"tie_word_embeddings={tie} contradicts tie_embeddings={fields.get('tie_embeddings', True)}")
    return fields


PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny": dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_read_heads=4, n_banks=4, n_slots=4,
                 chunk_len=8),
    "small": dict(vocab_size=8192, d_model=256, n_layers=4, n_heads=4, n_read_heads=4, n_banks=4, n_slots=8,
                  chunk_len=32),
    "base": dict(vocab_size=32000, d_model=768, n_layers=12, n_heads=12, n_read_heads=12, n_banks=4, n_slots=16,
                 chunk_len=64),
}
