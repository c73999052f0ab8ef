"""The trainer's optimizer: AdamW over parameter groups, fused where torch has a fused kernel. Imports torch only
(no typed config), so benchmarks build the same optimizer without the trainer's dependencies."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch


def param_groups(model, weight_decay: float) -> List[Dict[str, Any]]:
    """AdamW groups: the model's own `param_groups(weight_decay)` if it has one, else weight decay on the
    matrices (dim >= 2) and none on vectors."""
    if hasattr(model, "param_groups"):
        return model.param_groups(weight_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def adamw(model, lr: float, weight_decay: float, betas: Tuple[float, float] = (0.9, 0.999),
          eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW over param_groups(model). Fused (one kernel over all parameters) when every parameter is a floating
    CPU or CUDA tensor: on the 2-core CPU its step over the 163M-parameter original-size model takes 0.20-0.28 s
    against 1.0-1.5 s for the default foreach path (same run)."""
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in model.parameters())
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=fused)


def own_gradients(params) -> None:
    """Gradients as tensors of their own. Under CUDA graphs (torch.compile mode="reduce-overhead") the first
    backward of an optimizer step leaves each .grad as an output of the backward graph, which its next replay
    overwrites: with gradient accumulation, call this after the first micro-batch's backward, so that the later
    ones add into copies (torch issue 169545)."""
    for p in params:
        if p.grad is not None:
            p.grad = p.grad.clone()
