"""`python -m mmrec_model.chat --checkpoint runs/NAME`: chat with a trained MM-Rec model.

The conversation is never re-read: each new turn is fed into the recurrent state the previous turns
left behind, and every reply token is one forward step from that state, so time and memory per token
are constant however long the conversation grows. Commands in the REPL: /reset (forget the
conversation), /exit. `--prompt "..."` answers one message and exits (non-interactive use).
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch

from .checkpoint import load_for_inference
from .errors import CheckpointError
from .session import ChatSession
from .tokenizer import clean_text
from .training.runtime import select_backend


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mmrec_model.chat", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
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


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind, _, index = name.partition(":")
    if name == "cpu" or (kind == "cuda" and (index == "" or index.isdigit())):
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine")
        return name
    raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.backend:
            select_backend(args.backend)
        device = _device(args.device)
        model, tok, ckpt = load_for_inference(args.checkpoint, device)
        session = ChatSession(model, tok, system=args.system, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    except (ValueError, RuntimeError, FileNotFoundError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")      # bad bytes reach clean_text, not a crash

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
        message, replaced = clean_text(message)
        if replaced:
            print("(warning: the message held bytes that are not UTF-8; they were replaced by \ufffd)",
                  file=sys.stderr)
        emit("mmrec> ")
        try:
            session.reply(message, emit)
        except KeyboardInterrupt:      # the state is left as it was before this message
            emit(" (interrupted; this exchange is forgotten)")
        emit("\n")


if __name__ == "__main__":
    sys.exit(main())
