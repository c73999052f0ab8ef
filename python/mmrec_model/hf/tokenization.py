"""The MM-Rec tokenizer as a transformers PreTrainedTokenizerFast: tokenizer.json plus a tokenizer_config.json
with the control tokens and the chat template (Jinja), so AutoTokenizer.from_pretrained loads it and
apply_chat_template gives the ids of Tokenizer.render_chat.

One difference from mmrec_model.tokenizer.Tokenizer: a Jinja template yields text, so the control tokens must be
parsed out of text here ("<|end|>" typed inside a message becomes the control token); Tokenizer.render_chat
inserts them by id and keeps typed markers as characters.
"""
from __future__ import annotations

import json
import os
from typing import Union

from transformers import PreTrainedTokenizerFast

from ..tokenizer import ASSISTANT, END, EOS, PAD, ROLES, SYSTEM, USER, Tokenizer

# Tokenizer.render_chat: <|role|>content<|end|> per message, then <|assistant|> for a generation prompt
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in " + repr(list(ROLES)) + " -%}"
    "{{- raise_exception('unknown role ' ~ message['role'] ~ '; expected one of " + ", ".join(ROLES) + "') -}}"
    "{%- endif -%}"
    "{{- '<|' ~ message['role'] ~ '|>' ~ message['content'] ~ '" + END + "' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '" + ASSISTANT + "' -}}{%- endif -%}"
)


def to_hf_tokenizer(tok: Tokenizer, model_max_length: int = 1 << 30) -> PreTrainedTokenizerFast:
    """A PreTrainedTokenizerFast over the same BPE (vocabulary, merges, control tokens)."""
    from tokenizers import Tokenizer as Backend
    backend = Backend.from_str(tok.to_str())
    backend.encode_special_tokens = False          # the chat template's text carries the control tokens
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS, pad_token=PAD,
                                   extra_special_tokens=[SYSTEM, USER, ASSISTANT, END], chat_template=CHAT_TEMPLATE,
                                   model_max_length=model_max_length, clean_up_tokenization_spaces=False)


def save_hf_tokenizer(tok: Tokenizer, directory: Union[str, os.PathLike]) -> None:
    """Writes tokenizer.json and tokenizer_config.json (control tokens, chat_template) into `directory`. The
    template stays inside tokenizer_config.json and the class is named PreTrainedTokenizerFast, which transformers
    4.x reads as well."""
    to_hf_tokenizer(tok).save_pretrained(str(directory), save_jinja_files=False)
    path = os.path.join(str(directory), "tokenizer_config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
