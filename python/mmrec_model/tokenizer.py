"""Byte-level BPE tokenizer, chat template and instruction template.

The tokenizer is trained with the `tokenizers` library on the pre-training text and saved as
`tokenizer.json` next to every checkpoint. Control tokens are never parsed out of text: a user who
types "<|end|>" gets the characters, not the token (``encode_special_tokens = True``); templates
insert control tokens by id.

Chat template (one token per control marker, no extra whitespace):

    <|system|>{system}<|end|><|user|>{user}<|end|><|assistant|>{reply}<|end|><|user|>...

Instruction template: one user turn holding the instruction (and the input after a blank line and
"Input:"), then the assistant's response. Every rendered example comes with a mask over its tokens:
1 where the token is a training target (assistant content and its closing <|end|>), 0 elsewhere.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .errors import CheckpointError

EOS = "<|endoftext|>"
PAD = "<|pad|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END = "<|end|>"
SPECIAL_TOKENS = (EOS, PAD, SYSTEM, USER, ASSISTANT, END)   # ids 0..5 in this order
ROLES = ("system", "user", "assistant")

PathLike = Union[str, os.PathLike]


def _tokenizers():
    try:
        import tokenizers
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("mmrec_model.tokenizer needs the `tokenizers` package (pip install tokenizers)") from e
    return tokenizers


def clean_text(text: str) -> Tuple[str, bool]:
    """(text as valid Unicode, whether anything was replaced): bytes that were not UTF-8 (read with Python's
    surrogateescape, as stdin does) and lone surrogates become U+FFFD."""
    try:
        text.encode("utf-8")
        return text, False
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace"), True


class Tokenizer:
    """A byte-level BPE tokenizer with the MM-Rec control tokens and templates."""

    def __init__(self, backend):
        self._tk = backend
        self._tk.encode_special_tokens = True
        ids = [self._tk.token_to_id(t) for t in SPECIAL_TOKENS]
        if any(i is None for i in ids):
            missing = [t for t, i in zip(SPECIAL_TOKENS, ids) if i is None]
            raise ValueError(f"tokenizer lacks the control tokens {missing}")
        self.eos_id, self.pad_id, self.system_id, self.user_id, self.assistant_id, self.end_id = ids
        self.role_ids = {"system": self.system_id, "user": self.user_id, "assistant": self.assistant_id}
        self.special_ids = frozenset(ids)

    # construction / persistence
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> "Tokenizer":
        """Trains a byte-level BPE with `vocab_size` entries (control tokens and 256 bytes included)."""
        if vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (256 bytes + control tokens), "
                             f"got {vocab_size}")
        tk = _tokenizers()
        backend = tk.Tokenizer(tk.models.BPE())
        backend.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                         special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                         initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
        backend.train_from_iterator(texts, trainer=trainer)
        return cls(backend)

    @classmethod
    def load(cls, path: PathLike) -> "Tokenizer":
        """Loads `path` (a tokenizer.json, or a directory holding one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer at {path}")
        try:
            backend = _tokenizers().Tokenizer.from_file(str(path))
            return cls(backend)
        except Exception as e:
            raise CheckpointError(f"{path}: not a usable tokenizer ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None

    def save(self, path: PathLike) -> Path:
        """Writes tokenizer.json to `path` (a file name, or a directory)."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path.mkdir(parents=True, exist_ok=True)
            path = path / "tokenizer.json"
        self._tk.save(str(path))
        return path

    def to_str(self) -> str:
        return self._tk.to_str()

    @property
    def vocab_size(self) -> int:
        return self._tk.get_vocab_size()

    # plain text
    def encode(self, text: str) -> List[int]:
        return self._tk.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> List[List[int]]:
        return [e.ids for e in self._tk.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        return self._tk.decode([int(i) for i in ids], skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> Optional[int]:
        return self._tk.token_to_id(token)

    # templates
    def render_chat(self, messages: Sequence[Dict[str, str]], add_generation_prompt: bool = False,
                    ) -> Tuple[List[int], List[int]]:
        """(ids, mask) of a conversation; mask is 1 on assistant content tokens and their <|end|>.

        With `add_generation_prompt`, the ids end with <|assistant|> (the prompt for a reply).
        """
        ids: List[int] = []
        mask: List[int] = []
        for i, message in enumerate(messages):
            role, content = message["role"], message["content"]
            if role not in self.role_ids:
                raise ValueError(f"messages[{i}]: unknown role {role!r}; expected one of {ROLES}")
            body = self.encode(content) + [self.end_id]
            learned = 1 if role == "assistant" else 0
            ids += [self.role_ids[role]] + body
            mask += [0] + [learned] * len(body)
        if add_generation_prompt:
            ids.append(self.assistant_id)
            mask.append(0)
        return ids, mask

    @staticmethod
    def instruction_prompt(instruction: str, input: str = "") -> str:
        """The user-turn text of the instruction template."""
        return f"{instruction}\n\nInput:\n{input}" if input else instruction

    def render_instruction(self, instruction: str, input: str = "", output: Optional[str] = None,
                           ) -> Tuple[List[int], List[int]]:
        """(ids, mask) of an Alpaca-style record; mask is 1 on the response tokens and their <|end|>.

        Without `output`, the ids end with <|assistant|> (the prompt for a response).
        """
        messages = [{"role": "user", "content": self.instruction_prompt(instruction, input)}]
        if output is None:
            return self.render_chat(messages, add_generation_prompt=True)
        return self.render_chat(messages + [{"role": "assistant", "content": output}])
