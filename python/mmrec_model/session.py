"""A conversation held as a recurrent state of constant size: each turn is fed into the state the previous
turns left behind, and every reply token is one forward step from it (the chat REPL and the trainer's chat
samples)."""
from __future__ import annotations

from typing import Callable, List, Optional

import torch

from .generate import TextStream, check_sampling, continue_stream
from .tokenizer import Tokenizer, clean_text


class ChatSession:
    def __init__(self, model, tok: Tokenizer, system: Optional[str] = None, max_new_tokens: int = 256,
                 temperature: float = 0.8, top_k: Optional[int] = 40, top_p: Optional[float] = 0.95,
                 seed: Optional[int] = None):
        check_sampling(temperature, top_k, top_p, "chat")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"chat: max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        self.model, self.tok = model, tok
        self.system = None if system is None else clean_text(system)[0]
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
        """Feeds the user's message (characters that are not valid Unicode are replaced by U+FFFD), streams
        the assistant's reply through `emit`, returns it. An interrupted reply leaves the state as it was."""
        message, _ = clean_text(message)
        turn, _ = self.tok.render_chat([{"role": "user", "content": message}], add_generation_prompt=True)
        stream = TextStream(self.tok, emit or (lambda s: None))
        tokens, self.state = continue_stream(self.model, self.pending + turn, self.state,
                                             stop=(self.tok.end_id, self.tok.eos_id), generator=self.generator,
                                             on_token=stream.push, **self.sampling)
        # a reply cut at max_new_tokens is closed with <|end|> at the start of the next turn
        self.pending = [] if tokens and tokens[-1] in (self.tok.end_id, self.tok.eos_id) else [self.tok.end_id]
        return stream.text()
