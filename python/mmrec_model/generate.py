"""Generation for any LM called as ``model(ids, state, last_only=True) -> (logits [B, T', V], state)``: one
sampler (temperature, top-k, top-p, seeded), the batched sampling loop behind ``MMRecLM.generate`` and the
benchmark baselines, and the token stream behind the chat REPL and the trainer's samples.

A recurrent model prefills the prompt in one call, then feeds one token at a time into its state: constant
time and memory per token. A model with a one-token step (``model.decode_state``: MMRecLM) decodes through
decode.py's plain-torch step on preallocated buffers (on CUDA a captured graph, decode_cuda.py); other models
(the benchmark baselines) through ``model(token[:, None], state)``.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .decode import DecodeState, step


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
    # an exponential race, argmax(p / E) with E ~ Exp(1), draws from p like torch.multinomial, without
    # multinomial's device-to-host synchronisation (so it runs inside a CUDA graph); tokens of probability 0
    # stay out even where E is 0
    race = probs / torch.empty_like(probs).exponential_(generator=generator)
    return torch.where(probs > 0, race, torch.zeros_like(race)).argmax(-1)


def _check_ids(ids, vocab_size: Optional[int]) -> Tensor:
    if not isinstance(ids, Tensor):
        try:
            ids = torch.as_tensor(ids, dtype=torch.long)
        except (TypeError, ValueError) as e:
            raise ValueError(f"generate: ids must be a [B, T] or [T] integer tensor or a list of int lists "
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


def _is_ragged(ids) -> bool:
    """A list (or tuple) of per-row id sequences that are not all of one length."""
    if isinstance(ids, Tensor) or not isinstance(ids, (list, tuple)) or not ids:
        return False
    if not all(isinstance(row, (list, tuple, Tensor)) for row in ids):
        return False
    return len({len(row) for row in ids}) > 1


def _eos_list(eos) -> List[int]:
    if eos is None:
        return []
    values = [eos] if isinstance(eos, int) else list(eos)
    if not all(isinstance(e, int) and not isinstance(e, bool) for e in values):
        raise TypeError(f"generate: eos must be an int or a list of ints, got {eos!r}")
    return values


class _Rows:
    """Host-side bookkeeping of B generated rows: the kept tokens (up to and including the one that finished
    the row), eos tokens and stop strings, and the streaming callback on_token(row, token) (every kept token
    except eos tokens)."""

    def __init__(self, B: int, eos: Sequence[int], stop_strings: Sequence[str], decode, on_token):
        if stop_strings and decode is None:
            raise ValueError("generate: stop_strings need decode (a tokenizer or a callable ids -> str)")
        self.decode = getattr(decode, "decode", decode)
        self.tokens: List[List[int]] = [[] for _ in range(B)]
        self.done = [False] * B
        self.eos, self.stop_strings, self.on_token = set(eos), list(stop_strings or ()), on_token
        self.window = max((len(s) for s in self.stop_strings), default=0) + 4   # tokens: each decodes to >= 1 char
        self.stopped: List[int] = []                                               # rows a stop string finished

    def push(self, column: Sequence[int]) -> bool:
        """One new token per row; returns True when every row is finished."""
        for r, t in enumerate(column):
            if self.done[r]:
                continue
            self.tokens[r].append(t)
            if t in self.eos:
                self.done[r] = True
                continue
            if self.on_token is not None:
                self.on_token(r, t)
            if self.stop_strings:
                tail = self.decode(self.tokens[r][-self.window:])
                if any(s in tail for s in self.stop_strings):
                    self.done[r] = True
                    self.stopped.append(r)
        return all(self.done)

    def take_stopped(self) -> List[int]:
        rows, self.stopped = self.stopped, []
        return rows


def prefill(model, prompts: Sequence[Tensor], state=None) -> Tuple[DecodeState, Tensor]:
    """Feeds each row's own prompt (1-D tensors, lengths may differ) into a DecodeState: rows of one length in
    one forward call, so no padding reaches a state. state: None or an MMRecState of len(prompts) rows to
    continue. Returns the DecodeState and the logits [B, V] after each row's last prompt token."""
    B = len(prompts)
    device = next(model.parameters()).device
    ds = DecodeState(model, B, device)
    groups: Dict[int, List[int]] = {}
    for r, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(r)
    logits = None
    for rows in groups.values():
        ids = torch.stack([prompts[r] for r in rows]).to(device)                   # [rows, T]
        sub = None if state is None else (state if len(rows) == B else state.select(rows))
        out, new = model(ids, sub, last_only=True)                                  # [rows, 1, V]
        if logits is None:
            logits = out.new_empty(B, out.shape[-1])
        logits[rows] = out[:, -1]
        ds.load(new, rows)
    return ds, logits


def decode_rows(ds: DecodeState, logits: Tensor, prev: Tensor, max_new_tokens: int, temperature: float,
                top_k: Optional[int], top_p: Optional[float], generator: Optional[torch.Generator], rows: _Rows,
                *, feed_last: bool = False, return_logits: bool = False, cuda_graph: Optional[bool] = None,
                check_every: int = 8) -> List[Tensor]:
    """The decode loop after prefill: sample from logits [B, V], hand the column to `rows`, step `ds`. A finished
    row keeps being fed its last token (rows stay in the batch; their output is cut at the finish). feed_last:
    step the state with the last sampled token too (a carried conversation). On CUDA (cuda_graph None or True)
    the loop runs as CUDA-graph replays, the host checking stop conditions every `check_every` tokens;
    cuda_graph="compiled" captures the step compiled by torch.compile (fewer kernels; compiles on first use).
    Returns the logits drawn from (return_logits) or []."""
    def draw(lg: Tensor, gen) -> Tensor:
        return sample(lg, temperature, top_k, top_p, gen)

    if cuda_graph not in (None, True, False, "compiled"):
        raise ValueError(f"generate: cuda_graph must be None, True, False or 'compiled', got {cuda_graph!r}")
    use_graph = ds.device.type == "cuda" if cuda_graph is None else bool(cuda_graph)
    if use_graph and not return_logits and max_new_tokens > 0:
        from .decode_cuda import GraphDecoder                                           # CUDA only
        eos = torch.tensor(sorted(rows.eos), device=ds.device, dtype=torch.long) if rows.eos else None
        dec = GraphDecoder(ds, logits, prev, max_new_tokens, draw, generator, eos, compiled=cuda_graph == "compiled")
        dec.run(max_new_tokens, rows.push, rows.take_stopped, check_every)          # each replay feeds its token
        return []
    drawn: List[Tensor] = []
    done = torch.zeros(ds.batch_size, dtype=torch.bool, device=ds.device)
    for i in range(max_new_tokens):
        lg = logits.float()                                                             # [B, V]
        if return_logits:
            drawn.append(lg)
        token = draw(lg, generator)                                                     # [B]
        if any(rows.done):
            token = torch.where(done, prev, token)
        finished = rows.push(token.tolist())
        if any(rows.done):
            done = torch.tensor(rows.done, device=ds.device)
        prev = token
        if (finished or i == max_new_tokens - 1) and not feed_last:
            break
        logits = step(ds, token)
        if finished:
            break
    return drawn


@torch.no_grad()
def generate_tokens(model: nn.Module, ids, max_new_tokens: int, temperature: float = 1.0,
                    top_k: Optional[int] = None, top_p: Optional[float] = None,
                    eos: Optional[Union[int, Iterable[int]]] = None, *, generator: Optional[torch.Generator] = None,
                    seed: Optional[int] = None, state=None, return_logits: bool = False,
                    stop_strings: Optional[Sequence[str]] = None, decode=None,
                    on_token: Optional[Callable[[int, int], None]] = None, cuda_graph: Optional[bool] = None):
    """Prefill `ids` ([B, T] or [T], or a list of B id lists of different lengths), then sample
    `max_new_tokens` one at a time from the carried state. A row finishes on an eos token or when its text
    (decode: a tokenizer or ids -> str) contains one of `stop_strings`; generation stops when every row has.
    on_token(row, token) streams each kept token (eos tokens excepted). Runs in eval mode and restores the mode.
    Returns ids [B, T + n], a finished row padded with its last token (and, with return_logits, the logits
    [B, n, V] the n tokens were drawn from); for ragged prompts a list of B 1-D tensors (prompt + kept tokens)."""
    check_generate_args(max_new_tokens, temperature, top_k, top_p, generator, seed)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    ragged = _is_ragged(ids)
    prompts = [_check_ids(row, vocab) for row in ids] if ragged else None
    if not ragged:
        ids = _check_ids(ids, vocab)
    squeeze = not ragged and ids.dim() == 1
    if squeeze:
        ids = ids.unsqueeze(0)
    if prompts is None:
        prompts = list(ids)
    if any(p.dim() != 1 for p in prompts):
        raise ValueError("generate: each row of a ragged batch must be a flat list of ids")
    eos_ids = _eos_list(eos)
    device = next(model.parameters()).device
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    stepping = callable(getattr(model, "decode_state", None))
    if not stepping and (ragged or stop_strings or on_token is not None):
        raise ValueError(f"generate: ragged prompts, stop_strings and on_token need a model with a one-token "
                         f"step (MMRecLM); {type(model).__name__} has none")

    was_training = model.training
    model.eval()
    try:
        if not stepping:
            return _generate_forward(model, ids.to(device), max_new_tokens, temperature, top_k, top_p, eos_ids,
                                     generator, state, return_logits, squeeze)
        rows = _Rows(len(prompts), eos_ids, stop_strings or (), decode, on_token)
        ds, logits = prefill(model, prompts, state)
        prev = torch.stack([p[-1] for p in prompts]).to(device=device, dtype=torch.long)
        drawn = decode_rows(ds, logits, prev, max_new_tokens, temperature, top_k, top_p, generator, rows,
                            return_logits=return_logits, cuda_graph=cuda_graph)
    finally:
        model.train(was_training)
    if ragged:
        return [torch.cat([p.to(device), torch.tensor(t, dtype=p.dtype, device=device)]) for p, t in
                zip(prompts, rows.tokens)]
    n = max(len(t) for t in rows.tokens)
    new = torch.tensor([t + [t[-1]] * (n - len(t)) if t else [] for t in rows.tokens], dtype=ids.dtype,
                       device=device).view(len(prompts), n)
    result = torch.cat([ids.to(device), new], 1)
    if squeeze:
        result = result[0]
    if return_logits:
        V = logits.shape[-1]
        return result, (torch.stack(drawn[:n], 1) if n else torch.empty(len(prompts), 0, V, device=device))
    return result


def _generate_forward(model, ids: Tensor, max_new_tokens, temperature, top_k, top_p, eos_ids: List[int],
                      generator, state, return_logits, squeeze):
    """The loop for models without a one-token step (the benchmark baselines): model(token[:, None], state)."""
    device = ids.device
    eos_t = torch.tensor(eos_ids, device=device, dtype=torch.long) if eos_ids else None
    logits, state = model(ids, state, last_only=True)
    out, drawn = [ids], []
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=device)
    for i in range(max_new_tokens):
        step_logits = logits[:, -1].float()                                             # [B, V]
        if return_logits:
            drawn.append(step_logits)
        token = sample(step_logits, temperature, top_k, top_p, generator)               # [B]
        if eos_t is not None:
            token = torch.where(done, out[-1][:, -1], token)
            done = done | torch.isin(token, eos_t)
        out.append(token[:, None].to(ids.dtype))
        if (eos_t is not None and bool(done.all())) or i == max_new_tokens - 1:
            break
        logits, state = model(out[-1], state)
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
                    cuda_graph: Optional[bool] = None) -> Tuple[List[int], object]:
    """Feeds `prompt` into `state` (None: a fresh stream of one row), then samples up to `max_new_tokens`
    through the one-token step; every sampled token is fed back. A stop token ends the reply (it is returned and
    fed, not passed to on_token). Returns (new tokens, the MMRecState after them)."""
    check_sampling(temperature, top_k, top_p)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"continue_stream: max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if len(prompt) == 0:
        raise ValueError("continue_stream: the prompt is empty")
    ids = _check_ids(list(prompt), getattr(getattr(model, "config", None), "vocab_size", None))
    if not callable(getattr(model, "decode_state", None)):
        return _continue_forward(model, ids, state, max_new_tokens, stop, temperature, top_k, top_p, generator,
                                 on_token)
    rows = _Rows(1, [int(t) for t in stop], (), None, None if on_token is None else (lambda r, t: on_token(t)))
    ds, logits = prefill(model, [ids], state)
    prev = ids[-1:].to(ds.device)
    decode_rows(ds, logits, prev, max_new_tokens, temperature, top_k, top_p, generator, rows,
                feed_last=True, cuda_graph=cuda_graph, check_every=1)
    return rows.tokens[0], ds.export()


def _continue_forward(model, ids: Tensor, state, max_new_tokens, stop, temperature, top_k, top_p, generator,
                      on_token) -> Tuple[List[int], object]:
    """continue_stream for models without a one-token step (the benchmark baselines)."""
    device = next(model.parameters()).device
    if state is None:
        state = model.init_state(1, device=device)
    logits, state = model(ids[None].to(device), state, last_only=True)
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
