"""Learning-rate schedule and step budget of a stage."""
from __future__ import annotations

import math

from .config import StageConfig

def lr_at(step: int, cfg: StageConfig, max_steps: int) -> float:
    """Linear warmup for warmup_steps, then cosine from lr to lr * min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, progress)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def stage_steps(cfg: StageConfig) -> int:
    steps = cfg.max_steps
    if cfg.max_tokens is not None:
        steps = min(steps, math.ceil(cfg.max_tokens / (cfg.batch_size * cfg.seq_len)))
    return max(1, steps)
