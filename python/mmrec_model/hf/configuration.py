"""MMRecHFConfig: the MMRecConfig fields as a transformers config (model_type "mmrec").

Its config.json holds every MMRecConfig field at the top level plus the hub's bookkeeping keys (model_type,
architectures, auto_map, transformers_version, dtype); MMRecConfig.load accepts exactly those extra keys, so
MMRecLM.from_pretrained and AutoModelForCausalLM.from_pretrained read the same folder.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict

from transformers import PretrainedConfig

from ..config import MMRecConfig

MODEL_TYPE = "mmrec"
FIELDS = tuple(f.name for f in dataclasses.fields(MMRecConfig))


class MMRecHFConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, **kwargs: Any):
        values = {name: kwargs.pop(name) for name in FIELDS if name in kwargs}
        # an MMRecConfig fills the derived defaults (d_ffn, bank_decays) and validates every field
        mmrec = MMRecConfig(**values)
        for name, value in mmrec.to_dict().items():
            setattr(self, name, value)
        tie = kwargs.pop("tie_word_embeddings", mmrec.tie_embeddings)
        if tie != mmrec.tie_embeddings:
            raise ValueError(f"MMRecHFConfig: tie_word_embeddings={tie} contradicts tie_embeddings="
                             f"{mmrec.tie_embeddings}")
        super().__init__(tie_word_embeddings=mmrec.tie_embeddings, **kwargs)

    # the names transformers' generic code (lm-eval, generate) looks for
    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers

    def to_mmrec(self) -> MMRecConfig:
        return MMRecConfig.from_dict({name: getattr(self, name) for name in FIELDS})

    @classmethod
    def from_mmrec(cls, config: MMRecConfig, **kwargs: Any) -> "MMRecHFConfig":
        return cls(**config.to_dict(), **kwargs)

    def mmrec_dict(self) -> Dict[str, Any]:
        return self.to_mmrec().to_dict()
