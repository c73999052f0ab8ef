"""Generation for any LM called as ``model(ids, state, last_only=True) -> (logits [B, T', V], state)``: one
sampler (temperature, top-k, top-p, seeded), the batched sampling loop behind ``MMRecLM.generate`` and the
benchmark baselines, and the token stream behind the chat REPL and the trainer's samples.

A recurrent model prefills the prompt in one call, then feeds one token at a time into its state: constant
time and memory per token.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn


def check_sampling(temperature, top_k, top_p, where: str = "generate") -> None:
    """Sampling settings: temperature a finite number >= 0 (0 = greedy), top_k None or an int >= 1,
    top_p None or a number in (0, 1]."""
    if isinstance(temperature, bool) or not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
                                             and temperature >= 0):
        raise ValueError(f"{where}: temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"{where}: top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not (isinstance(top_p, (int, float))
                                                              and 0.0 < top_p <= 1.0)):
        raise ValueError(f"{where}: top_p must be None or a number in (0, 1], got {top_p!r}")


def check_generate_args(max_new_tokens, temperature, top_k, top_p, generator, seed) -> None:
    """The argument checks of generate_tokens, for callers that need them before preparing a state."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    check_sampling(temperature, top_k, top_p)
    if generator is not None and seed is not None:
        raise ValueError("generate: pass generator or seed, not both")


def sample(logits: Tensor, temperature: float, top_k: Optional[int], top_p: Optional[float],
           generator: Optional[torch.Generator]) -> Tensor:
    """One token per row of logits [B, V] -> [B]. temperature 0 = greedy; top_k keeps the k largest logits;
    top_p keeps the smallest set of tokens whose probability reaches top_p (the top token always stays)."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        outside = (probs.cumsum(-1) - probs) > top_p
        sorted_logits = sorted_logits.masked_fill(outside, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _check_ids(ids, vocab_size: Optional[int]) -> Tensor:
    if not isinstance(ids, Tensor):
        try:
            ids = torch.as_tensor(ids, dtype=torch.long)
        except (TypeError, ValueError) as e:
            raise ValueError(f"generate: ids must be a [B, T] or [T] integer tensor or a rectangular list of ints "
                             f"({e})") from None
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"generate: ids must hold integers, got {ids.dtype}")
    if ids.dim() not in (1, 2) or ids.numel() == 0:
        raise ValueError(f"generate: ids must have shape [B, T] or [T] with T >= 1, got {tuple(ids.shape)}")
    if vocab_size is not None:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(f"generate: token ids must be in [0, {vocab_size}), got values in [{low}, {high}]")
    return ids


@torch.no_grad()
def generate_tokens(model: nn.Module, ids, max_new_tokens: int, temperature: float = 1.0,
                    top_k: Optional[int] = None, top_p: Optional[float] = None,
                    eos: Optional[Union[int, Iterable[int]]] = None, *, generator: Optional[torch.Generator] = None,
                    seed: Optional[int] = None, state=None, return_logits: bool = False):
    """Prefill `ids` ([B, T] or [T]) in one call, then sample `max_new_tokens` one at a time from the carried
    state. A row that emits an eos token is padded with that token afterwards; generation stops when every row
    has. Runs in eval mode and restores the mode. Returns ids [B, T + n] (and, with return_logits, the logits
    [B, n, V] the n tokens were drawn from)."""
    check_generate_args(max_new_tokens, temperature, top_k, top_p, generator, seed)
    config = getattr(model, "config", None)
    ids = _check_ids(ids, getattr(config, "vocab_size", None))
    squeeze = ids.dim() == 1
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
    model.eval()
    try:
        logits, state = model(ids, state, last_only=True)
        out, drawn = [ids], []
        done = torch.zeros(ids.shape[0], dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            step_logits = logits[:, -1].float()                             # [B, V]
            if return_logits:
                drawn.append(step_logits)
            token = sample(step_logits, temperature, top_k, top_p, generator)  # [B]
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


@torch.no_grad()
def continue_stream(model, prompt: Sequence[int], state, max_new_tokens: int, stop: Sequence[int] = (),
                    temperature: float = 0.8, top_k: Optional[int] = 40, top_p: Optional[float] = 0.95,
                    generator: Optional[torch.Generator] = None, on_token: Optional[Callable[[int], None]] = None,
                    ) -> Tuple[List[int], object]:
    """Feeds `prompt` into `state` (None: a fresh stream of one row), then samples up to `max_new_tokens`; every
    sampled token is fed back. A stop token ends the reply (it is returned and fed, not passed to on_token).
    Returns (new tokens, state after them)."""
    check_sampling(temperature, top_k, top_p)
    device = next(model.parameters()).device
    if state is None:
        state = model.init_state(1, device=device)
    if len(prompt) == 0:
        raise ValueError("continue_stream: the prompt is empty")
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    logits, state = model(ids, state, last_only=True)
    out: List[int] = []
    for _ in range(max_new_tokens):
        token = int(sample(logits[:, -1], temperature, top_k, top_p, generator)[0])
        out.append(token)
        logits, state = model(torch.tensor([[token]], device=device), state)
        if token in stop:
            break
        if on_token is not None:
            on_token(token)
    return out, state


class TextStream:
    """Decodes a growing list of token ids and hands out only the new, complete characters."""

    def __init__(self, tok, emit: Callable[[str], None]):
        self.tok, self.emit, self.ids, self.done = tok, emit, [], 0

    def push(self, token: int) -> None:
        self.ids.append(token)
        text = self.tok.decode(self.ids)
        if text.endswith("\ufffd"):          # an unfinished multi-byte character
            return
        self.emit(text[self.done:])
        self.done = len(text)

    def text(self) -> str:
        return self.tok.decode(self.ids)
