"""A tiny model trained with the default backends (C++ kernels where built) and with the reference ops
gives the same losses. Ops without a C++ kernel yet run the reference on both sides."""
import mmrec_ops
import pytest
import torch
import torch.nn.functional as F

from mmrec_model import MMRecLM

from .conftest import tiny_config

V = 97


def _train(recurrence: str, steps: int = 50, dtype: torch.dtype = torch.float64):
    torch.manual_seed(0)
    model = MMRecLM(tiny_config(recurrence=recurrence, n_layers=2)).to(dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    batch = torch.randint(0, V, (2, 17), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(steps):
        logits, _ = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_kernels_and_reference_train_alike(variant, capsys):
    kernel_ops = [op for op, where in mmrec_ops.available_backends().items() if where["cpu"] != "ref"]
    with capsys.disabled():
        print(f"\nops on C++ kernels: {kernel_ops}")
    # float64: the two runs compute the same function, so they agree to rounding. In float32 they also agree
    # (first steps equal to 1e-7), but memorising one batch amplifies rounding to ~1e-3 by step 50 (measured).
    default = _train(variant)
    with mmrec_ops.backend("ref"):
        reference = _train(variant)
    assert max(abs(a - b) for a, b in zip(default, reference)) < 1e-4
    default32 = _train(variant, steps=5, dtype=torch.float32)
    with mmrec_ops.backend("ref"):
        reference32 = _train(variant, steps=5, dtype=torch.float32)
    assert max(abs(a - b) for a, b in zip(default32, reference32)) < 1e-5
    assert default[-1] < default[0] - 0.5                                    # it learns (memorises the batch)
