"""MM-Rec language model built on mmrec_ops.

    from mmrec_model import MMRecConfig, MMRecLM
    model = MMRecLM(MMRecConfig.preset("tiny"))
    logits, state = model(ids)               # ids: [B, T]
    logits, state = model(more_ids, state)   # continue the stream
"""
from .config import PRESETS, MMRecConfig
from .model import LayerState, MMRecBlock, MMRecLM, MMRecState

__all__ = ["MMRecConfig", "MMRecLM", "MMRecState", "LayerState", "MMRecBlock", "PRESETS"]
