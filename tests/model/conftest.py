import pytest
import torch

from mmrec_model import MMRecConfig, MMRecLM

VARIANTS = ("nonlinear", "linear")


def tiny_config(**overrides) -> MMRecConfig:
    """A model small enough for the reference ops (Python loops over time): D=32, 2 layers, C=8."""
    values = dict(vocab_size=97, d_model=32, n_layers=2, n_heads=2, n_read_heads=4, n_banks=3, n_slots=4,
                  chunk_len=8)
    values.update(overrides)
    return MMRecConfig.preset("tiny", **values)


def tiny_model(seed: int = 0, dtype=torch.float32, **overrides) -> MMRecLM:
    torch.manual_seed(seed)
    return MMRecLM(tiny_config(**overrides)).to(dtype).eval()


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out - ref).abs().max() / ref.abs().max()).item()


@pytest.fixture(params=VARIANTS)
def variant(request):
    return request.param
