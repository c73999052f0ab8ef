"""`python -m mmrec_model.chat --checkpoint runs/NAME`: chat with a trained MM-Rec model.

The conversation is never re-read: each new turn is fed into the recurrent state the previous turns
left behind, and every reply token is one forward step from that state, so time and memory per token
are constant however long the conversation grows. Commands in the REPL: /reset (forget the
conversation), /exit. `--prompt "..."` answers one message and exits (non-interactive use).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from .tokenizer import Tokenizer

STAGE_ORDER = ("chat", "instruct", "pretrain")


def resolve_checkpoint(path) -> Path:
    """A directory with config.json + model.safetensors: `path` itself, or the newest stage output of a run."""
    from .checkpoint import latest_checkpoint
    path = Path(path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return path
    for stage in STAGE_ORDER:
        if (path / stage / "final" / "config.json").is_file():
            return path / stage / "final"
    for stage in STAGE_ORDER:
        latest = latest_checkpoint(path / stage)
        if latest is not None:
            return latest
    raise FileNotFoundError(f"no model checkpoint in {path} (expected a run directory or a checkpoint directory)")


def load(path, device: str = "cpu"):
    """(model, tokenizer, checkpoint directory) for `path` (see resolve_checkpoint)."""
    from . import MMRecLM
    ckpt = resolve_checkpoint(path)
    tokenizer_path = ckpt / "tokenizer.json"
    if not tokenizer_path.is_file():
        tokenizer_path = ckpt.parent.parent / "tokenizer.json"
    tok = Tokenizer.load(tokenizer_path)
    model = MMRecLM.from_pretrained(ckpt, device=device)
    model.eval()
    return model, tok, ckpt


def sample_next(logits: torch.Tensor, temperature: float, top_k: Optional[int], top_p: Optional[float],
                generator: Optional[torch.Generator]) -> int:
    """One token id from logits [V] (temperature 0 = greedy)."""
    logits = logits.float()
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        drop = (probs.cumsum(-1) - probs) > top_p
        logits = logits.scatter(0, order[drop], float("-inf"))
    return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))


class TextStream:
    """Decodes a growing list of token ids and hands out only the new, complete characters."""

    def __init__(self, tok: Tokenizer, emit: Callable[[str], None]):
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


@torch.no_grad()
def continue_stream(model, prompt: Sequence[int], state, max_new_tokens: int, stop: Sequence[int] = (),
                    temperature: float = 0.8, top_k: Optional[int] = 40, top_p: Optional[float] = 0.95,
                    generator: Optional[torch.Generator] = None, on_token: Optional[Callable[[int], None]] = None,
                    ) -> Tuple[List[int], object]:
    """Feeds `prompt` into `state`, then samples up to `max_new_tokens`; every sampled token is fed back.

    Returns (new tokens, state after them). A stop token ends the reply (it is returned and fed).
    """
    device = next(model.parameters()).device
    if state is None:
        state = model.init_state(1, device=device)
    ids = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    logits, state = model(ids, state, last_only=True)
    out: List[int] = []
    for _ in range(max_new_tokens):
        token = sample_next(logits[0, -1], temperature, top_k, top_p, generator)
        out.append(token)
        logits, state = model(torch.tensor([[token]], device=device), state)
        if token in stop:
            break
        if on_token is not None:
            on_token(token)
    return out, state


class ChatSession:
    """A conversation held as a recurrent state (constant size)."""

    def __init__(self, model, tok: Tokenizer, system: Optional[str] = None, max_new_tokens: int = 256,
                 temperature: float = 0.8, top_k: Optional[int] = 40, top_p: Optional[float] = 0.95,
                 seed: Optional[int] = None):
        self.model, self.tok, self.system = model, tok, system
        self.sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)
        device = next(model.parameters()).device
        self.generator = torch.Generator(device=device)
        if seed is not None:
            self.generator.manual_seed(seed)
        self.reset()

    def reset(self) -> None:
        self.state = None
        self.pending: List[int] = []
        if self.system:
            self.pending, _ = self.tok.render_chat([{"role": "system", "content": self.system}])

    def reply(self, message: str, emit: Optional[Callable[[str], None]] = None) -> str:
        """Feeds the user's message, streams the assistant's reply through `emit`, returns it."""
        turn, _ = self.tok.render_chat([{"role": "user", "content": message}], add_generation_prompt=True)
        stream = TextStream(self.tok, emit or (lambda s: None))
        tokens, self.state = continue_stream(self.model, self.pending + turn, self.state,
                                             stop=(self.tok.end_id, self.tok.eos_id), generator=self.generator,
                                             on_token=stream.push, **self.sampling)
        # a reply cut at max_new_tokens is closed with <|end|> at the start of the next turn
        self.pending = [] if tokens and tokens[-1] in (self.tok.end_id, self.tok.eos_id) else [self.tok.end_id]
        return stream.text()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mmrec_model.chat", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="a run directory (runs/NAME) or a checkpoint directory")
    p.add_argument("--prompt", action="append", help="answer this message and exit (repeat for a multi-turn script)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default=None, help="force an mmrec_ops backend (ref, cpu, cuda, triton)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.backend:
        from .train import select_backend
        select_backend(args.backend)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if args.device == "auto" else args.device)
    try:
        model, tok, ckpt = load(args.checkpoint, device)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    session = ChatSession(model, tok, system=args.system, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)

    def emit(s: str) -> None:
        sys.stdout.write(s)
        sys.stdout.flush()

    if args.prompt:
        for message in args.prompt:
            session.reply(message, emit)
            emit("\n")
        return 0
    print(f"MM-Rec chat ({ckpt}). /reset forgets the conversation, /exit quits.")
    while True:
        try:
            message = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        command = message.strip()
        if command in ("/exit", "/quit"):
            return 0
        if command == "/reset":
            session.reset()
            print("(conversation reset)")
            continue
        if not command:
            continue
        emit("mmrec> ")
        try:
            session.reply(message, emit)
        except KeyboardInterrupt:      # the state is left as it was before this message
            emit(" (interrupted; this exchange is forgotten)")
        emit("\n")


if __name__ == "__main__":
    sys.exit(main())
